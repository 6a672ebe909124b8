"""A scanner for plaintext at rest: looks for sentinel strings in every place data can land.

The scanner itself lives in ``chaos/exposure.py`` (the whole-demo exposure scan
uses it too); these are the names the custody and training tests import.
"""

from __future__ import annotations

from chaos.exposure import places_to_scan, scan_database, scan_files

__all__ = ["places_to_scan", "scan_database", "scan_files"]
