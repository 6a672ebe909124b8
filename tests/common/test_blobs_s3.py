"""The blob store contract, on a local directory and on a real S3 API server (moto's, on loopback).

The S3 cases also cover what only S3 has: multipart uploads of large blobs,
deleting every version in a versioned bucket, and a misconfiguration (missing
bucket, rejected credentials, unreachable endpoint) named in words by
``check``, ``/healthz`` and ``manage.py check --deploy``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from django.test import Client

from common.blobs import BlobStore, LocalBlobStore, blob_store
from tests.s3_server import REGION, MotoServer, admin_client, bucket_objects, free_port

s3 = pytest.mark.s3


def s3_store(server: MotoServer, bucket: str, prefix: str = "blobs") -> BlobStore:
    from common.s3 import S3BlobStore, S3Location

    return S3BlobStore(
        S3Location.parse(f"s3://{bucket}/{prefix}"), endpoint_url=server.endpoint, region=REGION
    )


@pytest.fixture(params=["local", pytest.param("s3", marks=s3)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "store")
    return s3_store(request.getfixturevalue("moto_server"), request.getfixturevalue("s3_bucket"))


class TestBlobStoreContract:
    def test_put_returns_the_size_and_open_gives_the_same_bytes_back(self, store):
        data = os.urandom(300_000)
        assert store.put("shards/1/000001", io.BytesIO(data)) == len(data)
        with store.open("shards/1/000001") as handle:
            assert handle.read() == data

    def test_open_streams_in_pieces(self, store):
        store.put("a/b", io.BytesIO(b"0123456789" * 1000))
        with store.open("a/b") as handle:
            assert handle.read(5) == b"01234"
            assert handle.read(7) == b"5678901"
            assert len(handle.read()) == 10_000 - 12

    def test_a_second_put_replaces_the_blob(self, store):
        store.put("k", io.BytesIO(b"first"))
        store.put("k", io.BytesIO(b"second"))
        with store.open("k") as handle:
            assert handle.read() == b"second"

    def test_an_empty_blob_round_trips(self, store):
        assert store.put("empty", io.BytesIO(b"")) == 0
        with store.open("empty") as handle:
            assert handle.read() == b""

    def test_exists_follows_put_and_delete(self, store):
        assert not store.exists("x/y")
        store.put("x/y", io.BytesIO(b"v"))
        assert store.exists("x/y")
        store.delete("x/y")
        assert not store.exists("x/y")

    def test_deleting_a_missing_blob_is_a_no_op(self, store):
        store.delete("never/stored")
        assert not store.exists("never/stored")

    def test_opening_a_missing_blob_raises_file_not_found(self, store):
        with pytest.raises(FileNotFoundError):
            store.open("never/stored")

    @pytest.mark.parametrize("key", ["../outside", "a/../../outside"])
    def test_refuses_a_key_that_escapes_the_store(self, store, key):
        with pytest.raises(ValueError, match="escapes the store"):
            store.put(key, io.BytesIO(b"x"))

    def test_check_passes_on_a_working_store(self, store):
        store.check()
        store.put("after-check", io.BytesIO(b"ok"))
        assert store.exists("after-check")


@s3
class TestS3BlobStore:
    def test_a_large_blob_goes_up_in_multipart_parts_and_comes_back_whole(self, moto_server, s3_bucket):
        from common.s3 import PART_BYTES

        store = s3_store(moto_server, s3_bucket)
        data = os.urandom(2 * PART_BYTES + 12345)
        assert store.put("artifacts/big", io.BytesIO(data)) == len(data)
        head = admin_client(moto_server, "s3").head_object(Bucket=s3_bucket, Key="blobs/artifacts/big")
        # A multipart object's ETag ends in -<number of parts>.
        assert head["ETag"].strip('"').endswith("-3")
        with store.open("artifacts/big") as handle:
            assert handle.read() == data

    def test_a_large_blob_from_a_stream_of_short_reads_uploads_whole(self, moto_server, s3_bucket):
        from common.s3 import PART_BYTES

        class Trickle(io.RawIOBase):  # a socket-like stream: at most 64 KiB per read
            def __init__(self, data: bytes) -> None:
                self.data = io.BytesIO(data)

            def readable(self) -> bool:
                return True

            def read(self, size: int = -1) -> bytes:
                return self.data.read(min(size if size >= 0 else 1 << 16, 1 << 16))

        store = s3_store(moto_server, s3_bucket)
        data = os.urandom(PART_BYTES + 777)
        assert store.put("uploads/trickled", Trickle(data)) == len(data)  # type: ignore[arg-type]
        with store.open("uploads/trickled") as handle:
            assert handle.read() == data

    def test_objects_live_under_the_prefix(self, moto_server, s3_bucket):
        s3_store(moto_server, s3_bucket, prefix="tenant/a").put("shards/7", io.BytesIO(b"sealed"))
        assert [key.split("@")[0] for key in bucket_objects(moto_server, s3_bucket)] == ["tenant/a/shards/7"]

    def test_check_leaves_no_probe_behind(self, moto_server, s3_bucket):
        s3_store(moto_server, s3_bucket).check()
        assert bucket_objects(moto_server, s3_bucket) == {}

    def test_delete_removes_every_version_from_a_versioned_bucket(self, moto_server, s3_bucket):
        store = s3_store(moto_server, s3_bucket)
        store.put("keys/k", io.BytesIO(b"one"))
        store.put("keys/k", io.BytesIO(b"two"))
        store.put("keys/other", io.BytesIO(b"kept"))
        assert len(bucket_objects(moto_server, s3_bucket)) == 3
        store.delete("keys/k")
        left = bucket_objects(moto_server, s3_bucket)
        assert [key.split("@")[0] for key in left] == ["blobs/keys/other"]
        markers = (
            admin_client(moto_server, "s3").list_object_versions(Bucket=s3_bucket).get("DeleteMarkers", [])
        )
        assert markers == []

    def test_blob_url_selects_the_s3_store(self, settings, moto_server, s3_bucket):
        from common.s3 import S3BlobStore

        settings.BLOB_BACKEND = "s3"
        settings.BLOB_URL = f"s3://{s3_bucket}/p"
        settings.S3_ENDPOINT_URL = moto_server.endpoint
        store = blob_store()
        assert isinstance(store, S3BlobStore)
        store.put("x", io.BytesIO(b"y"))
        assert [key.split("@")[0] for key in bucket_objects(moto_server, s3_bucket)] == ["p/x"]


@s3
class TestS3Misconfiguration:
    def check_error(self, store: BlobStore) -> str:
        from common.s3 import ServiceUnavailable

        with pytest.raises(ServiceUnavailable) as caught:
            store.check()
        return str(caught.value)

    def test_a_missing_bucket_is_named(self, moto_server, aws_env):
        message = self.check_error(s3_store(moto_server, "no-such-bucket"))
        assert "bucket 'no-such-bucket'" in message and "does not exist" in message

    def test_rejected_credentials_are_named(self, moto_auth_server, aws_env):
        message = self.check_error(s3_store(moto_auth_server, "any-bucket"))
        assert "rejected the credentials (InvalidAccessKeyId)" in message

    def test_an_unreachable_endpoint_is_named(self, aws_env):
        from common.s3 import S3BlobStore, S3Location

        endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
        store = S3BlobStore(S3Location.parse("s3://b/p"), endpoint_url=endpoint, region=REGION)
        message = self.check_error(store)
        assert f"endpoint {endpoint} is unreachable" in message

    def test_a_blob_url_that_is_not_s3_is_refused(self):
        from common.s3 import S3Location

        with pytest.raises(ValueError, match="s3://bucket/prefix"):
            S3Location.parse("https://bucket.example/prefix")


@s3
@pytest.mark.django_db
class TestHealthAndStartupWithS3:
    def point_at_missing_bucket(self, settings, moto_server: MotoServer) -> None:
        settings.BLOB_BACKEND = "s3"
        settings.BLOB_URL = "s3://sealroom-missing-bucket/p"
        settings.S3_ENDPOINT_URL = moto_server.endpoint

    def test_healthz_answers_503_naming_the_missing_bucket(
        self, client: Client, settings, moto_server, aws_env
    ):
        self.point_at_missing_bucket(settings, moto_server)
        response = client.get("/healthz")
        assert response.status_code == 503
        check = response.json()["checks"]["blob_store"]
        assert check["status"] == "error"
        assert "bucket 'sealroom-missing-bucket'" in check["error"] and "does not exist" in check["error"]
        assert "Traceback" not in check["error"]

    def test_healthz_is_ok_with_a_working_bucket(self, client: Client, settings, moto_server, s3_bucket):
        settings.BLOB_BACKEND = "s3"
        settings.BLOB_URL = f"s3://{s3_bucket}/p"
        settings.S3_ENDPOINT_URL = moto_server.endpoint
        response = client.get("/healthz")
        assert response.json()["checks"]["blob_store"]["status"] == "ok", response.json()

    def test_the_deploy_check_names_the_missing_bucket(self, settings, moto_server, aws_env):
        from common.health import services_check

        self.point_at_missing_bucket(settings, moto_server)
        errors = services_check()
        assert [error.id for error in errors] == ["sealroom.E001"]
        assert errors[0].msg.startswith(
            "blob_store: ServiceUnavailable: S3: bucket 'sealroom-missing-bucket'"
        )


@s3
class TestStartupCheckFromTheEnvironment:
    """``manage.py check --deploy`` in a child process configured only by environment variables."""

    @pytest.fixture(autouse=True)
    def _var_dir(self, tmp_path: Path) -> None:
        self.var_dir = tmp_path / "var"  # the child's signing keys go here, not into the checkout's var/

    def env(self, moto_server: MotoServer, **extra: str) -> dict[str, str]:
        from tests.common.test_settings import production_env

        return production_env(
            SEALROOM_VAR_DIR=str(self.var_dir),
            SEALROOM_S3_ENDPOINT_URL=moto_server.endpoint,
            SEALROOM_KMS_ENDPOINT_URL=moto_server.endpoint,
            SEALROOM_AWS_REGION=REGION,
            SEALROOM_AWS_MAX_ATTEMPTS="1",
            **extra,
        )

    def test_a_missing_bucket_stops_the_start_naming_it(self, moto_server, aws_env):
        from tests.common.test_settings import check_deploy

        result = check_deploy(self.env(moto_server, SEALROOM_BLOB_URL="s3://sealroom-nowhere/prod"))
        assert result.returncode != 0
        assert "sealroom.E001" in result.stderr
        assert "bucket 'sealroom-nowhere' (s3://sealroom-nowhere/prod/) does not exist" in result.stderr
        assert "Traceback" not in result.stderr

    def test_a_working_bucket_and_kms_key_pass(self, moto_server, s3_bucket, kms_key_id):
        from tests.common.test_settings import check_deploy

        env = self.env(
            moto_server,
            SEALROOM_BLOB_URL=f"s3://{s3_bucket}/prod",
            SEALROOM_KEY_PROVIDER="kms",
            SEALROOM_KMS_KEY_ID=kms_key_id,
        )
        result = check_deploy(env)
        assert result.returncode == 0, result.stderr
        assert "System check identified no issues" in result.stdout

    def test_a_blob_url_that_is_not_s3_stops_the_settings(self, moto_server, aws_env):
        from tests.common.test_settings import check_deploy

        result = check_deploy(self.env(moto_server, SEALROOM_BLOB_URL="https://bucket.example/prod"))
        assert result.returncode != 0
        assert "ImproperlyConfigured: SEALROOM_BLOB_URL must look like s3://bucket/prefix" in result.stderr
