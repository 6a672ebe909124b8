"""The key provider: per-version key-encryption keys (KEKs) under versioned master keys.

Hierarchy: master key (versioned, rotated) wraps each dataset version's KEK;
the KEK wraps the version's data key, which the database stores wrapped.
Destroying a version's KEK file is the crypto-shred: the wrapped data key in
the database (and in every backup of it) no longer opens. The local provider
keeps keys as files (directory 0700, files 0600); a KMS or Vault provider
implements the same methods.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol

from django.conf import settings

from custody.crypto import KEY_BYTES, unwrap_key, wrap_key
from custody.exceptions import KeyUnavailable


class KekProvider(Protocol):
    def kek_create(self, *, version_id: int) -> None: ...
    def wrap_data_key(self, *, version_id: int, data_key: bytes, key_version: int) -> bytes: ...
    def unwrap_data_key(self, *, version_id: int, wrapped: bytes, key_version: int) -> bytes: ...
    def kek_disable(self, *, version_id: int) -> None: ...
    def kek_enable(self, *, version_id: int) -> None: ...
    def kek_destroy(self, *, version_id: int) -> None: ...
    def kek_state(self, *, version_id: int) -> str: ...
    def master_rotate(self) -> int: ...
    def kek_rewrap(self, *, version_id: int) -> int: ...


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


class LocalKekProvider:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    # --- master keys -------------------------------------------------------------
    def _dir(self) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        return self.directory

    def master_current(self) -> int:
        pointer = self._dir() / "master-current"
        if not pointer.exists():
            return self.master_rotate()
        return int(pointer.read_text())

    def _master(self, number: int) -> bytes:
        path = self._dir() / f"master-{number}.key"
        if not path.exists():
            raise KeyUnavailable(f"Master key version {number} is missing.", code="custody.master_missing")
        return path.read_bytes()

    def master_rotate(self) -> int:
        """Create a new master key version and make it current; old versions stay to unwrap."""
        pointer = self._dir() / "master-current"
        number = (int(pointer.read_text()) + 1) if pointer.exists() else 1
        _write_private(self._dir() / f"master-{number}.key", os.urandom(KEY_BYTES))
        _write_private(pointer, str(number).encode())
        return number

    # --- per-version KEKs --------------------------------------------------------------
    def _kek_path(self, version_id: int) -> Path:
        return self._dir() / f"kek-{int(version_id)}.json"

    def _kek_record(self, version_id: int) -> dict[str, object]:
        path = self._kek_path(version_id)
        if not path.exists():
            raise KeyUnavailable(
                f"The key of dataset version {version_id} was destroyed or never existed.",
                code="custody.key_destroyed",
            )
        record: dict[str, object] = json.loads(path.read_text())
        return record

    def _kek(self, version_id: int) -> bytes:
        record = self._kek_record(version_id)
        if record["state"] != "active":
            raise KeyUnavailable(
                f"The key of dataset version {version_id} is disabled.", code="custody.key_disabled"
            )
        master = int(str(record["master"]))
        return unwrap_key(
            wrapping_key=self._master(master),
            wrapped=bytes.fromhex(str(record["wrapped"])),
            context=f"sealroom/kek|version={version_id}".encode(),
        )

    def _save_kek(self, version_id: int, kek: bytes, master: int, state: str) -> None:
        wrapped = wrap_key(
            wrapping_key=self._master(master), key=kek, context=f"sealroom/kek|version={version_id}".encode()
        )
        record = {"version": version_id, "master": master, "state": state, "wrapped": wrapped.hex()}
        _write_private(self._kek_path(version_id), json.dumps(record).encode())

    def kek_create(self, *, version_id: int) -> None:
        if self._kek_path(version_id).exists():
            return
        self._save_kek(version_id, os.urandom(KEY_BYTES), self.master_current(), "active")

    def kek_state(self, *, version_id: int) -> str:
        if not self._kek_path(version_id).exists():
            return "destroyed"
        return str(self._kek_record(version_id)["state"])

    def _set_state(self, version_id: int, state: str) -> None:
        record = self._kek_record(version_id)
        record["state"] = state
        _write_private(self._kek_path(version_id), json.dumps(record).encode())

    def kek_disable(self, *, version_id: int) -> None:
        self._set_state(version_id, "disabled")

    def kek_enable(self, *, version_id: int) -> None:
        self._set_state(version_id, "active")

    def kek_destroy(self, *, version_id: int) -> None:
        """Overwrite and delete the KEK: every data key it wrapped is gone for good."""
        path = self._kek_path(version_id)
        if path.exists():
            size = path.stat().st_size
            with open(path, "r+b") as out:
                out.write(os.urandom(size))
                out.flush()
                os.fsync(out.fileno())
            path.unlink()

    def kek_rewrap(self, *, version_id: int) -> int:
        """Rewrap the version's KEK under the current master key; returns that master version."""
        record = self._kek_record(version_id)
        current = self.master_current()
        if int(str(record["master"])) != current:
            kek = unwrap_key(
                wrapping_key=self._master(int(str(record["master"]))),
                wrapped=bytes.fromhex(str(record["wrapped"])),
                context=f"sealroom/kek|version={version_id}".encode(),
            )
            self._save_kek(version_id, kek, current, str(record["state"]))
        return current

    # --- data keys ---------------------------------------------------------------------
    @staticmethod
    def _dek_context(version_id: int, key_version: int) -> bytes:
        return f"sealroom/dek|version={version_id}|key_version={key_version}".encode()

    def wrap_data_key(self, *, version_id: int, data_key: bytes, key_version: int) -> bytes:
        return wrap_key(
            wrapping_key=self._kek(version_id),
            key=data_key,
            context=self._dek_context(version_id, key_version),
        )

    def unwrap_data_key(self, *, version_id: int, wrapped: bytes, key_version: int) -> bytes:
        return unwrap_key(
            wrapping_key=self._kek(version_id),
            wrapped=wrapped,
            context=self._dek_context(version_id, key_version),
        )

    def check(self) -> None:
        self._master(self.master_current())


def kek_provider() -> LocalKekProvider:
    if settings.KEY_PROVIDER != "local":
        raise ValueError(f"unknown SEALROOM_KEY_PROVIDER {settings.KEY_PROVIDER!r}")
    return LocalKekProvider(settings.KEY_DIR / "custody")
