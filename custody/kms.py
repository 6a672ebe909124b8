"""The KMS key provider: envelope encryption under a master key kept in AWS KMS (or a KMS API).

Map: the master key is ``SEALROOM_KMS_KEY_ID`` and never leaves KMS. Each
named KEK (``version-<id>``, ``quarantine-<id>``) is a KMS data key made by
``GenerateDataKeyWithoutPlaintext`` and kept only as KMS ciphertext, in a KEK
record (``custody-keys/kek-<name>.json``: master version, state, wrapped KEK)
in the blob store; the KEK wraps the version's data keys exactly as the local
provider's does (``custody.crypto.wrap_key``, same contexts). Using a KEK is a
KMS ``Decrypt`` with the encryption context ``sealroom:kek=<name>``.
Crypto-shred = delete the KEK record, every stored version of it included:
the data keys in the database (and its backups) were wrapped by a KEK that
exists nowhere any more, and KMS alone cannot recreate it. Master rotation is
KMS's on-demand rotation (``RotateKeyOnDemand``), counted in
``custody-keys/master.json``; ``kek_rewrap`` is a KMS ``ReEncrypt`` onto the
current key material. docs/operations.md "S3 and KMS" has the why.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]  # untyped

from common.blobs import BlobStore
from common.s3 import (
    PROBE_TIMEOUT_SECONDS,
    S3BlobStore,
    S3Location,
    ServiceUnavailable,
    aws_client,
    describe_aws_error,
)
from custody.crypto import unwrap_key, wrap_key
from custody.exceptions import KeyUnavailable
from custody.keys import KEY_NAME, dek_context

RECORD_PREFIX = "custody-keys/"
# Decrypted KEKs are kept in memory briefly, so a batch of unwraps costs one KMS call.
# The record (state included) is read on every use, so disable and destroy act at once.
KEK_CACHE_SECONDS = 300.0
KEK_CACHE_SIZE = 256
_cache: dict[tuple[str, bytes], tuple[float, bytes]] = {}
_cache_lock = threading.Lock()


def kek_context(name: str) -> dict[str, str]:
    """KMS encryption context binding a wrapped KEK to its name (a swapped record will not unwrap)."""
    return {"sealroom:kek": name}


class KmsKekProvider:
    def __init__(
        self,
        *,
        key_id: str,
        records: BlobStore,
        endpoint_url: str = "",
        region: str = "us-east-1",
        max_attempts: int = 5,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        if not key_id:
            raise ServiceUnavailable("SEALROOM_KEY_PROVIDER=kms needs SEALROOM_KMS_KEY_ID (the master key)")
        self.key_id = key_id
        self.records = records
        self.endpoint_url = endpoint_url
        self._client_args: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "region": region,
            "credentials": credentials,
        }
        self.kms = aws_client("kms", max_attempts=max_attempts, **self._client_args)

    # --- records in the blob store -----------------------------------------------------------
    def _read(self, key: str) -> dict[str, Any] | None:
        try:
            with self.records.open(RECORD_PREFIX + key) as handle:
                record: dict[str, Any] = json.loads(handle.read())
        except FileNotFoundError:
            return None
        return record

    def _write(self, key: str, record: dict[str, Any]) -> None:
        self.records.put(RECORD_PREFIX + key, io.BytesIO(json.dumps(record).encode()))

    @staticmethod
    def _kek_key(name: str) -> str:
        if not KEY_NAME.fullmatch(name):
            raise ValueError(f"bad key name {name!r}")
        return f"kek-{name}.json"

    def _kek_record(self, name: str) -> dict[str, Any]:
        record = self._read(self._kek_key(name))
        if record is None:
            raise KeyUnavailable(
                f"The key {name} was destroyed or never existed.", code="custody.key_destroyed"
            )
        return record

    # --- master key ----------------------------------------------------------------------------
    def _master_record(self) -> dict[str, Any]:
        record = self._read("master.json")
        if record is None:
            record = {"current": 1, "keys": {"1": self._key_arn()}}
            self._write("master.json", record)
        return record

    def _key_arn(self) -> str:
        return str(self.kms.describe_key(KeyId=self.key_id)["KeyMetadata"]["Arn"])

    def master_current(self) -> int:
        return int(self._master_record()["current"])

    def master_rotate(self) -> int:
        """Rotate the KMS key's material (or move to a newly configured key); returns the new version.

        Old material stays in KMS, so KEKs wrapped under earlier versions keep working until rewrapped.
        """
        if self._read("master.json") is None:
            return self.master_current()
        record = self._master_record()
        arn = self._key_arn()
        if record["keys"][str(record["current"])] == arn:
            self.kms.rotate_key_on_demand(KeyId=self.key_id)
        number = int(record["current"]) + 1
        record["current"] = number
        record["keys"][str(number)] = arn
        self._write("master.json", record)
        return number

    # --- per-version KEKs ---------------------------------------------------------------------------
    def kek_create(self, *, name: str) -> None:
        key = self._kek_key(name)
        if self._read(key) is not None:
            return
        master = self.master_current()
        made = self.kms.generate_data_key_without_plaintext(
            KeyId=self.key_id, KeySpec="AES_256", EncryptionContext=kek_context(name)
        )
        wrapped = base64.b64encode(made["CiphertextBlob"]).decode()
        self._write(key, {"name": name, "master": master, "state": "active", "wrapped": wrapped})

    def _kek(self, name: str) -> bytes:
        record = self._kek_record(name)
        if record["state"] != "active":
            raise KeyUnavailable(f"The key {name} is disabled.", code="custody.key_disabled")
        wrapped = base64.b64decode(record["wrapped"])
        now = time.monotonic()
        with _cache_lock:
            hit = _cache.get((name, wrapped))
        if hit is not None and now - hit[0] < KEK_CACHE_SECONDS:
            return hit[1]
        try:
            kek = bytes(
                self.kms.decrypt(CiphertextBlob=wrapped, EncryptionContext=kek_context(name))["Plaintext"]
            )
        except ClientError as exc:
            raise KeyUnavailable(
                f"KMS would not unwrap the key {name}: "
                + describe_aws_error(exc, service="KMS", endpoint=self.endpoint_url, what=self.key_id),
                code="custody.key_unavailable",
            ) from None
        with _cache_lock:
            if len(_cache) >= KEK_CACHE_SIZE:
                _cache.clear()
            _cache[(name, wrapped)] = (now, kek)
        return kek

    def kek_state(self, *, name: str) -> str:
        record = self._read(self._kek_key(name))
        return "destroyed" if record is None else str(record["state"])

    def kek_master(self, *, name: str) -> int | None:
        record = self._read(self._kek_key(name))
        return None if record is None else int(record["master"])

    def _set_state(self, name: str, state: str) -> None:
        record = self._kek_record(name)
        record["state"] = state
        self._write(self._kek_key(name), record)

    def kek_disable(self, *, name: str) -> None:
        self._set_state(name, "disabled")

    def kek_enable(self, *, name: str) -> None:
        self._set_state(name, "active")

    def kek_destroy(self, *, name: str) -> None:
        """Delete the KEK record, every stored version of it: every data key it wrapped is gone."""
        self.records.delete(RECORD_PREFIX + self._kek_key(name))
        with _cache_lock:
            for cached in [k for k in _cache if k[0] == name]:
                del _cache[cached]

    def kek_rewrap(self, *, name: str) -> int:
        """ReEncrypt the KEK onto the current master key material; returns that master version."""
        record = self._kek_record(name)
        current = self.master_current()
        if int(record["master"]) != current:
            moved = self.kms.re_encrypt(
                CiphertextBlob=base64.b64decode(record["wrapped"]),
                SourceEncryptionContext=kek_context(name),
                DestinationKeyId=self.key_id,
                DestinationEncryptionContext=kek_context(name),
            )
            record["wrapped"] = base64.b64encode(moved["CiphertextBlob"]).decode()
            record["master"] = current
            self._write(self._kek_key(name), record)
        return current

    # --- data keys ------------------------------------------------------------------------------
    def wrap_data_key(self, *, name: str, data_key: bytes, key_version: int) -> bytes:
        return wrap_key(wrapping_key=self._kek(name), key=data_key, context=dek_context(name, key_version))

    def unwrap_data_key(self, *, name: str, wrapped: bytes, key_version: int) -> bytes:
        return unwrap_key(
            wrapping_key=self._kek(name), wrapped=wrapped, context=dek_context(name, key_version)
        )

    def check(self) -> None:
        """The master key is enabled and wraps and unwraps a probe key; the record store answers.

        :raises ServiceUnavailable: naming the unreachable endpoint, the rejected credentials, or
            the missing or disabled key.
        """
        probe = aws_client(
            "kms",
            max_attempts=1,
            connect_timeout=PROBE_TIMEOUT_SECONDS,
            read_timeout=PROBE_TIMEOUT_SECONDS * 2,
            **self._client_args,
        )
        context = {"sealroom:probe": "health"}
        try:
            state = probe.describe_key(KeyId=self.key_id)["KeyMetadata"]["KeyState"]
            if state != "Enabled":
                raise ServiceUnavailable(f"KMS key {self.key_id} is {state}, not Enabled")
            made = probe.generate_data_key(KeyId=self.key_id, KeySpec="AES_256", EncryptionContext=context)
            back = probe.decrypt(CiphertextBlob=made["CiphertextBlob"], EncryptionContext=context)
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailable(
                describe_aws_error(exc, service="KMS", endpoint=self.endpoint_url, what=self.key_id)
            ) from None
        if back["Plaintext"] != made["Plaintext"]:
            raise ServiceUnavailable(f"KMS key {self.key_id} unwrapped a different key")
        self.records.check()


def kms_kek_provider_from_settings() -> KmsKekProvider:
    from django.conf import settings

    from common.blobs import blob_store

    records: BlobStore = blob_store()
    if settings.KMS_KEK_URL:
        records = S3BlobStore(
            S3Location.parse(settings.KMS_KEK_URL),
            endpoint_url=settings.S3_ENDPOINT_URL,
            region=settings.AWS_REGION,
            max_attempts=settings.AWS_MAX_ATTEMPTS,
        )
    return KmsKekProvider(
        key_id=settings.KMS_KEY_ID,
        records=records,
        endpoint_url=settings.KMS_ENDPOINT_URL,
        region=settings.AWS_REGION,
        max_attempts=settings.AWS_MAX_ATTEMPTS,
    )
