"""Withheld artifacts (weights kept in custody) under key management: they follow the version's KEK.

Master rotation and rewrap keep them readable under the new master alone; data-key rotation
leaves them readable; the crypto-shred makes every copy of them unreadable.
"""

from __future__ import annotations

import io

import pytest

from common.blobs import blob_store
from custody import services
from custody.crypto import blob_seal
from custody.exceptions import IntegrityFailure, KeyUnavailable
from custody.keys import kek_provider
from custody.models import DatasetVersion
from custody.services._keys import version_data_key
from custody.services.artifacts import artifact_blob_key
from tests.custody.test_keys_admin import taken_down_and_disabled

WEIGHTS = b"model.safetensors bytes " * 64
NAME = "training-job-7"


@pytest.fixture
def sealed_artifact(sealed_version: DatasetVersion) -> DatasetVersion:
    services.artifact_seal(version=sealed_version, name=NAME, data=WEIGHTS)
    return sealed_version


def blob_bytes(version: DatasetVersion, name: str = NAME) -> bytes:
    with blob_store().open(artifact_blob_key(version, name)) as handle:
        return handle.read()


class TestMasterKeyRotation:
    def test_after_the_rewrap_the_old_master_can_be_retired_and_the_artifact_still_opens(
        self, sealed_artifact, ops, settings
    ):
        provider = kek_provider()
        first = provider.master_current()
        services.master_key_rotate(actor=ops)
        summary = services.kek_rewrap_all(actor=ops)
        assert summary.versions == 1
        (settings.KEY_DIR / "custody" / f"master-{first}.key").unlink()
        assert services.artifact_open(version=sealed_artifact, name=NAME) == WEIGHTS

    def test_retiring_the_old_master_before_the_rewrap_loses_it(self, sealed_artifact, ops, settings):
        # The control: the artifact's key really hangs on the KEK and its master.
        first = kek_provider().master_current()
        services.master_key_rotate(actor=ops)
        (settings.KEY_DIR / "custody" / f"master-{first}.key").unlink()
        with pytest.raises(KeyUnavailable) as caught:
            services.artifact_open(version=sealed_artifact, name=NAME)
        assert caught.value.code == "custody.master_missing"


class TestDataKeyRotation:
    def test_the_artifact_still_opens_after_the_versions_data_key_is_replaced(self, sealed_artifact, ops):
        rotated = services.version_data_key_rotate(actor=ops, version=sealed_artifact)
        assert rotated.key_version == 2
        assert services.artifact_open(version=rotated, name=NAME) == WEIGHTS

    def test_an_artifact_sealed_under_the_version_data_key_still_opens(self, sealed_version):
        # The earlier format: no key of its own, sealed with the version's data key.
        aad = f"sealroom/artifact/v1|version={sealed_version.pk}|name={NAME}|key_version=1".encode()
        blob = blob_seal(key=version_data_key(sealed_version), aad=aad, plaintext=WEIGHTS)
        blob_store().put(artifact_blob_key(sealed_version, NAME), io.BytesIO(blob))
        assert services.artifact_open(version=sealed_version, name=NAME) == WEIGHTS


class TestCryptoShred:
    def test_a_disabled_key_closes_it_and_a_destroyed_key_closes_every_copy(self, sealed_artifact, ops):
        backup = blob_bytes(sealed_artifact)
        version = taken_down_and_disabled(sealed_artifact, ops)
        with pytest.raises(KeyUnavailable) as caught:
            services.artifact_open(version=version, name=NAME)
        assert caught.value.code == "custody.key_disabled"

        services.version_key_destroy(actor=ops, version=version, confirm=services.version_label(version))
        blob_store().put(artifact_blob_key(version, NAME), io.BytesIO(backup))  # a restored blob backup
        with pytest.raises(KeyUnavailable) as caught:
            services.artifact_open(version=version, name=NAME)
        assert caught.value.code == "custody.key_destroyed"


class TestIdentity:
    def test_a_blob_moved_to_another_name_does_not_open(self, sealed_artifact):
        blob_store().put(
            artifact_blob_key(sealed_artifact, "training-job-8"), io.BytesIO(blob_bytes(sealed_artifact))
        )
        with pytest.raises(IntegrityFailure):
            services.artifact_open(version=sealed_artifact, name="training-job-8")

    def test_the_stored_blob_holds_no_plaintext(self, sealed_artifact):
        assert b"model.safetensors" not in blob_bytes(sealed_artifact)
