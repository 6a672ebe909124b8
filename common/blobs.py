"""Blob storage behind one interface: a local directory (the default) or an S3-compatible bucket.

``SEALROOM_BLOB_URL=s3://bucket/prefix`` selects ``common.s3.S3BlobStore``;
without it blobs are files under ``SEALROOM_BLOB_DIR``. Callers seal what they
store: a blob store only ever holds ciphertext.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import BinaryIO, Protocol

from django.conf import settings


class BlobStore(Protocol):
    def put(self, key: str, data: BinaryIO) -> int: ...
    def open(self, key: str) -> BinaryIO: ...
    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def check(self) -> None: ...


class LocalBlobStore:
    """Blobs as files under one directory; writes are atomic (temp file + rename + fsync)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"blob key escapes the store: {key!r}")
        return path

    def put(self, key: str, data: BinaryIO) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        size = 0
        with open(tmp, "wb") as out:
            while chunk := data.read(1 << 20):
                out.write(chunk)
                size += len(chunk)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        return size

    def open(self, key: str) -> BinaryIO:
        return open(self._path(key), "rb")

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def check(self) -> None:
        """Write, read back and delete a probe file. :raises OSError: the store is unusable."""
        self.root.mkdir(parents=True, exist_ok=True)
        probe = self.root / f".health-{uuid.uuid4().hex}"
        probe.write_bytes(b"ok")
        try:
            if probe.read_bytes() != b"ok":
                raise OSError("blob store read back different bytes")
        finally:
            probe.unlink(missing_ok=True)


def blob_store() -> BlobStore:
    """The configured store. :raises ValueError: an unknown backend."""
    if settings.BLOB_BACKEND == "s3":
        from common.s3 import s3_blob_store_from_settings

        return s3_blob_store_from_settings()
    if settings.BLOB_BACKEND != "local":
        raise ValueError(f"unknown SEALROOM_BLOB_BACKEND {settings.BLOB_BACKEND!r}")
    return LocalBlobStore(settings.BLOB_DIR)
