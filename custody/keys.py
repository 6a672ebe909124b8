"""The key provider: per-version key-encryption keys (KEKs) under versioned master keys.

Hierarchy: master key (versioned, rotated) wraps each named KEK (``version-<id>``
for a dataset version, ``quarantine-<id>`` for a contribution's raw upload);
the KEK wraps the version's data key, which the database stores wrapped.
Destroying a version's KEK file is the crypto-shred: the wrapped data key in
the database (and in every backup of it) no longer opens. The local provider
(the default) keeps keys as files (directory 0700, files 0600);
``SEALROOM_KEY_PROVIDER=kms`` selects ``custody.kms.KmsKekProvider`` (master key
in KMS), and a Vault transit provider would implement the same methods.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Protocol

from django.conf import settings

from custody.crypto import KEY_BYTES, unwrap_key, wrap_key
from custody.exceptions import KeyUnavailable

KEY_NAME = re.compile(r"[a-z]+-[0-9]+")


def dek_context(name: str, key_version: int) -> bytes:
    """The wrap context of a data key: its KEK's name and its key version."""
    return f"sealroom/dek|{name}|key_version={key_version}".encode()


class KekProvider(Protocol):
    def master_current(self) -> int: ...
    def check(self) -> None: ...
    def kek_create(self, *, name: str) -> None: ...
    def wrap_data_key(self, *, name: str, data_key: bytes, key_version: int) -> bytes: ...
    def unwrap_data_key(self, *, name: str, wrapped: bytes, key_version: int) -> bytes: ...
    def kek_disable(self, *, name: str) -> None: ...
    def kek_enable(self, *, name: str) -> None: ...
    def kek_destroy(self, *, name: str) -> None: ...
    def kek_state(self, *, name: str) -> str: ...
    def kek_master(self, *, name: str) -> int | None: ...
    def master_rotate(self) -> int: ...
    def kek_rewrap(self, *, name: str) -> int: ...


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
    def _kek_path(self, name: str) -> Path:
        if not KEY_NAME.fullmatch(name):
            raise ValueError(f"bad key name {name!r}")
        return self._dir() / f"kek-{name}.json"

    def _kek_record(self, name: str) -> dict[str, object]:
        path = self._kek_path(name)
        if not path.exists():
            raise KeyUnavailable(
                f"The key {name} was destroyed or never existed.",
                code="custody.key_destroyed",
            )
        record: dict[str, object] = json.loads(path.read_text())
        return record

    def _kek(self, name: str) -> bytes:
        record = self._kek_record(name)
        if record["state"] != "active":
            raise KeyUnavailable(f"The key {name} is disabled.", code="custody.key_disabled")
        master = int(str(record["master"]))
        return unwrap_key(
            wrapping_key=self._master(master),
            wrapped=bytes.fromhex(str(record["wrapped"])),
            context=f"sealroom/kek|{name}".encode(),
        )

    def _save_kek(self, name: str, kek: bytes, master: int, state: str) -> None:
        wrapped = wrap_key(
            wrapping_key=self._master(master), key=kek, context=f"sealroom/kek|{name}".encode()
        )
        record = {"name": name, "master": master, "state": state, "wrapped": wrapped.hex()}
        _write_private(self._kek_path(name), json.dumps(record).encode())

    def kek_create(self, *, name: str) -> None:
        if self._kek_path(name).exists():
            return
        self._save_kek(name, os.urandom(KEY_BYTES), self.master_current(), "active")

    def kek_state(self, *, name: str) -> str:
        if not self._kek_path(name).exists():
            return "destroyed"
        return str(self._kek_record(name)["state"])

    def kek_master(self, *, name: str) -> int | None:
        """The master key version the KEK is wrapped under (None once destroyed)."""
        if not self._kek_path(name).exists():
            return None
        return int(str(self._kek_record(name)["master"]))

    def _set_state(self, name: str, state: str) -> None:
        record = self._kek_record(name)
        record["state"] = state
        _write_private(self._kek_path(name), json.dumps(record).encode())

    def kek_disable(self, *, name: str) -> None:
        self._set_state(name, "disabled")

    def kek_enable(self, *, name: str) -> None:
        self._set_state(name, "active")

    def kek_destroy(self, *, name: str) -> None:
        """Overwrite and delete the KEK: every data key it wrapped is gone for good."""
        path = self._kek_path(name)
        if path.exists():
            size = path.stat().st_size
            with open(path, "r+b") as out:
                out.write(os.urandom(size))
                out.flush()
                os.fsync(out.fileno())
            path.unlink()

    def kek_rewrap(self, *, name: str) -> int:
        """Rewrap the version's KEK under the current master key; returns that master version."""
        record = self._kek_record(name)
        current = self.master_current()
        if int(str(record["master"])) != current:
            kek = unwrap_key(
                wrapping_key=self._master(int(str(record["master"]))),
                wrapped=bytes.fromhex(str(record["wrapped"])),
                context=f"sealroom/kek|{name}".encode(),
            )
            self._save_kek(name, kek, current, str(record["state"]))
        return current

    # --- data keys ---------------------------------------------------------------------
    _dek_context = staticmethod(dek_context)

    def wrap_data_key(self, *, name: str, data_key: bytes, key_version: int) -> bytes:
        return wrap_key(
            wrapping_key=self._kek(name),
            key=data_key,
            context=self._dek_context(name, key_version),
        )

    def unwrap_data_key(self, *, name: str, wrapped: bytes, key_version: int) -> bytes:
        return unwrap_key(
            wrapping_key=self._kek(name),
            wrapped=wrapped,
            context=self._dek_context(name, key_version),
        )

    def check(self) -> None:
        self._master(self.master_current())


def kek_provider() -> KekProvider:
    """The configured provider. :raises ValueError: an unknown provider."""
    if settings.KEY_PROVIDER == "kms":
        from custody.kms import kms_kek_provider_from_settings

        return kms_kek_provider_from_settings()
    if settings.KEY_PROVIDER != "local":
        raise ValueError(f"unknown SEALROOM_KEY_PROVIDER {settings.KEY_PROVIDER!r}")
    return LocalKekProvider(settings.KEY_DIR / "custody")


def kek_check() -> None:
    """The configured KEK provider works (``/healthz`` and the start-up check run it)."""
    kek_provider().check()
