"""pytest plugin: a real S3/KMS API server (moto's standalone server) on a free loopback port.

``moto_server`` (session) runs ``python -m moto.server`` as a child process,
so a test can take it away (``stop``) and bring it back (``start``) like a
real outage. ``aws_env`` sets the standard AWS variables for the test;
``s3_bucket`` makes an empty bucket of the test's own; ``kms_key_id`` a fresh
KMS master key; ``s3_kms_settings`` selects both for the whole platform, as
``SEALROOM_BLOB_URL`` and ``SEALROOM_KEY_PROVIDER=kms`` would. Without moto
(a runtime-only install) the fixtures skip saying why; tests using them are
marked ``s3``, so ``SEALROOM_REQUIRE_REAL=1`` (CI) fails on such a skip.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"
REGION = "us-east-1"
START_TIMEOUT_SECONDS = 30


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MotoServer:
    """One moto server process; ``endpoint`` stays the same across stop/start (its state does not)."""

    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.process.returncode} on port {self.port}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):  # noqa: S310 - loopback
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"moto server did not answer on {self.endpoint} within {START_TIMEOUT_SECONDS}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def _require_moto() -> None:
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"needs moto[s3,kms] and flask from the dev lock (make setup): {exc}")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    _require_moto()
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_auth_server() -> Iterator[MotoServer]:
    """A second moto server that checks credentials (moto's IAM), so unknown ones are refused."""
    _require_moto()
    server = MotoServer(env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def admin_client(server: MotoServer, service: str) -> Any:
    """A plain boto3 client on the test server, for setting up and for looking behind the store."""
    import boto3  # type: ignore[import-untyped]  # boto3 ships no type hints

    return boto3.client(
        service,
        endpoint_url=server.endpoint,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


@pytest.fixture
def s3_bucket(moto_server: MotoServer, aws_env: None) -> Iterator[str]:
    """An empty bucket of this test's own, with versioning on (so deletes must remove every version).

    Multipart uploads a test left unfinished are aborted afterwards: while one exists, moto's
    state dump (``moto_state``), which later tests scan, answers 500.
    """
    name = f"sealroom-test-{uuid.uuid4().hex[:12]}"
    s3 = admin_client(moto_server, "s3")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    yield name
    with contextlib.suppress(Exception):  # the server may be down in a drill that failed
        for upload in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
            s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])


@pytest.fixture
def kms_key_id(moto_server: MotoServer, aws_env: None) -> str:
    key = admin_client(moto_server, "kms").create_key(Description="sealroom test master key")
    return str(key["KeyMetadata"]["KeyId"])


@pytest.fixture
def s3_kms_settings(settings: Any, moto_server: MotoServer, s3_bucket: str, kms_key_id: str) -> Any:
    """Blobs in the test's bucket and KEKs under the test's KMS key, for everything the test runs."""
    settings.BLOB_BACKEND = "s3"
    settings.BLOB_URL = f"s3://{s3_bucket}/sealroom"
    settings.S3_ENDPOINT_URL = moto_server.endpoint
    settings.KEY_PROVIDER = "kms"
    settings.KMS_KEY_ID = kms_key_id
    settings.KMS_ENDPOINT_URL = moto_server.endpoint
    settings.AWS_REGION = REGION
    settings.AWS_MAX_ATTEMPTS = 3
    return settings


def bucket_objects(server: MotoServer, bucket: str) -> dict[str, bytes]:
    """Every stored version of every object in the bucket, by ``key@version``."""
    s3 = admin_client(server, "s3")
    found: dict[str, bytes] = {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for entry in page.get("Versions", []):
            body = s3.get_object(Bucket=bucket, Key=entry["Key"], VersionId=entry["VersionId"])["Body"]
            found[f"{entry['Key']}@{entry['VersionId']}"] = body.read()
    return found


def moto_state(server: MotoServer) -> bytes:
    """moto's whole model dump (S3 metadata, KMS keys and their state) as its API serves it.

    moto answers 500 while any multipart upload on the server is unfinished: tests that open one
    must finish or abort it.
    """
    with urllib.request.urlopen(f"{server.endpoint}/moto-api/data.json", timeout=30) as response:  # noqa: S310
        return bytes(response.read())


class CuttableProxy:
    """A TCP proxy in front of the moto server that can be cut and restored, state kept.

    ``down()`` closes the listening socket and every open connection, so S3 and
    KMS calls fail as against an unreachable endpoint (connection refused);
    ``up()`` listens again on the same port. Restarting moto itself would lose
    its in-memory buckets and keys, which is a different drill.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def up(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        with self._lock:
            sockets, self._open = self._open, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed by down()
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(1 << 16):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def s3_proxy(moto_server: MotoServer) -> Iterator[CuttableProxy]:
    proxy = CuttableProxy(moto_server.port)
    proxy.up()
    yield proxy
    proxy.down()
