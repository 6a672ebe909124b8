"""What a job lets out besides its gated weights (docs/threat-model.md): the launcher's rules.

These tests feed the launcher's Recorder the events a runner could send (no sandbox, no
training) and check what the trainer can then read; the decoder attack in
test_decoder_attack.py runs the whole path end to end.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from custody.models import DatasetVersion
from tests.grants import grant_for_test
from training.exceptions import Conflict, Invalid
from training.launcher import Recorder, significant
from training.models import BaseKind, BaseModel, BaseState, JobState, TrainingJob
from training.receipts import receipt_body
from training.services.jobs import telemetry_block

WINDOW = {"window_records": 32, "window_tokens": 1000}


def progress(step: int, loss: float, **window: float) -> dict:
    return {"event": "progress", "step": step, "total_steps": 100, "epoch": 1, "loss": loss, **window}


class TestRecorder:
    def test_only_a_full_window_s_mean_is_published_rounded(self, submit, grant):
        job = submit(grant)
        recorder = Recorder(job)
        recorder(progress(1, 4.123456789))  # one step's loss: no window, withheld
        recorder(progress(2, 4.123456789, window_records=31, window_tokens=5000))  # too few records
        recorder(progress(3, 4.123456789, window_records=64, window_tokens=999))  # too few tokens
        recorder(progress(40, 3.987654321, **WINDOW, tokens_per_s=12345.678))
        recorder.flush()
        job.refresh_from_db()
        assert job.loss_curve == [[40, 3.99]] and job.loss == 3.99
        assert job.tokens_per_s == 12000.0
        assert job.step == 40

    def test_the_curve_stops_at_the_cap(self, submit, grant, settings):
        settings.TRAINING_LOSS_CURVE_POINTS = 3
        job = submit(grant)
        recorder = Recorder(job)
        for step in range(1, 8):
            recorder(progress(step, 1.0 + step, **WINDOW))
        recorder.flush()
        job.refresh_from_db()
        assert [s for s, _ in job.loss_curve] == [1, 2, 3]

    def test_under_dp_no_loss_and_no_validation_leave_during_training(self, submit, grant):
        job = submit(grant, template="causal_lm_lora", dp={"enabled": True, "target_epsilon": 8.0})
        recorder = Recorder(job)
        recorder(progress(40, 3.5, **WINDOW))
        recorder({"event": "metrics", "split": "validation", "epoch": 1, "loss": 3.2})
        recorder.flush()
        job.refresh_from_db()
        assert job.loss_curve == [] and job.loss is None and "validation" not in job.metrics
        assert job.step == 40  # progress itself still shows

    def test_final_metrics_are_named_and_rounded(self, submit, grant):
        recorder = Recorder(submit(grant))
        final = recorder.final_metrics(
            {"train_loss": 2.345678, "validation_loss": 2.5, "tokens_seen": 991, "device": "cpu", "steps": 9}
        )
        assert final == {"train_loss": 2.35, "validation_loss": 2.5, "device": "cpu", "steps": 9}

    def test_the_protection_setting_brings_the_per_step_curve_back(self, submit, grant, settings):
        settings.TRAINING_TELEMETRY_PROTECTED = False
        job = submit(grant)
        assert job.spec["telemetry"]["protected"] is False
        recorder = Recorder(job)
        recorder(progress(1, 4.123456789))
        recorder.flush()
        job.refresh_from_db()
        assert job.loss_curve == [[1, 4.12346]]


def test_significant_digits():
    assert significant(4.123456, 3) == 4.12 and significant(0.00123456, 3) == 0.00123
    assert significant(12345.6, 2) == 12000.0


class TestGateView:
    def test_the_trainer_reads_pass_or_fail_and_a_reason_only(self, submit, grant, token_for, bob, bolt):
        job = submit(grant)
        job.gate = {
            "passed": False,
            "reason": "training records were reproduced verbatim",
            "exposures": [6.1, 2.0],
            "exposure": 6.1,
            "checks": {"exposure": "passed", "verbatim": "failed"},
        }
        job.save(update_fields=["gate"])
        body = token_for(bob, bolt, ["read"]).get(f"/api/v1/training/jobs/{job.public_id}/metrics").json()
        assert body["gate"] == {
            "passed": False,
            "reason": "training records were reproduced verbatim",
            "checks": {"exposure": "passed", "verbatim": "failed"},
        }


def _uploaded(bolt) -> BaseModel:
    tiny = BaseModel.objects.get(name="gpt2-tiny", owner=None)
    return BaseModel.objects.create(
        name="mine",
        kind=BaseKind.UPLOADED,
        task=tiny.task,
        owner=bolt,
        state=BaseState.VALIDATED,
        file_hash="ab" * 32,
    )


class TestSubmitRules:
    def test_weights_of_an_uploaded_base_leave_only_from_a_dp_job(self, submit, grant, bolt):
        base = _uploaded(bolt)
        with pytest.raises(Invalid) as refused:
            submit(grant, base=base)
        assert refused.value.code == "training.dp_required_uploaded_base"
        job = submit(grant, base=base, template="causal_lm_lora", dp={"enabled": True, "target_epsilon": 4.0})
        assert job.dp_enabled

    def test_an_uploaded_base_trains_without_dp_where_weights_stay(
        self, submit, sealed_version, bolt, license_terms
    ):
        kept = grant_for_test(sealed_version, bolt, **{**license_terms, "weights_may_leave": False})
        assert submit(kept, base=_uploaded(bolt)).state == JobState.QUEUED

    def test_delta_is_bounded_by_the_records_and_summed_on_the_license(
        self, submit, grant, sealed_version: DatasetVersion
    ):
        # As if the version held 1,000 records: delta must stay below 1/1000 over the license.
        DatasetVersion.objects.filter(pk=sealed_version.pk).update(records=1000)
        grant.refresh_from_db()

        def dp(**delta: float) -> dict:
            return {"enabled": True, "target_epsilon": 1.0, **delta}

        job = submit(grant, template="causal_lm_lora", dp=dp())
        assert job.spec["dp"]["delta"] == pytest.approx(1e-5)  # min(1e-5, 0.1 / n)
        with pytest.raises(Invalid) as refused:
            submit(grant, template="causal_lm_lora", dp=dp(delta=0.001))
        assert refused.value.code == "training.privacy_delta_exceeded"
        submit(grant, template="causal_lm_lora", dp=dp(delta=0.0006))
        with pytest.raises(Invalid):  # 1e-5 + 0.0006 + 0.0006 >= 1/1000
            submit(grant, template="causal_lm_lora", dp=dp(delta=0.0006))

    def test_a_withheld_spec_is_not_retried_and_withheld_jobs_are_capped(self, submit, grant, settings):
        settings.TRAINING_GATE_MAX_WITHHELD = 2
        first = submit(grant)
        TrainingJob.objects.filter(pk=first.pk).update(
            state=JobState.FAILED, failure_code="training.gate_failed"
        )
        with pytest.raises(Conflict) as same:
            submit(grant, hyperparameters={**first.spec["hyperparameters"], "seed": 99})
        assert same.value.code == "training.gate_withheld_spec"
        other = submit(grant, hyperparameters={**first.spec["hyperparameters"], "learning_rate": 0.0001})
        TrainingJob.objects.filter(pk=other.pk).update(
            state=JobState.FAILED, failure_code="training.gate_failed"
        )
        with pytest.raises(Conflict) as capped:
            submit(grant, hyperparameters={**first.spec["hyperparameters"], "learning_rate": 0.00001})
        assert capped.value.code == "training.gate_withheld_limit"


class TestReceipt:
    def test_binds_the_license_its_terms_and_the_allocation(
        self, submit, sealed_version, bolt, license_terms
    ):
        allocation = hashlib.sha256(b"allocation").hexdigest()
        grant = grant_for_test(sealed_version, bolt, **license_terms, allocation_sha256=allocation)
        job = submit(grant)
        body = receipt_body(job, version=sealed_version)
        terms = json.dumps(grant.terms, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert body["license"] == {
            "ref": grant.external_ref,
            "terms_sha256": hashlib.sha256(terms).hexdigest(),
            "allocation_sha256": allocation,
        }
        assert "exposure" not in body["gate"] and "verbatim" not in body["gate"]


def test_job_submit_spec_carries_the_protected_telemetry(submit, grant, settings):
    job = submit(grant)
    assert job.spec["telemetry"] == {
        "protected": True,
        "window_records": settings.TRAINING_METRICS_WINDOW_RECORDS,
        "window_tokens": settings.TRAINING_METRICS_WINDOW_TOKENS,
        "max_points": settings.TRAINING_LOSS_CURVE_POINTS,
        "dp_metrics_share": settings.TRAINING_DP_METRICS_SHARE,
    }
    assert telemetry_block()["window_records"] >= 32
