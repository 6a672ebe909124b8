"""Which format an upload is in, and a display name that is safe to show."""

from __future__ import annotations

import re
import unicodedata

from common.exceptions import FieldError, UnsupportedFormat
from custody.parsing.records import FILE_POINTER, Format
from custody.parsing.streams import GZIP_MAGIC

PARQUET_MAGIC = b"PAR1"
EXTENSIONS: dict[str, Format] = {
    ".jsonl": Format.JSONL,
    ".ndjson": Format.JSONL,
    ".csv": Format.CSV,
    ".tsv": Format.CSV,
    ".txt": Format.TEXT_LINES,
    ".parquet": Format.PARQUET,
}
MAX_NAME_CHARS = 120
FALLBACK_NAME = "unnamed"
_PATH_SEPARATORS = re.compile(r"[/\\]")
_RESERVED = re.compile(r'[<>:"|?*]')
_EXTENSION = re.compile(r"(?:\.[A-Za-z0-9]{1,10}){1,2}$")


def detect_format(filename: str, declared: str | None, head: bytes) -> tuple[Format, bool]:
    """Return the upload's format and whether it is gzipped.

    The declared format wins, then the extension (``.jsonl .ndjson .csv .tsv
    .txt .parquet``, optionally ``.gz``; ``.txt`` means one record a line),
    then the content (Parquet magic). Gzip is read from the content's magic
    bytes, or from the name when there is no content to read.

    :raises UnsupportedFormat: ``custody.unsupported_format`` for an unknown
        declared format, a format that cannot be told, gzipped Parquet, or
        content that contradicts the format.
    """
    shown = sanitize_filename(filename)
    lowered = shown.lower()
    is_gzip = head.startswith(GZIP_MAGIC) if len(head) >= len(GZIP_MAGIC) else lowered.endswith(".gz")
    is_parquet_content = head.startswith(PARQUET_MAGIC)
    if declared is not None and declared.strip():
        fmt = _declared_format(declared)
        said = f"declared as {fmt.value}"
    else:
        stem = lowered.removesuffix(".gz")
        extension = stem[stem.rfind(".") :] if "." in stem else ""
        found = EXTENSIONS.get(extension)
        if found is None and is_parquet_content:
            found = Format.PARQUET
        if found is None:
            raise _unsupported(
                f"Cannot tell the format of {shown!r}: declare one of {_accepted()}, or name the file "
                f"with one of the extensions {', '.join(EXTENSIONS)} (optionally followed by .gz).",
                pointer="/format",
            )
        fmt = found
        said = f"named {shown!r}"
    if fmt is Format.PARQUET and is_gzip:
        raise _unsupported("Parquet compresses internally: upload the .parquet file without gzip.")
    if fmt is Format.PARQUET and len(head) >= len(PARQUET_MAGIC) and not is_parquet_content:
        raise _unsupported(f"The file is {said} but does not start as a Parquet file does (PAR1).")
    if fmt is not Format.PARQUET and is_parquet_content:
        raise _unsupported(f"The file is {said} but its content is Parquet.")
    return fmt, is_gzip


def sanitize_filename(name: str) -> str:
    """Return a display name: no directories, control or format characters, reserved punctuation or edge dots.

    Long names are shortened to ``MAX_NAME_CHARS``, keeping the extension.
    Never use the result as a path: custody files are named by id.
    """
    name = unicodedata.normalize("NFC", name)
    name = "".join(char for char in name if unicodedata.category(char)[0] != "C")
    name = _PATH_SEPARATORS.split(name)[-1]
    name = _RESERVED.sub("_", " ".join(name.split()))
    name = name.strip(" .")
    if len(name) > MAX_NAME_CHARS:
        match = _EXTENSION.search(name)
        extension = match.group(0) if match else ""
        stem = name[: len(name) - len(extension)]
        name = stem[: MAX_NAME_CHARS - len(extension) - 1].rstrip(" .") + "…" + extension
    return name or FALLBACK_NAME


def _declared_format(declared: str) -> Format:
    try:
        return Format(declared.strip().lower())
    except ValueError:
        raise _unsupported(
            f"Unknown format {declared.strip()[:40]!r}; the formats are {_accepted()}.", pointer="/format"
        ) from None


def _accepted() -> str:
    return ", ".join(fmt.value for fmt in Format)


def _unsupported(detail: str, *, pointer: str = FILE_POINTER) -> UnsupportedFormat:
    code = "custody.unsupported_format"
    error: FieldError = {"pointer": pointer, "code": code, "detail": detail}
    return UnsupportedFormat(detail, code=code, errors=[error])
