"""A scanner for plaintext at rest: looks for sentinel strings in every place data can land."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.db import connection


def _variants(data: bytes) -> Iterator[bytes]:
    """The bytes, and what they inflate to if they are gzip or zlib streams."""
    yield data
    for opener in (gzip.decompress, zlib.decompress):
        try:
            yield opener(data)
        except Exception:  # noqa: BLE001,S112 - not compressed: nothing more to see
            continue


def _hits(data: bytes, sentinels: Iterable[str]) -> set[str]:
    found = set()
    for variant in _variants(data):
        for sentinel in sentinels:
            for encoding in ("utf-8", "utf-16-le"):
                if sentinel.encode(encoding) in variant:
                    found.add(sentinel)
            if sentinel.encode("unicode_escape") in variant:
                found.add(sentinel)
    return found


def scan_files(roots: Iterable[Path], sentinels: list[str], newer_than: float = 0.0) -> dict[str, set[str]]:
    """Sentinels found in files under ``roots`` (modified after ``newer_than``).

    Runs in a child process: opening and closing a live SQLite file here would
    drop this process's POSIX locks on it (SQLite's documented pitfall) and let
    a worker corrupt the shared test database.
    """
    request = json.dumps({"roots": [str(r) for r in roots], "sentinels": sentinels, "newer_than": newer_than})
    result = subprocess.run(
        [sys.executable, "-m", "tests.custody.scanner"],
        input=request,
        capture_output=True,
        text=True,
        check=True,
        cwd=settings.BASE_DIR,
        env={k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
    )
    return {path: set(hits) for path, hits in json.loads(result.stdout).items()}


# The repository checkout: its sources (these tests name their sentinels) are not platform output.
CHECKOUT = Path(__file__).resolve().parents[2]


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


def _scan_files_here(roots: Iterable[Path], sentinels: list[str], newer_than: float) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for root in roots:
        if not root.exists():
            continue
        for path in _files_under(root):
            try:
                if not path.is_file() or path.stat().st_mtime < newer_than:
                    continue
                hits = _hits(path.read_bytes(), sentinels)
            except OSError:
                continue
            if hits:
                found[str(path)] = hits
    return found


def scan_database(sentinels: list[str]) -> dict[str, set[str]]:
    """Sentinels found in any column of any row of any model (binary columns included)."""
    found: dict[str, set[str]] = {}
    for model in apps.get_models():
        for row in model._default_manager.all().values_list():
            blob = b"".join(bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode() for v in row)
            hits = _hits(blob, sentinels)
            if hits:
                found.setdefault(model._meta.label, set()).update(hits)
    if connection.vendor == "sqlite":
        # The raw file too (free pages, the WAL), read from a child process.
        name = str(connection.settings_dict["NAME"])
        found.update(scan_files([Path(name + s) for s in ("", "-wal", "-journal")], sentinels))
    return found


def places_to_scan() -> list[Path]:
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
    hits = _scan_files_here([Path(r) for r in args["roots"]], args["sentinels"], args["newer_than"])
    print(json.dumps({path: sorted(found) for path, found in hits.items()}))
