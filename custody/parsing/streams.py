"""Bytes to lines, streaming: size limits, incremental gunzip with bomb checks, strict UTF-8.

Nothing here holds more than one read chunk, one inflate chunk and one line
(capped) in memory, whatever the size of the upload.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from typing import BinaryIO

from common.exceptions import TooLarge
from custody.parsing.records import ParseFailure, parse_failure, too_large

READ_CHUNK = 64 * 1024
INFLATE_CHUNK = 256 * 1024
GZIP_WBITS = 16 + zlib.MAX_WBITS
# Small files of repetitive text legitimately compress far beyond any sane
# ratio; below this much inflated output a high ratio is harmless.
RATIO_GRACE_BYTES = 1024 * 1024
UTF8_BOM = b"\xef\xbb\xbf"
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, slots=True)
class Line:
    number: int  # 1-based
    offset: int  # byte offset of the line's first byte in the (inflated) file
    text: str  # without its line ending


class BadEncoding(Exception):
    """A line is not valid UTF-8; the reader turns this into a ParseFailure at its record."""

    def __init__(self, *, line: int, column: int, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.column = column  # 1-based byte position within the line
        self.offset = offset  # byte offset in the file
        self.reason = reason


class LineTooLong(Exception):
    """A line has more bytes than any record may have; raised before it is buffered whole."""

    def __init__(self, *, line: int) -> None:
        super().__init__(f"line {line}")
        self.line = line


def read_chunks(stream: BinaryIO, *, max_bytes: int) -> Iterator[bytes]:
    """Yield the stream in chunks.

    :raises TooLarge: ``custody.too_large`` once more than ``max_bytes`` were read.
    """
    total = 0
    while chunk := stream.read(READ_CHUNK):
        total += len(chunk)
        if total > max_bytes:
            raise too_large(
                f"The file is larger than the limit of {max_bytes:,} bytes.", code="custody.too_large"
            )
        yield chunk


def maybe_inflate(
    chunks: Iterator[bytes], *, gzip_hint: bool, max_bytes: int, max_ratio: int
) -> Iterator[bytes]:
    """Yield the content, inflated when it starts with the gzip magic bytes.

    The content decides: no UTF-8 text starts with ``1f 8b``, and nothing else
    inflates. ``gzip_hint`` only decides a stream too short to tell.
    """
    head = b""
    for chunk in chunks:
        head += chunk
        if len(head) >= len(GZIP_MAGIC):
            break
    is_gzip = head.startswith(GZIP_MAGIC) if len(head) >= len(GZIP_MAGIC) else gzip_hint
    content = chain([head], chunks) if head else chunks
    if is_gzip:
        yield from inflate(content, max_bytes=max_bytes, max_ratio=max_ratio)
    else:
        yield from content


def inflate(chunks: Iterator[bytes], *, max_bytes: int, max_ratio: int) -> Iterator[bytes]:
    """Gunzip incrementally, member after member, yielding at most ``INFLATE_CHUNK`` at a time.

    :raises TooLarge: ``custody.decompression_bomb`` when the output outgrows
        ``max_ratio`` times the compressed bytes consumed so far (past a small
        grace), ``custody.too_large`` when it outgrows ``max_bytes``.
    :raises ParseFailure: ``custody.corrupt_gzip``, ``custody.truncated_gzip``.
    """
    meter = _InflateMeter(max_bytes=max_bytes, max_ratio=max_ratio)
    member: zlib._Decompress | None = None
    for data in chunks:
        while True:
            if member is None:
                # Zero padding between or after members is allowed, as gzip(1) does.
                stripped = data.lstrip(b"\0")
                meter.consumed += len(data) - len(stripped)
                data = stripped
                if not data:
                    break
                member = zlib.decompressobj(GZIP_WBITS)
            try:
                out = member.decompress(data, INFLATE_CHUNK)
            except zlib.error as exc:
                raise parse_failure(
                    f"The gzip data is corrupt at about compressed byte {meter.consumed:,} ({exc}).",
                    code="custody.corrupt_gzip",
                ) from None
            rest = member.unused_data if member.eof else member.unconsumed_tail
            meter.consumed += len(data) - len(rest)
            data = rest
            if out:
                meter.add(len(out))
                yield out
            if member.eof:
                member = None
            elif not data and len(out) < INFLATE_CHUNK:
                break  # needs more input
    if member is not None:
        raise parse_failure(
            "The gzip data ends before its end marker: the file is truncated.", code="custody.truncated_gzip"
        )


class _InflateMeter:
    def __init__(self, *, max_bytes: int, max_ratio: int) -> None:
        self.max_bytes = max_bytes
        self.max_ratio = max_ratio
        self.consumed = 0
        self.inflated = 0

    def add(self, count: int) -> None:
        self.inflated += count
        if self.inflated > RATIO_GRACE_BYTES and self.inflated > self.max_ratio * self.consumed:
            raise too_large(
                f"The gzip data inflates to more than {self.max_ratio}x its compressed size, the limit "
                "(a decompression bomb).",
                code="custody.decompression_bomb",
            )
        if self.inflated > self.max_bytes:
            raise too_large(
                f"Decompressed, the file is larger than the limit of {self.max_bytes:,} bytes.",
                code="custody.too_large",
            )


def split_lines(chunks: Iterator[bytes], *, max_line_bytes: int) -> Iterator[tuple[int, int, bytes]]:
    """Yield ``(number, offset, raw line without LF)``.

    :raises LineTooLong: when a line passes ``max_line_bytes``, before it is buffered whole.
    """
    parts: list[bytes] = []  # the line being assembled across chunks
    pending = 0
    number = 0
    offset = 0
    for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            piece = chunk[start:end]
            if parts:
                parts.append(piece)
                piece = b"".join(parts)
                parts, pending = [], 0
            number += 1
            if len(piece) > max_line_bytes:
                raise LineTooLong(line=number)
            yield number, offset, piece
            offset += len(piece) + 1
            start = end + 1
        if start < len(chunk):
            parts.append(chunk[start:])
            pending += len(chunk) - start
            if pending > max_line_bytes:
                raise LineTooLong(line=number + 1)
    if parts:
        piece = b"".join(parts)
        yield number + 1, offset, piece


def decode_lines(chunks: Iterator[bytes], *, max_line_bytes: int) -> Iterator[Line]:
    """Yield strictly decoded UTF-8 lines; LF or CRLF endings; a leading BOM is dropped.

    :raises BadEncoding: at the first invalid byte sequence.
    """
    for number, offset, raw in split_lines(chunks, max_line_bytes=max_line_bytes):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        skipped = 0
        if number == 1 and raw.startswith(UTF8_BOM):
            raw, skipped = raw[len(UTF8_BOM) :], len(UTF8_BOM)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadEncoding(
                line=number,
                column=skipped + exc.start + 1,
                offset=offset + skipped + exc.start,
                reason=exc.reason,
            ) from None
        yield Line(number=number, offset=offset, text=text)


def encoding_failure(exc: BadEncoding, *, pointer: str) -> ParseFailure:
    return parse_failure(
        f"line {exc.line}: not valid UTF-8 at byte {exc.column} of the line (byte offset {exc.offset:,} "
        f"in the file): {exc.reason}.",
        code="custody.invalid_utf8",
        pointer=pointer,
    )


def line_too_long(exc: LineTooLong, *, pointer: str, limit: int) -> TooLarge:
    return too_large(
        f"Line {exc.line} is longer than a record may be ({limit:,} characters).",
        code="custody.record_too_large",
        pointer=pointer,
    )
