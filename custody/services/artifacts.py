"""Artifacts kept in custody: trained weights that may not leave, encrypted under the version's data key.

A job whose license keeps the weights in custody stores its output here; only
custody touches the key. The blob binds its identity (version, name, key
version) as associated data, so a blob moved to another name or version does
not decrypt.
"""

from __future__ import annotations

import io

from common.audit import audit_record
from common.blobs import blob_store
from custody.crypto import blob_open, blob_seal, sha256_hex
from custody.models import DatasetVersion
from custody.services._keys import version_data_key


def _aad(version: DatasetVersion, name: str) -> bytes:
    return f"sealroom/artifact/v1|version={version.pk}|name={name}|key_version={version.key_version}".encode()


def artifact_blob_key(version: DatasetVersion, name: str) -> str:
    return f"artifacts/v{version.pk}/{name}.sealed"


def artifact_seal(*, version: DatasetVersion, name: str, data: bytes) -> str:
    """Encrypt ``data`` under the version's data key and store it; returns the blob key.

    :raises KeyUnavailable: the version's key is disabled or destroyed.
    :raises ValueError: ``name`` is not a plain name.
    """
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"artifact name must be plain: {name!r}")
    sealed = blob_seal(key=version_data_key(version), aad=_aad(version, name), plaintext=data)
    key = artifact_blob_key(version, name)
    blob_store().put(key, io.BytesIO(sealed))
    audit_record(
        action="custody.artifact_seal",
        organisation=version.dataset.owner,
        object_type="dataset_version",
        object_id=version.pk,
        details={"name": name, "size": len(data), "sha256": sha256_hex(data)},
    )
    return key


def artifact_open(*, version: DatasetVersion, name: str) -> bytes:
    """Decrypt a stored artifact. :raises IntegrityFailure: altered or misplaced; :raises KeyUnavailable."""
    with blob_store().open(artifact_blob_key(version, name)) as handle:
        blob = handle.read()
    return blob_open(
        key=version_data_key(version), aad=_aad(version, name), blob=blob, what=f"Artifact {name}"
    )


def artifact_destroy(*, version: DatasetVersion, name: str) -> None:
    """Delete a stored artifact (idempotent)."""
    blob_store().delete(artifact_blob_key(version, name))
