"""Usage billed for a job: the platform tokens of the records it actually trained on.

Through the launcher and the real sandbox (``drain``), on the 30-record sealed version. The
runner reports the count; the launcher checks it against the bound (version tokens x epochs) and
records it once in custody, where marketplace's metered settlement reads the quantity.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from custody.models import UsageRecord
from tests.training.conftest import TINY_HP, drain
from training import launcher
from training.models import JobState, TrainingJob
from training.services import JobRequest, job_submit


@pytest.fixture(autouse=True)
def _work_dir(settings, tmp_path: Path) -> Path:
    settings.TRAINING_WORK_DIR = tmp_path / "training-work"
    settings.TRAINING_WALL_SECONDS = 300
    settings.TRAINING_CANARY_CANDIDATES = 31
    settings.TRAINING_CANARY_REPEATS = 5  # canaries planted, so a full job shows they are not billed
    return settings.TRAINING_WORK_DIR


def run(job: TrainingJob) -> TrainingJob:
    drain()
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)
    return job


def usage_of(job: TrainingJob) -> int:
    return UsageRecord.objects.get(
        grant=job.grant, consumer_ref=job.consumer_ref, kind="tokens_trained"
    ).quantity


class TestTokensTrained:
    def test_a_full_job_bills_exactly_the_version_tokens_times_the_epochs(
        self, submit, grant, sealed_version
    ):
        job = run(submit(grant, hyperparameters={**TINY_HP, "epochs": 2, "validation_fraction": 0}))
        assert job.tokens_trained == sealed_version.tokens * 2 == job.tokens_planned
        assert usage_of(job) == job.tokens_trained
        assert job.receipt["receipt"]["platform_tokens_trained"] == job.tokens_trained

    def test_a_job_stopped_by_max_steps_bills_only_what_it_trained(
        self, submit, grant, sealed_version, bob, bolt, tiny, settings
    ):
        # One copy of each canary: with five, the one batch taken could hold only canary blocks
        # (canaries are seeded per license, so that depended on the grant's id) and bill 0.
        settings.TRAINING_CANARY_REPEATS = 1
        # 30 records of ~14 tokens in blocks of 32, batches of 4: several steps an epoch; 1 is taken.
        job = run(
            submit(grant, hyperparameters={**TINY_HP, "epochs": 2, "max_steps": 1, "validation_fraction": 0})
        )
        assert job.step == 1 and job.total_steps == 1
        assert 0 < job.tokens_trained < sealed_version.tokens // 2
        assert usage_of(job) == job.tokens_trained
        # The license counts what the job trained, not what it planned (version tokens x 2).
        grant.terms = {**grant.terms, "max_tokens": job.tokens_trained + sealed_version.tokens}
        grant.save(update_fields=["terms"])
        request = JobRequest(template="causal_lm", base=tiny, hyperparameters={**TINY_HP, "epochs": 1})
        assert job_submit(actor=bob, organisation=bolt, grant=grant, request=request).tokens_planned == (
            sealed_version.tokens
        )


class TestTokensBilled:
    def test_takes_the_runners_count_within_the_bound(self):
        assert launcher.tokens_billed({"tokens_trained": 120}, bound=500) == 120

    def test_never_bills_more_than_the_bound(self):
        assert launcher.tokens_billed({"tokens_trained": 900}, bound=500) == 500

    @pytest.mark.parametrize(
        "done", [{}, {"tokens_trained": None}, {"tokens_trained": -1}, {"tokens_trained": True}]
    )
    def test_a_missing_count_fails_the_job_instead_of_billing_the_bound(self, done):
        with pytest.raises(launcher.LaunchFailure) as caught:
            launcher.tokens_billed(done, bound=500)
        assert caught.value.code == "training.runner_failed"


class TestOpaqueLabels:
    def test_ids_follow_the_sorted_vocabulary_and_the_hash_commits_to_it(self):
        mapping, digest = launcher.opaque_labels(["pos", "neg", "pos", "neutral"])
        assert mapping == {"neg": "LABEL_0", "neutral": "LABEL_1", "pos": "LABEL_2"}
        assert digest == hashlib.sha256(json.dumps(["neg", "neutral", "pos"]).encode()).hexdigest()


class TestReadsByContribution:
    """The runner's reads per source, mapped to contributions and made to add up to the bill."""

    def inputs(self) -> launcher.Inputs:
        return launcher.Inputs(records=[], probes=[], sources=[41, 7, 93], source_tokens=[600, 300, 100])

    def test_maps_sources_to_contributions_and_drops_the_unread(self):
        done = {"tokens_by_source": [120, 0, 30]}
        assert launcher.reads_by_contribution(done, self.inputs(), billed=150) == {41: 120, 93: 30}

    def test_a_bill_cut_to_the_bound_is_apportioned_by_the_reads(self):
        # DP rounds each source down, or the bound cuts the bill: largest remainder, exact.
        done = {"tokens_by_source": [100, 100, 101]}
        reads = launcher.reads_by_contribution(done, self.inputs(), billed=200)
        assert reads == {41: 67, 7: 66, 93: 67} and sum(reads.values()) == 200

    def test_reads_that_round_to_nothing_fall_back_to_the_tokens_streamed(self):
        done = {"tokens_by_source": [0, 0, 0]}
        assert launcher.reads_by_contribution(done, self.inputs(), billed=10) == {41: 6, 7: 3, 93: 1}

    def test_nothing_billed_reads_nothing(self):
        assert launcher.reads_by_contribution({"tokens_by_source": [5, 0, 0]}, self.inputs(), billed=0) == {}

    @pytest.mark.parametrize(
        "done",
        [{}, {"tokens_by_source": None}, {"tokens_by_source": [1, -1]}, {"tokens_by_source": [1, 2, 3, 4]}],
    )
    def test_a_missing_or_malformed_count_fails_the_job(self, done):
        with pytest.raises(launcher.LaunchFailure) as failed:
            launcher.reads_by_contribution(done, self.inputs(), billed=10)
        assert failed.value.code == "training.runner_failed"
