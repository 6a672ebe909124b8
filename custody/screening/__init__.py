"""Screening of a contributed corpus: duplicates, garbage, over-long records, trigger sequences.

A pure library (no database, no Django): the ingest pipeline feeds it records chunk by
chunk and stores the findings. See ``docs/screening.md``.
"""

from custody.screening.screener import Screener
from custody.screening.table import ScreeningStateError
from custody.screening.types import Finding, FindingKind, ScreeningConfig

__all__ = ["Finding", "FindingKind", "Screener", "ScreeningConfig", "ScreeningStateError"]
