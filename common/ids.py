"""Database ids from text that people and clients send (forms, query strings).

``str.isdigit`` is not the test: it is true for "²" and other characters
``int()`` refuses, and a digit string can overflow a bigint column, which
Postgres and SQLite answer with an error rather than "no such row".
"""

from __future__ import annotations

import re

MAX_ID = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")


def parse_id(raw: object) -> int | None:
    """A positive id (ASCII digits, within a bigint) from ``raw``, or None for anything else."""
    if not isinstance(raw, str) or _DIGITS.fullmatch(raw) is None:
        return None
    value = int(raw)
    return value if 0 < value <= MAX_ID else None
