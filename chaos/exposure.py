"""The exposure scanner: looks for sentinel strings wherever platform data can land.

Sentinels are planted in custody records; promise 1 says none may then be
found in plaintext outside the contributing provider's own views and the
approved preview excerpt. This module finds them, in:

- bytes as they are and as they are wrapped: gzip, zlib, bz2 and xz streams,
  zip and tar archives (members of members too), and the sentinel's own
  UTF-16, hex and base64 forms (a Celery message body is base64; a
  ``pg_dump`` of a binary column is hex);
- files under given roots (read in a child process, see :func:`file_scan`);
- every column of every table of the database, and the raw SQLite file;
- every key and value of a Redis database (the broker, the cache);
- every version of every object in the configured S3 buckets (blobs, KMS KEK records).

:class:`ExposureScan` keeps, per channel, how many items and bytes it read
and every hit, with the place and the viewer; what counts as allowed is the
caller's decision. ``tests/proving/test_no_exposure.py`` runs it over the
whole demo; ``tests/custody/scanner.py`` re-exports the older helpers.
"""

from __future__ import annotations

import base64
import bz2
import gzip
import io
import json
import lzma
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ahocorasick_rs import BytesAhoCorasick

# Unwrapping stops at this depth (a zip in a tar in a gzip is depth 3) and at
# this many inflated bytes per stream, so a hostile archive cannot exhaust memory.
MAX_DEPTH = 4
MAX_INFLATED = 256 * 1024**2
# The repository checkout: its sources (tests name their sentinels) are not platform output.
CHECKOUT = Path(__file__).resolve().parents[1]


# --- finding sentinels in bytes -----------------------------------------------------


def _base64_cores(data: bytes) -> Iterator[bytes]:
    """The base64 characters that ``data`` fixes at each of the three alignments in a longer stream."""
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data)
        start = -(-8 * offset // 6)  # characters still holding the unknown bytes before
        end = 8 * (offset + len(data)) // 6  # characters holding only these bytes
        for core in (encoded[start:end], encoded[start:end].translate(bytes.maketrans(b"+/", b"-_"))):
            if len(core) >= 8:
                yield core


def encodings(sentinel: str) -> dict[bytes, str]:
    """The byte patterns that show ``sentinel``, each named by its encoding."""
    utf8 = sentinel.encode()
    forms = {
        utf8: "utf-8",
        sentinel.encode("utf-16-le"): "utf-16-le",
        sentinel.encode("utf-16-be"): "utf-16-be",
        sentinel.encode("unicode_escape"): "escaped",
        utf8.hex().encode(): "hex",
    }
    for core in _base64_cores(utf8):
        forms.setdefault(core, "base64")
    return forms


class SentinelFinder:
    """Finds sentinels (in any of their :func:`encodings`) in bytes and in what the bytes wrap."""

    def __init__(self, sentinels: Iterable[str]) -> None:
        self.sentinels = sorted(set(sentinels))
        # A pattern can belong to two sentinels (base64 drops the last bits of a misaligned
        # stream, so "...-bbb" and "...-bbc" may share one): a match names both.
        owners: dict[bytes, list[str]] = {}
        for sentinel in self.sentinels:
            for pattern in encodings(sentinel):
                owners.setdefault(pattern, []).append(sentinel)
        self._owners = list(owners.values())
        self._automaton = BytesAhoCorasick(list(owners)) if owners else None

    def in_raw(self, data: bytes) -> set[str]:
        if self._automaton is None or not data:
            return set()
        matches = self._automaton.find_matches_as_indexes(data, overlapping=True)
        return {sentinel for index, _start, _end in matches for sentinel in self._owners[index]}

    def find(self, data: bytes) -> set[str]:
        """Sentinels in ``data`` or in anything it unwraps to."""
        found: set[str] = set()
        for inner in variants(data):
            found |= self.in_raw(inner)
        return found


def _bounded(stream: io.BufferedIOBase | Any) -> bytes:
    out = bytearray()
    try:
        while len(out) < MAX_INFLATED and (chunk := stream.read(1 << 20)):
            out += chunk
    except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError):
        pass  # truncated or corrupt: what inflated so far is still scanned
    return bytes(out)


def _inflate_zlib(data: bytes) -> bytes:
    try:
        return zlib.decompressobj().decompress(data, MAX_INFLATED)
    except zlib.error:
        return b""


