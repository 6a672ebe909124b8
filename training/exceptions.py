"""Training's domain errors; codes are ``training.*``."""

from __future__ import annotations

from common.exceptions import Conflict, Invalid, NotFound, NotPermitted, TooLarge, UnsupportedFormat

__all__ = ["Conflict", "Invalid", "NotFound", "NotPermitted", "TooLarge", "UnsupportedFormat"]
