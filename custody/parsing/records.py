"""What a parse yields and how it fails: formats, field specs, records, limits, errors.

Error details name *where* (line, row, field, byte offset) and never quote
record content: a detail may end up in a log line or in a version's failure
reason, and custody records never leave custody.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeAlias

from common.exceptions import FieldError, Invalid, TooLarge

JSONValue: TypeAlias = "bool | int | float | str | list[JSONValue] | dict[str, JSONValue] | None"

TEXT_FIELD = "text"
FILE_POINTER = "/file"
MAX_FIELD_NAME_CHARS = 200


class Format(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    TEXT_LINES = "text_lines"
    TEXT_DOCUMENTS = "text_documents"
    PARQUET = "parquet"

    @property
    def is_plain_text(self) -> bool:
        return self in (Format.TEXT_LINES, Format.TEXT_DOCUMENTS)


@dataclass(frozen=True)
class FieldSpec:
    """Which fields of a record are text to desensitize, and which are metadata to keep.

    Plain-text formats have exactly one text field, ``"text"``, and no metadata
    (``FieldSpec.plain_text()``). Lists are accepted and stored as tuples.

    :raises Invalid: ``custody.invalid_fields`` for no text field, an empty or
        over-long name, a repeated name, or a name both text and metadata.
    """

    text_fields: tuple[str, ...]
    metadata_fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "text_fields", tuple(self.text_fields))
        object.__setattr__(self, "metadata_fields", tuple(self.metadata_fields))
        if not self.text_fields:
            raise _invalid_fields("/text_fields", "Name at least one text field.")
        seen: set[str] = set()
        for pointer, names in (
            ("/text_fields", self.text_fields),
            ("/metadata_fields", self.metadata_fields),
        ):
            for position, name in enumerate(names):
                where = f"{pointer}/{position}"
                if not isinstance(name, str) or not name.strip():
                    raise _invalid_fields(where, "A field name must be a non-empty string.")
                if len(name) > MAX_FIELD_NAME_CHARS:
                    raise _invalid_fields(
                        where, f"A field name may have at most {MAX_FIELD_NAME_CHARS} characters."
                    )
                if name in seen:
                    raise _invalid_fields(where, f"The field {quote(name)} is named twice.")
                seen.add(name)

    @classmethod
    def plain_text(cls) -> FieldSpec:
        return cls(text_fields=(TEXT_FIELD,))

    @property
    def all_fields(self) -> tuple[str, ...]:
        return self.text_fields + self.metadata_fields


@dataclass(frozen=True, slots=True)
class ParsedRecord:
    """One record: its 0-based ``index`` in the file, a human ``location``, its fields."""

    index: int
    location: str
    text: dict[str, str]
    metadata: dict[str, JSONValue] = field(default_factory=dict)


class ParseFailure(Invalid):
    """The upload's content cannot be read as the declared format; ``detail`` says where."""

    default_code = "custody.parse_error"
    title = "Unreadable upload"


@dataclass(frozen=True)
class Limits:
    max_records: int
    max_record_chars: int
    max_bytes: int
    max_gzip_ratio: int

    def __post_init__(self) -> None:
        for name in ("max_records", "max_record_chars", "max_bytes", "max_gzip_ratio"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    @property
    def max_line_bytes(self) -> int:
        # A UTF-8 character takes at most 4 bytes, so a longer line is certainly
        # over the character limit; +1 for a CR before the LF.
        return 4 * self.max_record_chars + 1


def record_pointer(index: int, field_name: str | None = None) -> str:
    """Return the JSON pointer to a record, or to one of its fields (RFC 6901 escaped)."""
    pointer = f"/records/{index}"
    if field_name is None:
        return pointer
    return f"{pointer}/{field_name.replace('~', '~0').replace('/', '~1')}"


def parse_failure(
    detail: str, *, code: str = ParseFailure.default_code, pointer: str = FILE_POINTER
) -> ParseFailure:
    return ParseFailure(detail, code=code, errors=[_error(pointer, code, detail)])


def too_large(detail: str, *, code: str, pointer: str = FILE_POINTER) -> TooLarge:
    return TooLarge(detail, code=code, errors=[_error(pointer, code, detail)])


def record_too_large(where: str, chars: int | None, *, index: int, limit: int) -> TooLarge:
    size = f"has {chars:,} characters" if chars is not None else "is too long"
    return too_large(
        f"{_capitalized(where)} {size}; a record may have at most {limit:,}.",
        code="custody.record_too_large",
        pointer=record_pointer(index),
    )


def quote(name: str, limit: int = 60) -> str:
    """Quote a field or column name for a detail, shortened so a hostile header stays readable."""
    shown = name if len(name) <= limit else name[:limit] + "…"
    return json.dumps(shown, ensure_ascii=False)


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _error(pointer: str, code: str, detail: str) -> FieldError:
    return {"pointer": pointer, "code": code, "detail": detail}


def _invalid_fields(pointer: str, detail: str) -> Invalid:
    code = "custody.invalid_fields"
    return Invalid(detail, code=code, errors=[_error(pointer, code, detail)])
