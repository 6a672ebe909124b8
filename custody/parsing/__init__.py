"""Parse uploaded corpora into records, streaming, with errors that say what and where.

A pure library: no database, no settings (the caller passes the limits,
normally ``UPLOAD_MAX_RECORDS``, ``RECORD_MAX_CHARS``, ``UPLOAD_MAX_BYTES``,
``GZIP_MAX_RATIO``).

Formats (``Format``), each optionally gzipped (several concatenated members
are fine), strict UTF-8 with an optional BOM, LF or CRLF line endings:

- ``jsonl``: one JSON object per non-blank line. Declared text fields must be
  present and strings; declared metadata fields are kept as any JSON when
  present; **undeclared keys are dropped**.
- ``csv``: a header row, then one record per row; comma, tab or semicolon,
  chosen as the one that makes the declared fields columns. Every declared
  field must be a column; cells are kept verbatim, formula-looking ones too.
- ``text_lines``: one record per non-blank line; ``text_documents``: records
  separated by blank lines. Both have the single text field ``"text"``.
- ``parquet``: read row group by row group from a seekable stream; never gzipped.

A record's size is its characters as written in the file (the line, the CSV
row, the document; for Parquet its declared fields). Empty text is not an
error here: screening flags it later. The first problem stops the parse:

- ``ParseFailure`` (422), ``custody.*`` codes such as ``invalid_utf8``,
  ``invalid_json``, ``not_an_object``, ``missing_field``, ``not_text``,
  ``missing_column``, ``ragged_row``, ``invalid_csv``, ``invalid_parquet``,
  ``corrupt_gzip``, ``truncated_gzip``, ``empty_file``; pointers are
  ``/records/<index>[/<field>]`` or ``/file``;
- ``TooLarge`` (413): ``too_large``, ``decompression_bomb``,
  ``record_too_large``, ``too_many_records``;
- ``UnsupportedFormat`` (415) from ``detect_format``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import BinaryIO

from common.exceptions import Invalid, UnsupportedFormat
from custody.parsing.delimited import read_csv
from custody.parsing.detect import detect_format, sanitize_filename
from custody.parsing.lines import read_jsonl, read_text_documents, read_text_lines
from custody.parsing.records import (
    TEXT_FIELD,
    FieldSpec,
    Format,
    JSONValue,
    Limits,
    ParsedRecord,
    ParseFailure,
    parse_failure,
    record_pointer,
    too_large,
)
from custody.parsing.streams import (
    BadEncoding,
    Line,
    LineTooLong,
    decode_lines,
    encoding_failure,
    line_too_long,
    maybe_inflate,
    read_chunks,
)

__all__ = [
    "TEXT_FIELD",
    "FieldSpec",
    "Format",
    "JSONValue",
    "ParseFailure",
    "ParsedRecord",
    "detect_format",
    "iter_records",
    "sanitize_filename",
]

_LineReader = Callable[[Iterator[Line], FieldSpec, Limits], Iterator[ParsedRecord]]
_LINE_READERS: dict[Format, _LineReader] = {
    Format.JSONL: read_jsonl,
    Format.CSV: read_csv,
    Format.TEXT_LINES: read_text_lines,
    Format.TEXT_DOCUMENTS: read_text_documents,
}


def iter_records(
    stream: BinaryIO,
    fmt: Format,
    gzip: bool,
    fields: FieldSpec,
    *,
    max_records: int,
    max_record_chars: int,
    max_bytes: int,
    max_gzip_ratio: int,
) -> Iterator[ParsedRecord]:
    """Return an iterator over the stream's records, read lazily; arguments are checked now.

    ``max_bytes`` bounds the bytes read and, for gzip, the bytes inflated.
    ``gzip`` is a hint: content starting with the gzip magic bytes is
    inflated, other content is not (neither could parse otherwise); the hint
    decides only a stream under two bytes. Parquet needs a seekable stream.

    :raises Invalid: ``custody.invalid_fields`` when a plain-text format gets
        fields other than ``"text"``.
    :raises UnsupportedFormat: gzipped Parquet.
    :raises ParseFailure, TooLarge: while iterating, at the first problem.
    """
    fmt = Format(fmt)
    limits = Limits(
        max_records=max_records,
        max_record_chars=max_record_chars,
        max_bytes=max_bytes,
        max_gzip_ratio=max_gzip_ratio,
    )
    if fmt.is_plain_text and fields != FieldSpec.plain_text():
        detail = f"Plain-text uploads have one text field, {TEXT_FIELD!r}, and no metadata fields."
        code = "custody.invalid_fields"
        raise Invalid(detail, code=code, errors=[{"pointer": "/text_fields", "code": code, "detail": detail}])
    if fmt is Format.PARQUET:
        if gzip:
            raise UnsupportedFormat(
                "Parquet compresses internally: upload the .parquet file without gzip.",
                code="custody.unsupported_format",
            )
        if not stream.seekable():
            raise ValueError("Parquet needs a seekable stream")
        from custody.parsing.parquet import read_parquet

        return _counted(read_parquet(stream, fields, limits), limits)
    chunks = maybe_inflate(
        read_chunks(stream, max_bytes=max_bytes),
        gzip_hint=gzip,
        max_bytes=max_bytes,
        max_ratio=max_gzip_ratio,
    )
    lines = decode_lines(chunks, max_line_bytes=limits.max_line_bytes)
    return _counted(_LINE_READERS[fmt](lines, fields, limits), limits)


def _counted(records: Iterator[ParsedRecord], limits: Limits) -> Iterator[ParsedRecord]:
    """Enforce the record count and an empty file; report stream errors at the record being read."""
    count = 0
    try:
        for record in records:
            if count >= limits.max_records:
                raise too_large(
                    f"The file has more than {limits.max_records:,} records, the limit.",
                    code="custody.too_many_records",
                )
            count += 1
            yield record
    except BadEncoding as exc:
        raise encoding_failure(exc, pointer=record_pointer(count)) from None
    except LineTooLong as exc:
        raise line_too_long(exc, pointer=record_pointer(count), limit=limits.max_record_chars) from None
    if count == 0:
        raise parse_failure(
            "The file holds no records (blank lines, or a CSV header alone, are not records).",
            code="custody.empty_file",
        )
