"""The KMS key provider against a real KMS API server (moto's, on loopback), and one whole path.

The provider contract runs on the local provider and on the KMS provider
alike. Then what only KMS has: KEKs kept only as KMS ciphertext, a crypto-shred
that leaves no copy of the KEK in any version of the bucket, master rotation by
``RotateKeyOnDemand`` and ``ReEncrypt``, and a misconfigured KMS named in words.
Last, the whole path with blobs in S3 and KEKs under KMS: upload, ingest, seal,
read back, an artifact, ``keys_check`` and a shred, with the bucket scanned for
the plaintext sentinel.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.request
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from custody import services
from custody.crypto import new_data_key
from custody.exceptions import IntegrityFailure, KeyUnavailable
from custody.keys import KekProvider, LocalKekProvider, kek_provider
from custody.models import GrantPurpose
from custody.services._keys import system_grant, version_data_key
from tests.custody.conftest import drain, jsonl
from tests.custody.test_keys_admin import taken_down_and_disabled
from tests.s3_server import REGION, MotoServer, admin_client, bucket_objects, free_port

s3 = pytest.mark.s3


def kms_provider(server: MotoServer, bucket: str, key_id: str) -> KekProvider:
    from common.s3 import S3BlobStore, S3Location
    from custody.kms import KmsKekProvider

    records = S3BlobStore(
        S3Location.parse(f"s3://{bucket}/sealroom"), endpoint_url=server.endpoint, region=REGION
    )
    return KmsKekProvider(key_id=key_id, records=records, endpoint_url=server.endpoint, region=REGION)


@pytest.fixture(params=["local", pytest.param("kms", marks=s3)])
def provider(request: pytest.FixtureRequest, tmp_path: Path) -> KekProvider:
    if request.param == "local":
        return LocalKekProvider(tmp_path / "keys")
    get = request.getfixturevalue
    return kms_provider(get("moto_server"), get("s3_bucket"), get("kms_key_id"))


class TestKekProviderContract:
    def test_wraps_and_unwraps_a_data_key_bound_to_its_name_and_key_version(self, provider):
        key = new_data_key()
        provider.kek_create(name="version-1")
        provider.kek_create(name="version-2")
        wrapped = provider.wrap_data_key(name="version-1", data_key=key, key_version=1)
        assert wrapped != key and key not in wrapped
        assert provider.unwrap_data_key(name="version-1", wrapped=wrapped, key_version=1) == key
        with pytest.raises(IntegrityFailure):
            provider.unwrap_data_key(name="version-2", wrapped=wrapped, key_version=1)
        with pytest.raises(IntegrityFailure):
            provider.unwrap_data_key(name="version-1", wrapped=wrapped, key_version=2)

    def test_creating_twice_keeps_the_first_kek(self, provider):
        key = new_data_key()
        provider.kek_create(name="version-1")
        wrapped = provider.wrap_data_key(name="version-1", data_key=key, key_version=1)
        provider.kek_create(name="version-1")
        assert provider.unwrap_data_key(name="version-1", wrapped=wrapped, key_version=1) == key

    def test_a_disabled_key_refuses_then_reenables(self, provider):
        key = new_data_key()
        provider.kek_create(name="version-1")
        wrapped = provider.wrap_data_key(name="version-1", data_key=key, key_version=1)
        provider.kek_disable(name="version-1")
        assert provider.kek_state(name="version-1") == "disabled"
        with pytest.raises(KeyUnavailable) as caught:
            provider.unwrap_data_key(name="version-1", wrapped=wrapped, key_version=1)
        assert caught.value.code == "custody.key_disabled"
        provider.kek_enable(name="version-1")
        assert provider.kek_state(name="version-1") == "active"
        assert provider.unwrap_data_key(name="version-1", wrapped=wrapped, key_version=1) == key

    def test_a_destroyed_key_never_unwraps_again(self, provider):
        key = new_data_key()
        provider.kek_create(name="version-1")
        wrapped = provider.wrap_data_key(name="version-1", data_key=key, key_version=1)
        provider.kek_destroy(name="version-1")
        assert provider.kek_state(name="version-1") == "destroyed"
        assert provider.kek_master(name="version-1") is None
        with pytest.raises(KeyUnavailable) as caught:
            provider.unwrap_data_key(name="version-1", wrapped=wrapped, key_version=1)
        assert caught.value.code == "custody.key_destroyed"
        provider.kek_destroy(name="version-1")  # idempotent

    def test_a_key_never_created_reads_as_destroyed(self, provider):
        assert provider.kek_state(name="version-99") == "destroyed"

    def test_master_rotation_keeps_old_keks_working_until_rewrapped(self, provider):
        key = new_data_key()
        provider.kek_create(name="version-1")
        first = provider.master_current()
        wrapped = provider.wrap_data_key(name="version-1", data_key=key, key_version=1)
        assert provider.master_rotate() == first + 1
        assert provider.kek_master(name="version-1") == first
        assert provider.unwrap_data_key(name="version-1", wrapped=wrapped, key_version=1) == key
        assert provider.kek_rewrap(name="version-1") == first + 1
        assert provider.kek_master(name="version-1") == first + 1
        assert provider.unwrap_data_key(name="version-1", wrapped=wrapped, key_version=1) == key
        provider.kek_create(name="version-2")
        assert provider.kek_master(name="version-2") == first + 1

    def test_bad_key_names_are_refused(self, provider):
        with pytest.raises(ValueError, match="bad key name"):
            provider.kek_create(name="../master")

    def test_check_passes(self, provider):
        provider.check()


def kek_record(server: MotoServer, bucket: str, name: str) -> dict:
    s3_client = admin_client(server, "s3")
    body = s3_client.get_object(Bucket=bucket, Key=f"sealroom/custody-keys/kek-{name}.json")["Body"]
    return json.loads(body.read())


@s3
class TestKmsKekProvider:
    def test_the_kek_is_stored_only_as_kms_ciphertext_bound_to_its_name(
        self, moto_server, s3_bucket, kms_key_id
    ):
        provider = kms_provider(moto_server, s3_bucket, kms_key_id)
        provider.kek_create(name="version-1")
        record = kek_record(moto_server, s3_bucket, "version-1")
        assert set(record) == {"name", "master", "state", "wrapped"}
        kms = admin_client(moto_server, "kms")
        wrapped = base64.b64decode(record["wrapped"])
        # KMS opens it only with the name as encryption context: a record copied under
        # another name does not unwrap.
        assert (
            len(
                kms.decrypt(CiphertextBlob=wrapped, EncryptionContext={"sealroom:kek": "version-1"})[
                    "Plaintext"
                ]
            )
            == 32
        )
        with pytest.raises(Exception, match="InvalidCiphertext"):
            kms.decrypt(CiphertextBlob=wrapped, EncryptionContext={"sealroom:kek": "version-2"})

    def test_the_crypto_shred_leaves_no_version_of_the_kek_anywhere_in_the_bucket(
        self, moto_server, s3_bucket, kms_key_id
    ):
        provider = kms_provider(moto_server, s3_bucket, kms_key_id)
        provider.kek_create(name="version-1")
        provider.kek_create(name="version-2")
        key = new_data_key()
        wrapped_data_key = provider.wrap_data_key(
            name="version-1", data_key=key, key_version=1
        )  # "the database"
        provider.kek_disable(name="version-1")
        provider.kek_enable(name="version-1")  # more versions of the record in the versioned bucket
        wrapped_kek = kek_record(moto_server, s3_bucket, "version-1")["wrapped"]
        provider.kek_destroy(name="version-1")

        stored = bucket_objects(moto_server, s3_bucket)
        assert not any("kek-version-1" in name for name in stored)
        assert not any(wrapped_kek.encode() in body for body in stored.values())
        assert any("kek-version-2" in name for name in stored)  # only what was shredded is gone
        # With KMS and the wrapped data key in hand, nothing is left to unwrap it with.
        with pytest.raises(KeyUnavailable):
            provider.unwrap_data_key(name="version-1", wrapped=wrapped_data_key, key_version=1)
        with pytest.raises(IntegrityFailure):
            provider.unwrap_data_key(name="version-2", wrapped=wrapped_data_key, key_version=1)

    def test_master_rotation_is_a_kms_rotation_and_the_rewrap_a_reencrypt(
        self, moto_server, s3_bucket, kms_key_id
    ):
        provider = kms_provider(moto_server, s3_bucket, kms_key_id)
        provider.kek_create(name="version-1")
        before = kek_record(moto_server, s3_bucket, "version-1")["wrapped"]
        assert provider.master_rotate() == 2
        rotations = admin_client(moto_server, "kms").list_key_rotations(KeyId=kms_key_id)["Rotations"]
        assert [rotation["RotationType"] for rotation in rotations] == ["ON_DEMAND"]
        provider.kek_rewrap(name="version-1")
        after = kek_record(moto_server, s3_bucket, "version-1")
        assert after["master"] == 2 and after["wrapped"] != before

    def test_a_disabled_master_key_stops_unwrapping_and_fails_the_check(
        self, moto_server, s3_bucket, kms_key_id
    ):
        from common.s3 import ServiceUnavailable

        provider = kms_provider(moto_server, s3_bucket, kms_key_id)
        provider.kek_create(name="version-7")
        admin_client(moto_server, "kms").disable_key(KeyId=kms_key_id)
        with pytest.raises(ServiceUnavailable, match=f"KMS key {kms_key_id} is Disabled"):
            provider.check()


@s3
class TestKmsMisconfiguration:
    def check_error(self, provider: KekProvider) -> str:
        from common.s3 import ServiceUnavailable

        with pytest.raises(ServiceUnavailable) as caught:
            provider.check()
        return str(caught.value)

    def test_a_missing_key_is_named(self, moto_server, s3_bucket):
        message = self.check_error(kms_provider(moto_server, s3_bucket, "alias/no-such-key"))
        assert "KMS key alias/no-such-key does not exist" in message

    def test_rejected_credentials_are_named(self, moto_auth_server, aws_env):
        message = self.check_error(kms_provider(moto_auth_server, "any-bucket", "alias/any"))
        assert "KMS at" in message and "rejected the credentials (InvalidClientTokenId)" in message

    def test_an_unreachable_endpoint_is_named(self, aws_env):
        endpoint = f"http://127.0.0.1:{free_port()}"
        from common.s3 import S3BlobStore, S3Location
        from custody.kms import KmsKekProvider

        records = S3BlobStore(S3Location.parse("s3://b/p"), endpoint_url=endpoint, region=REGION)
        provider = KmsKekProvider(key_id="alias/k", records=records, endpoint_url=endpoint, region=REGION)
        assert f"KMS endpoint {endpoint} is unreachable" in self.check_error(provider)

    def test_kek_records_can_live_in_a_bucket_of_their_own(self, s3_kms_settings, moto_server, s3_bucket):
        keks = f"{s3_bucket}-keks"
        admin_client(moto_server, "s3").create_bucket(Bucket=keks)
        s3_kms_settings.KMS_KEK_URL = f"s3://{keks}/k"
        kek_provider().kek_create(name="version-3")
        assert sorted(name.split("@")[0] for name in bucket_objects(moto_server, keks)) == [
            "k/custody-keys/kek-version-3.json",
            "k/custody-keys/master.json",
        ]
        assert bucket_objects(moto_server, s3_bucket) == {}

    def test_no_key_id_is_named(self, settings, moto_server, s3_bucket):
        from common.s3 import ServiceUnavailable

        settings.KEY_PROVIDER = "kms"
        settings.KMS_KEY_ID = ""
        with pytest.raises(ServiceUnavailable, match="needs SEALROOM_KMS_KEY_ID"):
            kek_provider()

    @pytest.mark.django_db
    def test_healthz_and_the_deploy_check_name_a_disabled_master_key(
        self, client, s3_kms_settings, moto_server
    ):
        from common.health import services_check

        admin_client(moto_server, "kms").disable_key(KeyId=s3_kms_settings.KMS_KEY_ID)
        response = client.get("/healthz")
        assert response.status_code == 503
        check = response.json()["checks"]["key_provider"]
        assert "is Disabled, not Enabled" in check["error"]
        assert response.json()["checks"]["blob_store"]["status"] == "ok"
        assert [error.id for error in services_check()] == ["sealroom.E002"]


SENTINEL = "zqxv-sentinel-7c41"  # a made-up word the desensitizer leaves alone
RECORDS = [
    {"text": f"Note {i}: the {SENTINEL} report for region {i % 5} is late.", "topic": SENTINEL}
    for i in range(30)
]


def records_of(version) -> list[dict]:
    stream = services.grant_stream_open(
        grant=system_grant(version, GrantPurpose.REVIEW), consumer_ref="test", purpose="review"
    )
    return [record for batch in stream for record in batch]


def assert_no_plaintext(server: MotoServer, bucket: str) -> dict[str, bytes]:
    stored = bucket_objects(server, bucket)
    leaked = [name for name, body in stored.items() if SENTINEL.encode() in body]
    assert leaked == [], f"plaintext sentinel stored in {leaked}"
    return stored


@s3
class TestWholePathOnS3AndKms:
    def test_ingest_seal_read_back_and_an_artifact_store_only_ciphertext(
        self, s3_kms_settings, moto_server, s3_bucket, alice, ops, version, upload
    ):
        contribution = upload(version, jsonl(RECORDS), parts=2, metadata_fields=["topic"])
        assert_no_plaintext(moto_server, s3_bucket)  # the quarantined upload parts, sealed
        services.version_process(actor=alice, version=version)
        drain()
        sealed = services.version_seal(actor=alice, version=version)
        read = records_of(sealed)
        assert len(read) == 30 and all(SENTINEL in record["text"]["text"] for record in read)
        services.artifact_seal(
            version=sealed, name="training-job-1", data=f"weights {SENTINEL}".encode() * 100
        )
        assert services.artifact_open(version=sealed, name="training-job-1").startswith(b"weights ")

        stored = assert_no_plaintext(moto_server, s3_bucket)
        names = {name.split("@")[0] for name in stored}
        assert any(name.startswith("sealroom/shards/") or "/shards/" in name for name in names), names
        assert f"sealroom/custody-keys/kek-{sealed.key_name}.json" in names
        # The sealed version's quarantine copy was shredded: its KEK record is gone from every version.
        assert not any(contribution.quarantine_key_name in name for name in names)
        # Nothing went to the local key or blob directories.
        assert not (Path(s3_kms_settings.KEY_DIR) / "custody").exists()
        assert not Path(s3_kms_settings.BLOB_DIR).exists()

        # The KMS server's state (and moto's whole model dump, S3 metadata included) holds no plaintext.
        with urllib.request.urlopen(f"{moto_server.endpoint}/moto-api/data.json", timeout=10) as response:  # noqa: S310
            state = response.read()
        assert b'"kms"' in state and SENTINEL.encode() not in state

        out = StringIO()
        call_command("keys_check", stdout=out)
        assert "keys match the database" in out.getvalue()

    def test_a_shredded_version_stays_shredded_and_a_restored_kek_is_destroyed_again(
        self, s3_kms_settings, moto_server, s3_bucket, sealed_version, ops
    ):
        record_key = f"sealroom/custody-keys/kek-{sealed_version.key_name}.json"
        s3_client = admin_client(moto_server, "s3")
        backup = s3_client.get_object(Bucket=s3_bucket, Key=record_key)["Body"].read()
        version = taken_down_and_disabled(sealed_version, ops)
        services.version_key_destroy(actor=ops, version=version, confirm=services.version_label(version))
        assert kek_provider().kek_state(name=version.key_name) == "destroyed"
        assert not any(name.startswith(record_key) for name in bucket_objects(moto_server, s3_bucket))
        with pytest.raises(KeyUnavailable):
            version_data_key(version)

        # A bucket backup restored: the KEK record is back; keys_check --fix destroys it again.
        s3_client.put_object(Bucket=s3_bucket, Key=record_key, Body=io.BytesIO(backup))
        with pytest.raises(Exception, match="keys differ"):
            call_command("keys_check", stdout=StringIO())
        out = StringIO()
        call_command("keys_check", "--fix", stdout=out)
        assert "destroyed again" in out.getvalue()
        assert not any(name.startswith(record_key) for name in bucket_objects(moto_server, s3_bucket))
