"""A misconfigured S3 or KMS fails /healthz and the start-up check, naming what is wrong in words.

Each row sets up one mistake an operator can make, against real servers (moto's S3
and KMS on loopback, a second moto that checks credentials, a port where nothing
listens): wrong credentials, a missing bucket or key, an unreachable endpoint, for
the blob store and for the KMS key provider. ``/healthz`` answers 503 with the
failing component's sentence, the deploy check (``manage.py check --deploy``, run
in-process and, for two rows, in a child process configured by environment
variables only) reports it as one error line, and neither shows a traceback. The
missing bucket and the disabled master key are covered beside the stores
(tests/common/test_blobs_s3.py, tests/custody/test_keys_kms.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from tests.s3_server import REGION, MotoServer, free_port

pytestmark = [pytest.mark.s3, pytest.mark.django_db]


@dataclass(frozen=True)
class Mistake:
    component: str  # the /healthz check that must fail
    error_id: str  # the deploy check's error
    configure: Callable[[Any, pytest.FixtureRequest], str]  # sets the settings; returns what to expect


def s3_with(endpoint: str, bucket: str = "sealroom-any") -> Callable[[Any], None]:
    def apply(settings: Any) -> None:
        settings.BLOB_BACKEND = "s3"
        settings.BLOB_URL = f"s3://{bucket}/p"
        settings.S3_ENDPOINT_URL = endpoint
        settings.AWS_MAX_ATTEMPTS = 1

    return apply


def s3_rejected_credentials(settings: Any, request: pytest.FixtureRequest) -> str:
    s3_with(request.getfixturevalue("moto_auth_server").endpoint)(settings)
    return "rejected the credentials (InvalidAccessKeyId)"


def s3_unreachable(settings: Any, request: pytest.FixtureRequest) -> str:
    endpoint = f"http://127.0.0.1:{free_port()}"
    s3_with(endpoint)(settings)
    return f"S3 endpoint {endpoint} is unreachable"


def kms_with(settings: Any, request: pytest.FixtureRequest, *, endpoint: str, key_id: str) -> None:
    """Blobs (and KEK records) in a working bucket; only KMS is wrong."""
    server: MotoServer = request.getfixturevalue("moto_server")
    s3_with(server.endpoint, request.getfixturevalue("s3_bucket"))(settings)
    settings.KEY_PROVIDER = "kms"
    settings.KMS_KEY_ID = key_id
    settings.KMS_ENDPOINT_URL = endpoint
    settings.AWS_REGION = REGION


def kms_missing_key(settings: Any, request: pytest.FixtureRequest) -> str:
    kms_with(settings, request, endpoint=request.getfixturevalue("moto_server").endpoint, key_id="alias/none")
    return "KMS key alias/none does not exist"


def kms_rejected_credentials(settings: Any, request: pytest.FixtureRequest) -> str:
    server: MotoServer = request.getfixturevalue("moto_auth_server")
    kms_with(settings, request, endpoint=server.endpoint, key_id="alias/any")
    return "rejected the credentials (InvalidClientTokenId)"


def kms_unreachable(settings: Any, request: pytest.FixtureRequest) -> str:
    endpoint = f"http://127.0.0.1:{free_port()}"
    kms_with(settings, request, endpoint=endpoint, key_id="alias/any")
    return f"KMS endpoint {endpoint} is unreachable"


MISTAKES = {
    "s3-rejected-credentials": Mistake("blob_store", "sealroom.E001", s3_rejected_credentials),
    "s3-unreachable-endpoint": Mistake("blob_store", "sealroom.E001", s3_unreachable),
    "kms-missing-key": Mistake("key_provider", "sealroom.E002", kms_missing_key),
    "kms-rejected-credentials": Mistake("key_provider", "sealroom.E002", kms_rejected_credentials),
    "kms-unreachable-endpoint": Mistake("key_provider", "sealroom.E002", kms_unreachable),
}


@pytest.fixture(params=sorted(MISTAKES))
def mistake(request: pytest.FixtureRequest, settings: Any, aws_env: None) -> tuple[Mistake, str]:
    chosen = MISTAKES[request.param]
    return chosen, chosen.configure(settings, request)


class TestAMisconfigurationIsNamed:
    def test_healthz_answers_503_naming_it_without_a_traceback(self, client: Client, mistake):
        chosen, expected = mistake
        response = client.get("/healthz")
        assert response.status_code == 503
        checks = response.json()["checks"]
        assert checks[chosen.component]["status"] == "error"
        assert expected in checks[chosen.component]["error"], checks
        assert "Traceback" not in response.content.decode()
        failing = sorted(name for name, check in checks.items() if check["status"] != "ok")
        assert failing == [chosen.component]  # the sentence points at the one thing that is wrong

    def test_the_deploy_check_reports_one_error_naming_it(self, mistake):
        from common.health import services_check

        chosen, expected = mistake
        [error] = services_check()
        assert error.id == chosen.error_id
        assert expected in error.msg and "Traceback" not in error.msg
        assert error.msg.startswith(f"{chosen.component}: ServiceUnavailable: ")


class TestTheStartUpCheckFromTheEnvironment:
    """``manage.py check --deploy`` in a child process: exits non-zero with the sentence, no traceback."""

    def run(self, tmp_path: Path, **extra: str) -> Any:
        from tests.common.test_settings import check_deploy, production_env

        return check_deploy(
            production_env(SEALROOM_VAR_DIR=str(tmp_path / "var"), SEALROOM_AWS_MAX_ATTEMPTS="1", **extra)
        )

    def test_an_unreachable_s3_endpoint_stops_the_start(self, tmp_path, aws_env):
        endpoint = f"http://127.0.0.1:{free_port()}"
        result = self.run(tmp_path, SEALROOM_BLOB_URL="s3://sealroom/prod", SEALROOM_S3_ENDPOINT_URL=endpoint)
        assert result.returncode != 0
        assert "sealroom.E001" in result.stderr and f"S3 endpoint {endpoint} is unreachable" in result.stderr
        assert "Traceback" not in result.stderr

    def test_kms_refusing_the_credentials_stops_the_start(
        self, tmp_path, moto_server, moto_auth_server, s3_bucket
    ):
        result = self.run(
            tmp_path,
            SEALROOM_BLOB_URL=f"s3://{s3_bucket}/prod",
            SEALROOM_S3_ENDPOINT_URL=moto_server.endpoint,
            SEALROOM_KEY_PROVIDER="kms",
            SEALROOM_KMS_KEY_ID="alias/any",
            SEALROOM_KMS_ENDPOINT_URL=moto_auth_server.endpoint,
            SEALROOM_AWS_REGION=REGION,
        )
        assert result.returncode != 0
        assert "sealroom.E002" in result.stderr and "sealroom.E001" not in result.stderr
        assert "rejected the credentials (InvalidClientTokenId)" in result.stderr
        assert "Traceback" not in result.stderr
