"""Unpack an uploaded base archive (zip, or tar plain or gzip/bz2/xz) with bounded memory and work.

A small archive can inflate to gigabytes (a zero-filled tensor compresses a thousandfold), so
nothing here trusts what an archive says or inflates it whole before deciding:

- zip: the central directory's size and entry count are read from its end record before
  ``zipfile`` parses it; then the declared sizes (total against the limit, and against the
  archive's real size for the compression ratio) are checked before any member is inflated;
- tar: read as a stream (``r|``) through a counting reader that refuses as soon as the inflated
  bytes pass the limit, pass ``ratio`` times the compressed bytes read so far (above a floor, so
  small, very compressible archives of JSON still pass), or run ahead of the members' contents by
  more than a few MiB (a huge pax or long-name header, which ``tarfile`` would buffer whole);
- both: at most MAX_FILES files, plain names, no links or devices, sizes counted while copying
  in 1 MiB chunks to disk. Memory stays at a few MiB whatever the archive holds.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import IO, Any

from training.exceptions import Invalid, TooLarge, UnsupportedFormat

MAX_FILES = 64
MAX_ENTRIES = 2 * MAX_FILES  # files and folder entries
MAX_ZIP_DIRECTORY = 4 * 1024**2
RATIO_FLOOR = 64 * 1024**2  # archives inflating to less are never refused for their ratio
HEADER_SLACK = 8 * 1024**2  # tar bytes beyond the members' contents (headers, padding)
_CHUNK = 1 << 20


def refusal(detail: str, *, code: str = "training.base_invalid", pointer: str = "/file") -> Invalid:
    return Invalid(detail, code=code, errors=[{"pointer": pointer, "code": "invalid", "detail": detail}])


def _ratio_refusal(inflated: int, packed: int, ratio: float) -> Invalid:
    return refusal(
        f"The archive inflates {inflated:,} bytes from {packed:,} (over {ratio:g} to 1): "
        "real model weights hardly compress, so this looks like a decompression bomb.",
        code="training.base_compression_ratio",
    )


def _too_large(limit: int) -> TooLarge:
    return TooLarge(f"The unpacked model is over {limit:,} bytes.", code="training.base_too_large")


def plain_name(raw: str) -> str:
    """The file's name inside the model directory. :raises Invalid: anything but a plain relative path."""
    path = PurePosixPath(raw.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or any(p in ("", ".") for p in path.parts[:-1]):
        raise refusal(f"{raw[:200]!r} is not a plain relative path.")
    if len(path.parts) > 2:
        raise refusal(f"{raw[:200]!r} is in a subfolder: put the model's files at the top of the archive.")
    name = path.parts[-1]
    if name.startswith(".") or "\x00" in name:
        raise refusal(f"{raw[:200]!r} is not a plain file name.")
    return name


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.files = 0

    def declare(self, size: int) -> None:
        """A member's declared size, before reading it."""
        self.files += 1
        if self.files > MAX_FILES:
            raise refusal(f"The archive holds more than {MAX_FILES} files.")
        if self.used + size > self.limit:
            raise _too_large(self.limit)

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise _too_large(self.limit)


def _copy(src: IO[bytes], dest: Path, budget: _Budget) -> None:
    with open(dest, "xb") as out:
        while chunk := src.read(_CHUNK):
            budget.take(len(chunk))
            out.write(chunk)


# --- zip ---------------------------------------------------------------------------------------


def _zip_directory(data: IO[bytes], size: int) -> tuple[int, int]:
    """(entries, central directory bytes) from the end record, zip64 included. :raises Invalid."""
    tail_length = min(size, 22 + 65535)
    data.seek(size - tail_length)
    tail = data.read(tail_length)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        raise refusal("The archive is damaged (no zip end record).")
    entries, directory = struct.unpack("<10xHL6x", tail[at : at + 22])
    if entries == 0xFFFF or directory == 0xFFFFFFFF:
        locator = tail[at - 20 : at] if at >= 20 else b""
        if not locator.startswith(b"PK\x06\x07"):
            raise refusal("The archive is damaged (no zip64 locator).")
        (offset,) = struct.unpack("<8xQ4x", locator)
        data.seek(offset)
        record = data.read(56)
        if len(record) != 56 or not record.startswith(b"PK\x06\x06"):
            raise refusal("The archive is damaged (no zip64 end record).")
        entries, directory = struct.unpack("<32xQQ8x", record)
    return entries, directory


def _unpack_zip(data: IO[bytes], size: int, into: Path, budget: _Budget, ratio: float) -> None:
    entries, directory = _zip_directory(data, size)
    if entries > MAX_ENTRIES or directory > MAX_ZIP_DIRECTORY:
        raise refusal(f"The archive holds {entries:,} entries; at most {MAX_FILES} files.")
    data.seek(0)
    with zipfile.ZipFile(data) as archive:
        infos = [info for info in archive.infolist() if not info.is_dir()]
        if len(archive.infolist()) > MAX_ENTRIES or len(infos) > MAX_FILES:
            raise refusal(f"The archive holds more than {MAX_FILES} files.")
        declared = sum(info.file_size for info in infos)
        if declared > budget.limit:
            raise _too_large(budget.limit)
        # Declared compressed sizes can lie upwards; the archive's own size cannot.
        packed = max(1, min(sum(info.compress_size for info in infos), size))
        if declared > RATIO_FLOOR and declared > ratio * packed:
            raise _ratio_refusal(declared, packed, ratio)
        names = [(plain_name(info.filename), info) for info in infos]
        for _, info in names:
            mode = (info.external_attr >> 16) & 0o170000
            if mode and mode != 0o100000:
                raise refusal(f"{info.filename[:200]!r} is a link or special file.")
        for name, info in names:
            budget.declare(info.file_size)
            with archive.open(info) as src:
                _copy(src, into / name, budget)


# --- tar ---------------------------------------------------------------------------------------


class _Inflated:
    """The decompressed byte stream of a tar, counted against the limits as tarfile reads it."""

    def __init__(self, inner: Any, raw: IO[bytes], budget: _Budget, ratio: float) -> None:
        self.inner = inner
        self.raw = raw
        self.budget = budget
        self.ratio = ratio
        self.total = 0

    def read(self, size: int = -1) -> bytes:
        chunk: bytes = self.inner.read(_CHUNK if size < 0 else min(size, _CHUNK))
        self.total += len(chunk)
        if self.total > self.budget.limit + HEADER_SLACK:
            raise _too_large(self.budget.limit)
        packed = max(1, self.raw.tell())
        if self.total > RATIO_FLOOR and self.total > self.ratio * packed:
            raise _ratio_refusal(self.total, packed, self.ratio)
        if self.total - self.budget.used > HEADER_SLACK + 2 * _CHUNK:
            raise refusal("The archive's headers are too large (a pax or long-name header bomb?).")
        return chunk


def _decompressor(data: IO[bytes]) -> Any:
    head = data.read(6)
    data.seek(0)
    if head.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=data, mode="rb")
    if head.startswith(b"BZh"):
        return bz2.BZ2File(data)
    if head.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(data)
    return data


