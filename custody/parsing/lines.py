"""Line-based formats: JSON Lines, plain text one record a line, plain text documents."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from custody.parsing.records import (
    TEXT_FIELD,
    FieldSpec,
    JSONValue,
    Limits,
    ParsedRecord,
    json_type,
    parse_failure,
    quote,
    record_pointer,
    record_too_large,
)
from custody.parsing.streams import Line

_SURROGATE = re.compile("[\ud800-\udfff]")


class _NonFiniteNumber(ValueError):
    pass


def read_jsonl(lines: Iterator[Line], fields: FieldSpec, limits: Limits) -> Iterator[ParsedRecord]:
    """Yield one record per non-blank line; each line must be a JSON object.

    Declared text fields must be present and strings; declared metadata fields
    are kept (any JSON) when present; other keys are dropped.
    """
    index = 0
    for line in lines:
        if not line.text.strip():
            continue
        where = f"line {line.number}"
        if len(line.text) > limits.max_record_chars:
            raise record_too_large(where, len(line.text), index=index, limit=limits.max_record_chars)
        obj = _load_object(line, where, index)
        text: dict[str, str] = {}
        for name in fields.text_fields:
            if name not in obj:
                raise parse_failure(
                    f"{where}: the text field {quote(name)} is missing.",
                    code="custody.missing_field",
                    pointer=record_pointer(index, name),
                )
            value = obj[name]
            if not isinstance(value, str):
                raise parse_failure(
                    f"{where}: the text field {quote(name)} must be a string, not {json_type(value)}.",
                    code="custody.not_text",
                    pointer=record_pointer(index, name),
                )
            text[name] = value
        metadata: dict[str, JSONValue] = {name: obj[name] for name in fields.metadata_fields if name in obj}
        # Only a \u escape can smuggle a lone surrogate past strict UTF-8 decoding,
        # and such a string cannot be encoded again further down the pipeline.
        if "\\u" in line.text:
            _reject_surrogates(where, index, {**text, **metadata})
        yield ParsedRecord(index=index, location=where, text=text, metadata=metadata)
        index += 1


def read_text_lines(lines: Iterator[Line], fields: FieldSpec, limits: Limits) -> Iterator[ParsedRecord]:
    """Yield one record per non-blank line, verbatim, as the field ``"text"``."""
    index = 0
    for line in lines:
        if not line.text.strip():
            continue
        where = f"line {line.number}"
        if len(line.text) > limits.max_record_chars:
            raise record_too_large(where, len(line.text), index=index, limit=limits.max_record_chars)
        yield ParsedRecord(index=index, location=where, text={TEXT_FIELD: line.text})
        index += 1


def read_text_documents(lines: Iterator[Line], fields: FieldSpec, limits: Limits) -> Iterator[ParsedRecord]:
    """Yield one record per run of non-blank lines (joined with LF) as the field ``"text"``.

    One or more blank (or whitespace-only) lines separate documents.
    """
    index = 0
    body: list[str] = []
    start = chars = 0
    for line in lines:
        if not line.text.strip():
            if body:
                yield _document(index, start, body)
                index += 1
                body = []
            continue
        if not body:
            start, chars = line.number, -1
        chars += 1 + len(line.text)
        if chars > limits.max_record_chars:
            where = f"the document starting at line {start}"
            raise record_too_large(where, None, index=index, limit=limits.max_record_chars)
        body.append(line.text)
    if body:
        yield _document(index, start, body)


def _document(index: int, start: int, body: list[str]) -> ParsedRecord:
    return ParsedRecord(
        index=index, location=f"document starting at line {start}", text={TEXT_FIELD: "\n".join(body)}
    )


def _load_object(line: Line, where: str, index: int) -> dict[str, Any]:
    pointer = record_pointer(index)
    try:
        obj = json.loads(line.text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise parse_failure(
            f"{where}, column {exc.colno}: not valid JSON ({exc.msg}).",
            code="custody.invalid_json",
            pointer=pointer,
        ) from None
    except _NonFiniteNumber as exc:
        raise parse_failure(
            f"{where}: not valid JSON ({exc}).", code="custody.invalid_json", pointer=pointer
        ) from None
    except ValueError:
        # int() refuses numbers of thousands of digits (CVE-2020-10735 guard).
        raise parse_failure(
            f"{where}: not valid JSON (a number has too many digits).",
            code="custody.invalid_json",
            pointer=pointer,
        ) from None
    except RecursionError:
        raise parse_failure(
            f"{where}: not valid JSON (nested too deeply).", code="custody.invalid_json", pointer=pointer
        ) from None
    if not isinstance(obj, dict):
        raise parse_failure(
            f"{where}: expected a JSON object, got {json_type(obj)}.",
            code="custody.not_an_object",
            pointer=pointer,
        )
    return obj


def _reject_constant(name: str) -> None:
    raise _NonFiniteNumber(f"{name} is not a JSON number")


def _reject_surrogates(where: str, index: int, fields: dict[str, JSONValue]) -> None:
    for name, value in fields.items():
        if _has_surrogate(value):
            raise parse_failure(
                f"{where}: the field {quote(name)} holds an unpaired surrogate escape (not Unicode text).",
                code="custody.invalid_unicode",
                pointer=record_pointer(index, name),
            )


def _has_surrogate(value: JSONValue) -> bool:
    # Iterative: metadata may nest as deep as the JSON parser allowed.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
    return False
