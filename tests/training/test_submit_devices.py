"""A job's `devices` (DDP ranks): asked for through the API, bounded by the platform, on the receipt."""

from __future__ import annotations

from typing import Any

import pytest

from custody.models import GrantJob
from tests.training.conftest import job_body
from training.models import JobState, TrainingJob
from training.receipts import receipt_body

URL = "/api/v1/training/jobs"


@pytest.fixture
def bob_api(token_for, bob, bolt):
    return token_for(bob, bolt, ["read", "train"])


@pytest.fixture
def two_devices(settings):
    settings.TRAINING_MAX_DEVICES = 2


def refused(response, code: str) -> dict[str, Any]:
    assert response.status_code == 422, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code, body
    assert [e["pointer"] for e in body["errors"]] == ["/devices"], body
    assert not TrainingJob.objects.exists() and not GrantJob.objects.exists()
    return body


class TestSubmitDevices:
    def test_a_job_asks_for_two_processes(self, bob_api, grant, tiny, two_devices) -> None:
        response = bob_api.post(URL, job_body(grant, tiny, devices=2), format="json")
        assert response.status_code == 202, response.content
        job = TrainingJob.objects.get(public_id=response.json()["id"])
        assert job.spec["devices"] == 2 and job.request["devices"] == 2

    def test_one_process_by_default_leaves_the_spec_as_it_was(self, bob_api, grant, tiny) -> None:
        response = bob_api.post(URL, job_body(grant, tiny), format="json")
        assert response.status_code == 202, response.content
        job = TrainingJob.objects.get(public_id=response.json()["id"])
        assert "devices" not in job.spec and "devices" not in job.request

    def test_more_than_the_platform_allows_is_refused(self, bob_api, grant, tiny, two_devices) -> None:
        body = refused(
            bob_api.post(URL, job_body(grant, tiny, devices=3), format="json"), "training.devices_invalid"
        )
        assert "between 1 and 2" in body["errors"][0]["detail"]

    def test_the_default_platform_limit_is_one(self, bob_api, grant, tiny) -> None:
        refused(
            bob_api.post(URL, job_body(grant, tiny, devices=2), format="json"), "training.devices_invalid"
        )

    @pytest.mark.parametrize("value", [0, -2, "2", 1.5, True, None, [2], {"n": 2}])
    def test_malformed_values_are_refused(self, bob_api, grant, tiny, two_devices, value: Any) -> None:
        response = bob_api.post(URL, job_body(grant, tiny, devices=value), format="json")
        refused(response, "training.devices_invalid")

    def test_dp_jobs_train_in_one_process(self, bob_api, grant, tiny, two_devices, settings) -> None:
        grant.terms["job_templates"] = ["causal_lm_lora"]
        grant.save(update_fields=["terms"])
        dp = {"enabled": True, "target_epsilon": 8.0, "delta": 1e-6}
        body = job_body(grant, tiny, template="causal_lm_lora", devices=2, dp=dp)
        problem = refused(bob_api.post(URL, body, format="json"), "training.spec_invalid")
        assert "one process" in problem["errors"][0]["detail"]


class TestReceiptWorldSize:
    def test_the_receipt_records_the_world_size_the_runner_reported(
        self, submit, grant, sealed_version, two_devices
    ) -> None:
        job = submit(grant, devices=2)
        assert receipt_body(job, version=sealed_version)["world_size"] == 2  # as asked
        job.metrics = {"final": {"world_size": 2, "steps": 3}}
        assert receipt_body(job, version=sealed_version)["world_size"] == 2
        single = submit(grant)
        assert receipt_body(single, version=sealed_version)["world_size"] == 1


class TestTwoDeviceJobEndToEnd:
    def test_the_launcher_runs_two_ranks_and_the_signed_receipt_says_so(
        self, submit, grant, two_devices, settings, tmp_path
    ) -> None:
        """Through the launcher and the real sandbox (drain, in this process), like test_lifecycle."""
        from tests.training.conftest import drain

        settings.TRAINING_WORK_DIR = tmp_path / "training-work"
        settings.TRAINING_WALL_SECONDS = 300
        settings.TRAINING_MEMORY_BYTES = 2 * 1024**3  # per rank
        settings.TRAINING_CANARY_CANDIDATES = 31
        job = submit(grant, devices=2)
        drain()
        job.refresh_from_db()
        assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)
        assert job.metrics["final"]["world_size"] == 2
        assert job.receipt["receipt"]["world_size"] == 2
        assert job.receipt["receipt"]["spec"]["devices"] == 2
        assert job.tokens_trained > 0