def _unpack_tar(data: IO[bytes], into: Path, budget: _Budget, ratio: float) -> None:
    stream = _Inflated(_decompressor(data), data, budget, ratio)
    with tarfile.open(fileobj=stream, mode="r|") as archive:  # type: ignore[call-overload]
        for entries, member in enumerate(archive, start=1):
            if entries > MAX_ENTRIES:
                raise refusal(f"The archive holds more than {MAX_FILES} files.")
            if member.isdir():
                continue
            if not member.isfile():
                raise refusal(f"{member.name[:200]!r} is a link or special file.")
            name = plain_name(member.name)
            budget.declare(member.size)
            src = archive.extractfile(member)
            if src is None:
                raise refusal(f"{member.name[:200]!r} cannot be read.")
            _copy(src, into / name, budget)


def archive_unpack(data: IO[bytes], into: Path, *, max_bytes: int, ratio: float) -> None:
    """Unpack a zip or tar (optionally gzip/bz2/xz) of plain files into ``into``, bounded.

    :raises UnsupportedFormat: neither zip nor tar. :raises Invalid: unsafe, duplicate or too many
    members, or a compression ratio over ``ratio``. :raises TooLarge: more than max_bytes unpacked.
    """
    size = data.seek(0, 2)
    data.seek(0)
    head = data.read(8)
    data.seek(0)
    budget = _Budget(max_bytes)
    try:
        if head.startswith(b"PK"):
            _unpack_zip(data, size, into, budget, ratio)
        else:
            try:
                _unpack_tar(data, into, budget, ratio)
            except tarfile.ReadError:
                if budget.files:
                    raise
                raise UnsupportedFormat(
                    "Upload the model directory as a .zip or .tar(.gz) archive.", code="training.base_format"
                ) from None
    except FileExistsError as exc:
        raise refusal(f"{Path(str(exc.filename)).name!r} appears twice in the archive.") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, lzma.LZMAError, ValueError) as exc:
        raise refusal(f"The archive is damaged ({type(exc).__name__}).") from None