def _members_of_zip(data: bytes) -> Iterator[bytes]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            for info in archive.infolist():
                if not info.is_dir():
                    with archive.open(info) as member:
                        yield _bounded(member)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError):
        return


def _members_of_tar(data: bytes) -> Iterator[bytes]:
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for info in archive:
                handle = archive.extractfile(info) if info.isfile() else None
                if handle is not None:
                    yield _bounded(handle)
    except (tarfile.TarError, OSError, EOFError):
        return


# Compressed streams by their magic bytes.
_STREAMS: tuple[tuple[bytes, Callable[[io.BytesIO], Any]], ...] = (
    (b"\x1f\x8b", lambda raw: gzip.GzipFile(fileobj=raw)),
    (b"BZh", bz2.BZ2File),
    (b"\xfd7zXZ\x00", lzma.LZMAFile),
)


def _unwrapped(data: bytes) -> Iterator[bytes]:
    """What ``data`` holds one level down, by its magic bytes."""
    for magic, opener in _STREAMS:
        if data.startswith(magic):
            with opener(io.BytesIO(data)) as stream:
                yield _bounded(stream)
            return
    if data[:1] == b"\x78" and len(data) > 2 and int.from_bytes(data[:2], "big") % 31 == 0:
        yield _inflate_zlib(data)
    elif data[:4] == b"PK\x03\x04":
        yield from _members_of_zip(data)
    elif data[257:262] == b"ustar":
        yield from _members_of_tar(data)


def variants(data: bytes, depth: int = 0) -> Iterator[bytes]:
    """``data``, then everything it unwraps to (compressed streams, archive members), depth first."""
    yield data
    if depth >= MAX_DEPTH:
        return
    for inner in _unwrapped(data):
        if inner:
            yield from variants(inner, depth + 1)


# --- the scan: channels, items, hits --------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """A sentinel found: in which channel, where (a URL, table.column, path or key) and seen by whom."""

    channel: str
    place: str
    sentinel: str
    who: str = ""


@dataclass
class Channel:
    items: int = 0
    bytes: int = 0


@dataclass
class ExposureScan:
    """Sentinel hits and, per channel, how many items and bytes were read."""

    finder: SentinelFinder
    channels: dict[str, Channel] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)

    def count(self, channel: str, items: int, size: int) -> None:
        tally = self.channels.setdefault(channel, Channel())
        tally.items += items
        tally.bytes += size

    def scan(self, channel: str, place: str, data: bytes, who: str = "") -> set[str]:
        """Scan one item; record it and its hits. Returns the sentinels found."""
        self.count(channel, 1, len(data))
        found = self.finder.find(data)
        self.hits += [Hit(channel, place, sentinel, who) for sentinel in sorted(found)]
        return found

    def add(self, channel: str, found: dict[str, set[str]], items: int, size: int) -> None:
        """Record a scan made elsewhere (a child process): its hits by place, items and bytes."""
        self.count(channel, items, size)
        for place, sentinels in sorted(found.items()):
            self.hits += [Hit(channel, place, sentinel) for sentinel in sorted(sentinels)]

    def figures(self) -> dict[str, Any]:
        return {
            "channels": {name: asdict(tally) for name, tally in sorted(self.channels.items())},
            "items": sum(t.items for t in self.channels.values()),
            "bytes": sum(t.bytes for t in self.channels.values()),
            "hits": len(self.hits),
        }


# --- files --------------------------------------------------------------------------


@dataclass
class FileScan:
    found: dict[str, set[str]]
    files: int
    bytes: int


def file_scan(
    roots: Iterable[Path], sentinels: list[str], newer_than: float = 0.0, skip: Iterable[Path] = ()
) -> FileScan:
    """Sentinels found in files under ``roots`` (modified after ``newer_than``, not under ``skip``).

    Runs in a child process: opening and closing a live SQLite file here would
    drop this process's POSIX locks on it (SQLite's documented pitfall) and let
    a worker corrupt the shared test database.
    """
    request = json.dumps(
        {
            "roots": [str(r) for r in roots],
            "sentinels": sentinels,
            "newer_than": newer_than,
            "skip": [str(s) for s in skip],
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "chaos.exposure"],
        input=request,
        capture_output=True,
        text=True,
        check=True,
        cwd=CHECKOUT,
        env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
    )
    answer = json.loads(result.stdout)
    found = {path: set(hits) for path, hits in answer["found"].items()}
    return FileScan(found, answer["files"], answer["bytes"])


