"""Parquet, through pyarrow, one row group at a time (imported only when a Parquet file is read).

Locations are ``row group G row R``, both 0-based as Parquet tools count them.
A record's size is the characters of its declared fields (metadata as JSON).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
from collections.abc import Iterator
from decimal import Decimal
from typing import Any, BinaryIO

from custody.parsing.records import (
    FieldSpec,
    JSONValue,
    Limits,
    ParsedRecord,
    parse_failure,
    quote,
    record_pointer,
    record_too_large,
    too_large,
)

BATCH_ROWS = 1024
MAX_COLUMNS_SHOWN = 20


def read_parquet(stream: BinaryIO, fields: FieldSpec, limits: Limits) -> Iterator[ParsedRecord]:
    """Yield one record per row; text columns must be strings and never null.

    :raises ParseFailure: not Parquet, a missing column, a non-string text column, a null text.
    :raises TooLarge: file or row group over ``max_bytes``, more rows than ``max_records``.
    """
    parquet = _open(stream, fields, limits)
    index = 0
    for group in range(parquet.num_row_groups):
        declared = parquet.metadata.row_group(group).total_byte_size
        if declared > limits.max_bytes:
            raise too_large(
                f"Row group {group} inflates to {declared:,} bytes; the limit is {limits.max_bytes:,}.",
                code="custody.too_large",
            )
        row = 0
        for columns in _column_batches(parquet, group, fields):
            for position in range(len(columns[fields.text_fields[0]])):
                yield _record(index, f"row group {group} row {row}", columns, position, fields, limits)
                index += 1
                row += 1


def _open(stream: BinaryIO, fields: FieldSpec, limits: Limits) -> Any:
    """Open the file and check its size, columns and row count from the footer."""
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    _check_file_size(stream, limits.max_bytes)
    try:
        parquet = pq.ParquetFile(stream)
        schema = parquet.schema_arrow
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise parse_failure(
            f"The file is not readable as Parquet ({exc}).", code="custody.invalid_parquet"
        ) from None
    _check_columns(schema, fields)
    rows = parquet.metadata.num_rows
    if rows > limits.max_records:
        raise too_large(
            f"The file has {rows:,} rows; the limit is {limits.max_records:,} records.",
            code="custody.too_many_records",
        )
    return parquet


def _column_batches(parquet: Any, group: int, fields: FieldSpec) -> Iterator[dict[str, list[Any]]]:
    """Yield the declared columns of one row group, a batch of Python values at a time."""
    import pyarrow as pa

    batches = parquet.iter_batches(batch_size=BATCH_ROWS, row_groups=[group], columns=list(fields.all_fields))
    while True:
        try:
            batch = next(batches, None)
            if batch is None:
                return
            columns = {name: batch.column(name).to_pylist() for name in fields.all_fields}
        except (pa.ArrowException, OSError, ValueError) as exc:
            # ValueError covers UnicodeDecodeError: a string column holding invalid UTF-8.
            raise parse_failure(
                f"row group {group}: the data cannot be read ({exc}).", code="custody.invalid_parquet"
            ) from None
        yield columns


def _record(
    index: int, where: str, columns: dict[str, list[Any]], position: int, fields: FieldSpec, limits: Limits
) -> ParsedRecord:
    text: dict[str, str] = {}
    for name in fields.text_fields:
        value = columns[name][position]
        if value is None:
            raise parse_failure(
                f"{where}: the text field {quote(name)} is null.",
                code="custody.missing_field",
                pointer=record_pointer(index, name),
            )
        text[name] = value
    metadata = {name: to_json(columns[name][position]) for name in fields.metadata_fields}
    chars = sum(len(value) for value in text.values())
    if metadata:
        chars += len(json.dumps(metadata, ensure_ascii=False))
    if chars > limits.max_record_chars:
        raise record_too_large(where, chars, index=index, limit=limits.max_record_chars)
    return ParsedRecord(index=index, location=where, text=text, metadata=metadata)


def _check_file_size(stream: BinaryIO, max_bytes: int) -> None:
    position = stream.tell()
    size = stream.seek(0, io.SEEK_END)
    stream.seek(position)
    if size > max_bytes:
        raise too_large(
            f"The file is larger than the limit of {max_bytes:,} bytes.", code="custody.too_large"
        )


def _check_columns(schema: Any, fields: FieldSpec) -> None:
    import pyarrow as pa

    names = list(schema.names)
    for name in fields.all_fields:
        if name not in names:
            listing = ", ".join(quote(column, 40) for column in names[:MAX_COLUMNS_SHOWN])
            if len(names) > MAX_COLUMNS_SHOWN:
                listing += f" and {len(names) - MAX_COLUMNS_SHOWN:,} more"
            raise parse_failure(
                f"The Parquet file has no column {quote(name)}; the columns found are: {listing or 'none'}.",
                code="custody.missing_column",
            )
    for name in fields.text_fields:
        kind = schema.field(name).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)):
            raise parse_failure(
                f"The Parquet column {quote(name)} is a text field but has type {kind}, not string.",
                code="custody.not_text",
            )


def to_json(value: Any) -> JSONValue:
    """Turn what pyarrow's ``to_pylist`` gives into plain JSON values."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(key): to_json(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        # A map column comes back as a list of (key, value) pairs.
        return [to_json(item) for item in value]
    return str(value)
