"""Downloads of tabular data: CSV that spreadsheets cannot execute, and JSON Lines.

A cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return is read as a formula by Excel, LibreOffice and Google Sheets
("CSV injection"): :func:`csv_safe` prefixes such text with an apostrophe,
which those programs show as text. Real numbers (``int``, ``Decimal``,
finite ``float``) stay numbers, negative ones included, since they carry
no formula. Both responses stream, so an export of a long audit log never
sits in memory whole.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.http import StreamingHttpResponse

_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_FILENAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_FILENAME_LIMIT = 120


def csv_safe(value: Any) -> str:
    """Render ``value`` as a CSV cell that no spreadsheet evaluates as a formula.

    ``None`` is empty; booleans are ``true``/``false``; ``int``, ``Decimal`` and
    finite ``float`` values are written as numbers (a minus sign included);
    datetimes as ISO 8601; anything else as text, with an apostrophe in front
    when it starts with ``= + - @``, a tab or a carriage return.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal) and value.is_finite():
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        return repr(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    text = str(value)
    if text.startswith(_FORMULA_STARTS):
        return "'" + text
    return text


def safe_filename(filename: str, *, default: str = "export") -> str:
    """``filename`` reduced to letters, digits, dots, dashes and underscores (never empty, never hidden)."""
    cleaned = _FILENAME_UNSAFE.sub("_", filename).strip("._")[:_FILENAME_LIMIT]
    return cleaned or default


class _Echo:
    """A file-like object whose ``write`` returns what it was given (for csv.writer)."""

    def write(self, value: str) -> str:
        return value


def _csv_lines(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[str]:
    writer = csv.writer(_Echo(), lineterminator="\r\n")
    yield writer.writerow([csv_safe(cell) for cell in header])
    for row in rows:
        yield writer.writerow([csv_safe(cell) for cell in row])


def _attachment(response: StreamingHttpResponse, filename: str) -> StreamingHttpResponse:
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "no-store"
    return response


def csv_response(*, filename: str, header: list[str], rows: Iterable[Sequence[Any]]) -> StreamingHttpResponse:
    """Stream ``header`` and ``rows`` as a CSV attachment, every cell through :func:`csv_safe`."""
    name = safe_filename(filename)
    if not name.lower().endswith(".csv"):
        name += ".csv"
    response = StreamingHttpResponse(_csv_lines(header, rows), content_type="text/csv; charset=utf-8")
    return _attachment(response, name)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | UUID):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _jsonl_lines(objects: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    for obj in objects:
        yield json.dumps(obj, default=_json_default, ensure_ascii=False, separators=(",", ":")) + "\n"


def jsonl_response(*, filename: str, objects: Iterable[Mapping[str, Any]]) -> StreamingHttpResponse:
    """Stream ``objects`` as a JSON Lines attachment (datetimes ISO 8601, Decimals and UUIDs as strings)."""
    name = safe_filename(filename)
    if not name.lower().endswith(".jsonl"):
        name += ".jsonl"
    response = StreamingHttpResponse(
        _jsonl_lines(objects), content_type="application/x-ndjson; charset=utf-8"
    )
    return _attachment(response, name)