def scan_files(roots: Iterable[Path], sentinels: list[str], newer_than: float = 0.0) -> dict[str, set[str]]:
    """Sentinels found in files under ``roots`` (modified after ``newer_than``), by path."""
    return file_scan(roots, sentinels, newer_than).found


def _files_under(root: Path) -> Iterator[Path]:
    """Files under ``root``; a checkout inside it (a clone under /tmp, say) is left out."""
    if root.is_file():
        yield root
        return
    skip_checkout = not root.resolve().is_relative_to(CHECKOUT)
    for directory, subdirs, files in os.walk(root):
        if skip_checkout:
            subdirs[:] = [d for d in subdirs if (Path(directory) / d).resolve() != CHECKOUT]
        for name in files:
            yield Path(directory) / name


def _file_scan_here(
    roots: Iterable[Path], sentinels: list[str], newer_than: float, skip: list[Path]
) -> dict[str, Any]:
    finder = SentinelFinder(sentinels)
    found: dict[str, list[str]] = {}
    files = size = 0
    seen: set[Path] = set()
    for root in roots:
        if not root.exists():
            continue
        for path in _files_under(root):
            if path in seen or any(path == s or path.is_relative_to(s) for s in skip):
                continue
            try:
                if not path.is_file() or path.stat().st_mtime < newer_than:
                    continue
                seen.add(path)
                data = path.read_bytes()
            except OSError:
                continue  # gone meanwhile (a temp file), or unreadable
            files += 1
            size += len(data)
            hits = finder.find(data)
            if hits:
                found[str(path)] = sorted(hits)
    return {"found": found, "files": files, "bytes": size}


# --- the database -------------------------------------------------------------------


def _as_bytes(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


@dataclass
class DatabaseScan:
    found: dict[str, set[str]]
    tables: int
    columns: int
    rows: int
    bytes: int


def database_scan(sentinels: list[str]) -> DatabaseScan:
    """Sentinels in every column of every table (not only models'), binary and compressed values too.

    On SQLite the raw files (free pages, the WAL) are read as well, by path
    ``<file>`` in ``found``.
    """
    from django.db import connection

    finder = SentinelFinder(sentinels)
    found: dict[str, set[str]] = {}
    tables = columns = rows = size = 0
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for table in sorted(connection.introspection.table_names(cursor)):
            cursor.execute(f"SELECT * FROM {quote(table)}")  # noqa: S608 - names from the catalog
            names = [column[0] for column in cursor.description]
            tables += 1
            columns += len(names)
            for row in cursor.fetchall():
                rows += 1
                for name, value in zip(names, row, strict=True):
                    if value is None:
                        continue
                    data = _as_bytes(value)
                    size += len(data)
                    hits = finder.find(data)
                    if hits:
                        found.setdefault(f"{table}.{name}", set()).update(hits)
    if connection.vendor == "sqlite":
        name = str(connection.settings_dict["NAME"])
        raw = file_scan([Path(name + suffix) for suffix in ("", "-wal", "-journal")], sentinels)
        found.update(raw.found)
        size += raw.bytes
    return DatabaseScan(found, tables, columns, rows, size)


def scan_database(sentinels: list[str]) -> dict[str, set[str]]:
    """Sentinels found in the database, by ``table.column`` (and raw SQLite file)."""
    return database_scan(sentinels).found


def pg_dump(timeout: float = 120) -> bytes | None:
    """The current Postgres database's data as ``pg_dump`` writes it (None: not Postgres, or no pg_dump)."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return None
    params = connection.get_connection_params()
    env = {**os.environ}
    if params.get("password"):
        env["PGPASSWORD"] = str(params["password"])
    command = ["pg_dump", "--data-only", "--no-owner", "--dbname", str(params.get("dbname"))]
    for flag, key in (("--host", "host"), ("--port", "port"), ("--username", "user")):
        if params.get(key):
            command += [flag, str(params[key])]
    try:
        result = subprocess.run(command, capture_output=True, check=True, env=env, timeout=timeout)
    except (OSError, subprocess.CalledProcessError):
        return None
    return result.stdout


def dump_sections(dump: bytes) -> Iterator[tuple[str, bytes]]:
    """A ``pg_dump``'s text cut at each ``COPY`` block, named ``pg_dump <table>``."""
    name, start = "pg_dump", 0
    for match in re.finditer(rb"^COPY (\S+)", dump, re.MULTILINE):
        yield name, dump[start : match.start()]
        name, start = f"pg_dump {match.group(1).decode(errors='replace')}", match.start()
    yield name, dump[start:]


# --- Redis --------------------------------------------------------------------------


def _redis_values(client: Any, key: bytes) -> list[Any]:
    """All that a key holds: the value, or every member (and field name) of a collection."""
    kind = client.type(key).decode()
    if kind == "string":
        return [client.get(key)]
    if kind == "list":
        return list(client.lrange(key, 0, -1))
    if kind == "hash":
        return [part for item in client.hgetall(key).items() for part in item]
    if kind == "set":
        return list(client.smembers(key))
    if kind == "zset":
        return list(client.zrange(key, 0, -1))
    if kind == "stream":
        return [part for _id, entry in client.xrange(key) for item in entry.items() for part in item]
    return []


def redis_items(url: str) -> Iterator[tuple[str, bytes]]:
    """Every key of the Redis database at ``url``, and each value or member on its own (so each unwraps)."""
    import redis

    client: Any = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(count=500):
            name = key.decode(errors="replace")
            yield name, key
            for index, value in enumerate(_redis_values(client, key)):
                if value is not None:
                    yield f"{name}[{index}]", _as_bytes(value)
    finally:
        client.close()


# --- S3 buckets ---------------------------------------------------------------------


def bucket_items(client: Any, bucket: str, prefix: str = "") -> Iterator[tuple[str, bytes]]:
    """Every stored version of every object under ``prefix`` (old versions too), as ``s3://bucket/key@version``."""
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for entry in page.get("Versions", []):
            version = entry.get("VersionId") or "null"
            extra = {"VersionId": version} if version != "null" else {}
            body = client.get_object(Bucket=bucket, Key=entry["Key"], **extra)["Body"]
            yield f"s3://{bucket}/{entry['Key']}@{version}", body.read()


def unfinished_uploads(client: Any, bucket: str, prefix: str = "") -> list[str]:
    """Multipart uploads begun and never completed nor aborted, as ``s3://bucket/key (upload id)``.

    S3 serves no bytes of their parts, so a scan cannot read them: such an upload is a leak of its
    own (ciphertext, but billed and kept until a lifecycle rule or a sweep aborts it).
    """
    return [
        f"s3://{bucket}/{upload['Key']} ({upload['UploadId']})"
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=bucket, Prefix=prefix)
        for upload in page.get("Uploads", [])
    ]


