"""Artifacts kept in custody: trained weights that may not leave, encrypted under their own key.

A job whose license keeps the weights in custody stores its output here; only
custody touches the keys. Each artifact gets a fresh data key, wrapped by the
version's KEK in the slot that survives data-key rotation (``key_version=0``,
as the pseudonym secret), and stored in front of the ciphertext. So the
artifact follows the version's KEK and nothing else:

- master-key rotation rewraps the KEK, and the artifact opens under the new
  master alone, like the shards;
- data-key rotation re-encrypts the shards under a new version data key and
  forgets the old one; the artifact never depended on it (under the old
  format, sealed with the version data key, it was left unreadable);
- the crypto-shred destroys the KEK, and the artifact's key with it: no copy
  of the blob opens again. (Takedown, which a shred requires, already deletes
  the blobs: training's ``artifacts_withheld_destroy``.)

The ciphertext binds the artifact's identity (version, name) as associated
data, so a blob moved to another name or version does not decrypt.
"""

from __future__ import annotations

import io
import struct

from common.audit import audit_record
from common.blobs import blob_store
from custody.crypto import blob_open, blob_seal, new_data_key, sha256_hex
from custody.exceptions import IntegrityFailure
from custody.keys import kek_provider
from custody.models import DatasetVersion
from custody.services._keys import version_data_key

# "SRAK" + the wrapped key's length (2 bytes, big-endian) + the wrapped key + the sealed archive.
ENVELOPE_MAGIC = b"SRAK"
# The KEK's slot for keys that outlive data-key rotation (custody.services._keys).
ARTIFACT_KEY_SLOT = 0


def _aad(version: DatasetVersion, name: str) -> bytes:
    return f"sealroom/artifact/v2|version={version.pk}|name={name}".encode()


def _legacy_aad(version: DatasetVersion, name: str) -> bytes:
    return f"sealroom/artifact/v1|version={version.pk}|name={name}|key_version={version.key_version}".encode()


def artifact_blob_key(version: DatasetVersion, name: str) -> str:
    return f"artifacts/v{version.pk}/{name}.sealed"


def artifact_seal(*, version: DatasetVersion, name: str, data: bytes) -> str:
    """Encrypt ``data`` under a new key wrapped by the version's KEK and store it; returns the blob key.

    :raises KeyUnavailable: the version's key is disabled or destroyed.
    :raises ValueError: ``name`` is not a plain name.
    """
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"artifact name must be plain: {name!r}")
    key = new_data_key()
    wrapped = kek_provider().wrap_data_key(name=version.key_name, data_key=key, key_version=ARTIFACT_KEY_SLOT)
    sealed = blob_seal(key=key, aad=_aad(version, name), plaintext=data)
    blob_key = artifact_blob_key(version, name)
    blob_store().put(
        blob_key, io.BytesIO(ENVELOPE_MAGIC + struct.pack(">H", len(wrapped)) + wrapped + sealed)
    )
    audit_record(
        action="custody.artifact_seal",
        organisation=version.dataset.owner,
        object_type="dataset_version",
        object_id=version.pk,
        details={"name": name, "size": len(data), "sha256": sha256_hex(data)},
    )
    return blob_key


def artifact_open(*, version: DatasetVersion, name: str) -> bytes:
    """Decrypt a stored artifact. :raises IntegrityFailure: altered or misplaced; :raises KeyUnavailable."""
    with blob_store().open(artifact_blob_key(version, name)) as handle:
        blob = handle.read()
    what = f"Artifact {name}"
    if not blob.startswith(ENVELOPE_MAGIC):
        # Sealed before artifacts had their own key: under the version's data key.
        return blob_open(key=version_data_key(version), aad=_legacy_aad(version, name), blob=blob, what=what)
    head = len(ENVELOPE_MAGIC) + 2
    if len(blob) < head:
        raise IntegrityFailure(f"{what} is truncated.", code="custody.shard_corrupt")
    (length,) = struct.unpack(">H", blob[len(ENVELOPE_MAGIC) : head])
    key = kek_provider().unwrap_data_key(
        name=version.key_name, wrapped=blob[head : head + length], key_version=ARTIFACT_KEY_SLOT
    )
    return blob_open(key=key, aad=_aad(version, name), blob=blob[head + length :], what=what)


def artifact_destroy(*, version: DatasetVersion, name: str) -> None:
    """Delete a stored artifact (idempotent)."""
    blob_store().delete(artifact_blob_key(version, name))
