"""CSV (and TSV / semicolon-separated): a header row, then one record per row.

Rows are numbered as a spreadsheet shows them: the header is row 1, so the
first record is row 2; the location adds the line when a quoted cell spanning
lines (or a blank line) makes them differ. Cells are kept verbatim, including
ones that look like spreadsheet formulas (``=``, ``+``, ``-``, ``@``): exports
neutralize those, the parser does not alter custody text.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from itertools import chain

from custody.parsing.records import (
    FILE_POINTER,
    FieldSpec,
    JSONValue,
    Limits,
    ParsedRecord,
    parse_failure,
    quote,
    record_pointer,
    record_too_large,
)
from custody.parsing.streams import BadEncoding, Line, LineTooLong, encoding_failure, line_too_long

DELIMITERS = (",", "\t", ";")
MAX_COLUMNS_SHOWN = 20


class _RowTooLong(Exception):
    pass


class _RowSource:
    """Feed csv.reader one line at a time, counting the characters of the row being read."""

    def __init__(self, lines: Iterator[Line], max_chars: int) -> None:
        self._lines = lines
        self._max_chars = max_chars
        self.chars = -1

    def __iter__(self) -> Iterator[str]:
        for line in self._lines:
            self.chars += 1 + len(line.text)
            if self.chars > self._max_chars:
                raise _RowTooLong
            yield line.text + "\n"

    def next_row(self) -> None:
        self.chars = -1


def read_csv(lines: Iterator[Line], fields: FieldSpec, limits: Limits) -> Iterator[ParsedRecord]:
    """Yield one record per non-blank row after the header; declared fields must be columns.

    :raises ParseFailure: a missing or repeated column, a ragged row, malformed quoting.
    """
    # The csv module's limit is process-wide; our own row check is the real bound.
    csv.field_size_limit(max(csv.field_size_limit(), limits.max_record_chars))
    try:
        head, header_text = _leading_lines(lines)
    except BadEncoding as exc:
        raise encoding_failure(exc, pointer=FILE_POINTER) from None
    except LineTooLong as exc:
        raise line_too_long(exc, pointer=FILE_POINTER, limit=limits.max_record_chars) from None
    if header_text is None:
        return
    source = _RowSource(chain(head, lines), limits.max_record_chars)
    reader = csv.reader(source, delimiter=_sniff_delimiter(header_text, fields.all_fields), strict=True)
    row_number, width, columns = _read_header(reader, source, fields)
    index = 0
    while True:
        first_line = reader.line_num + 1
        row_number += 1
        where = f"row {row_number}" + (f" (line {first_line})" if first_line != row_number else "")
        row = _next_row(reader, source, where, index, limits)
        if row is None:
            return
        if _is_blank(row):
            continue
        if len(row) != width:
            raise parse_failure(
                f"{where}: has {len(row)} columns, but the header has {width}.",
                code="custody.ragged_row",
                pointer=record_pointer(index),
            )
        text = {name: row[columns[name]] for name in fields.text_fields}
        metadata: dict[str, JSONValue] = {name: row[columns[name]] for name in fields.metadata_fields}
        yield ParsedRecord(index=index, location=where, text=text, metadata=metadata)
        index += 1


def _next_row(
    reader: Iterator[list[str]], source: _RowSource, where: str, index: int, limits: Limits
) -> list[str] | None:
    source.next_row()
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as exc:
        raise parse_failure(
            f"{where}: malformed CSV ({exc}).", code="custody.invalid_csv", pointer=record_pointer(index)
        ) from None
    except _RowTooLong:
        raise record_too_large(where, None, index=index, limit=limits.max_record_chars) from None


def _is_blank(row: list[str]) -> bool:
    # An empty or whitespace-only line reads as [] or [" "]; either way no record.
    return not row or (len(row) == 1 and not row[0].strip())


def _leading_lines(lines: Iterator[Line]) -> tuple[list[Line], str | None]:
    """Read up to the first non-blank line, returning what was read and that line's text."""
    head: list[Line] = []
    for line in lines:
        head.append(line)
        if line.text.strip():
            return head, line.text
    return head, None


def _sniff_delimiter(header_text: str, wanted: tuple[str, ...]) -> str:
    """Pick the first delimiter that makes every declared field a column, else the one giving most columns."""
    best, best_count = DELIMITERS[0], 0
    for delimiter in DELIMITERS:
        try:
            cells = next(csv.reader([header_text], delimiter=delimiter), [])
        except csv.Error:
            continue
        names = {cell.strip() for cell in cells}
        if all(name in names for name in wanted):
            return delimiter
        if len(cells) > best_count:
            best, best_count = delimiter, len(cells)
    return best


def _read_header(
    reader: Iterator[list[str]], source: _RowSource, fields: FieldSpec
) -> tuple[int, int, dict[str, int]]:
    """Return the header's row number, its width, and the column of every declared field."""
    row_number = 0
    header: list[str] = []
    while _is_blank(header):
        row_number += 1
        source.next_row()
        try:
            header = next(reader)
        except csv.Error as exc:
            raise parse_failure(
                f"row {row_number} (the header): malformed CSV ({exc}).", code="custody.invalid_csv"
            ) from None
        except _RowTooLong:
            raise parse_failure(
                f"row {row_number} (the header) is longer than a row may be.", code="custody.invalid_csv"
            ) from None
    names = [cell.strip() for cell in header]
    columns: dict[str, int] = {}
    for name in fields.all_fields:
        positions = [position for position, column in enumerate(names) if column == name]
        if not positions:
            raise parse_failure(
                f"The CSV header has no column {quote(name)}; the columns found are: {_listing(names)}.",
                code="custody.missing_column",
            )
        if len(positions) > 1:
            raise parse_failure(
                f"The CSV header has the column {quote(name)} {len(positions)} times.",
                code="custody.duplicate_column",
            )
        columns[name] = positions[0]
    return row_number, len(names), columns


def _listing(names: list[str]) -> str:
    shown = ", ".join(quote(name, 40) for name in names[:MAX_COLUMNS_SHOWN])
    if len(names) > MAX_COLUMNS_SHOWN:
        shown += f" and {len(names) - MAX_COLUMNS_SHOWN:,} more"
    return shown or "none"