def configured_buckets() -> list[tuple[Any, str, str]]:
    """(client, bucket, prefix) of each S3 location the settings name: blobs and KMS KEK records.

    Empty when blobs and keys stay on the local disk (the directories are scanned as files).
    """
    from django.conf import settings

    urls = [url for url in (settings.BLOB_URL, settings.KMS_KEK_URL) if url]
    if not urls:
        return []
    from common.s3 import S3BlobStore, S3Location

    places = []
    for url in dict.fromkeys(urls):
        location = S3Location.parse(url)
        store = S3BlobStore(location, endpoint_url=settings.S3_ENDPOINT_URL, region=settings.AWS_REGION)
        places.append((store.client, location.bucket, location.prefix))
    return places


def scan_buckets(scan: ExposureScan, channel: str = "bucket") -> int:
    """Scan every object version in the configured S3 locations into ``scan``; returns how many were read."""
    read = 0
    for client, bucket, prefix in configured_buckets():
        for place, data in bucket_items(client, bucket, prefix):
            scan.scan(channel, place, data)
            read += 1
    return read


# --- the places a run leaves files in -----------------------------------------------


def places_to_scan() -> list[Path]:
    """Where platform data can land on disk: blobs, keys, audit exports, the broker, test output, temp."""
    from django.conf import settings

    return [
        Path(settings.BLOB_DIR),
        Path(settings.KEY_DIR),
        Path(settings.AUDIT_EXPORT_DIR),
        Path(settings.BROKER_DIR),
        Path(settings.VAR_DIR) / "test-output",
        Path(tempfile.gettempdir()),
    ]


if __name__ == "__main__":
    args = json.loads(sys.stdin.read())
    roots, skip = [Path(r) for r in args["roots"]], [Path(s) for s in args.get("skip", [])]
    print(json.dumps(_file_scan_here(roots, args["sentinels"], args["newer_than"], skip)))
