# ruff: noqa: F811  (fixtures imported from tests/training/custody_model_fixtures.py)
"""Generation jobs (issue 17 items 1-2): a custody model writes a synthetic corpus into custody.

The leakage screen's controls first, on the custody service alone (a real sealed version, its
screening key): planted verbatim and near copies of source records, and a canary secret, are
dropped; ordinary text passes. Then the whole path for real: a gpt2-tiny trained in the sandbox
(weights in custody), a generate job whose prompts plant 5% verbatim source records, the runner
sampling in the sandbox, the screen, and the ingest of what is kept as a new version of the
trainer's, marked model-generated, sealed by its owner without the planted copies.
"""

from __future__ import annotations

import pytest

from custody import services as custody
from custody.models import DatasetVersion, GrantPurpose, VersionState
from custody.services.synthetic import leakage_screen
from tests.custody.conftest import drain
from tests.training.custody_model_fixtures import (  # noqa: F401
    _work_dir,
    bob_api,
    custody_grant,
    custody_model,
    source_records,
    source_version,
)
from training.models import JobState, TrainingJob
from training.services.generation import source_canaries

URL = "/api/v1/training/jobs"
ORDINARY = [
    "Ticket about a late refund",
    "The warehouse team wrote",
    "Please check the account",
    "A customer called to say",
    "Summary of the outage",
    "Follow up on the order",
]


def _records(version: DatasetVersion) -> list[str]:
    grant = custody.system_grant(version, GrantPurpose.GATE)
    stream = custody.grant_stream_open(grant=grant, consumer_ref="test-read", purpose=GrantPurpose.GATE)
    return [str(record["text"].get("text", "")) for batch in stream for record in batch]


class TestLeakageScreen:
    def test_planted_copies_and_canaries_are_dropped_and_ordinary_text_passes(self, source_version):
        sources = source_records()
        ordinary = [f"{prompt} number {i} needs an answer today" for i, prompt in enumerate(ORDINARY * 16)]
        verbatim = sources[:3]
        near = [
            sources[3].replace("Ticket", "Case") + " again",
            "Note: " + sources[4] + " and more words follow",
        ]
        canary = ["the vault code for account 123456 is " + "482 019 377"]
        records = ordinary + verbatim + near + canary
        kept, report = leakage_screen(
            source=source_version,
            records=records,
            canaries=["the vault code for account 123456 is 482 019 377"],
            consumer_ref="test-screen",
        )
        assert kept == ordinary
        assert (report.dropped_exact, report.dropped_near, report.dropped_canary) == (3, 2, 1)
        assert report.generated == len(records) and report.kept == len(ordinary)
        assert report.source_records == len(sources)

    def test_ordinary_text_alone_loses_nothing(self, source_version):
        ordinary = [f"{prompt} item {i}" for i, prompt in enumerate(ORDINARY * 5)]
        kept, report = leakage_screen(source=source_version, records=ordinary, canaries=[], consumer_ref="t")
        assert kept == ordinary and report.dropped == 0


@pytest.mark.timeout(900)  # trains in the sandbox and ingests twice: past the 300 s default
def test_a_generator_planted_to_copy_5_percent_has_them_dropped_before_sealing(
    bob_api, bob, bolt, custody_model, source_version
):
    sources = source_records()
    planted = sources[:2]
    prompts = planted + [f"{ORDINARY[i % len(ORDINARY)]} {i}" for i in range(38)]
    body = {
        "template": "generate",
        "custody_model": custody_model.public_id,
        # One record per prompt: 2 of 40 (5%) begin with a whole source record.
        "generation": {"prompts": prompts, "records": 40, "max_new_tokens": 6, "seed": 1},
    }
    response = bob_api.post(URL, body, format="json")
    assert response.status_code == 202, response.content
    job = TrainingJob.objects.get(public_id=response.json()["id"])
    assert job.template == "generate" and job.grant_id == custody_model.grant_id
    drain()
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)
    report = job.metrics["generation"]
    assert report["generated"] == 40
    # Positive control: both planted copies caught; negative control: the ordinary ones pass.
    assert report["dropped_exact"] + report["dropped_near"] >= 2
    assert report["dropped"] <= 3, report
    assert report["kept"] == 40 - report["dropped"]

    version = DatasetVersion.objects.get(public_id=report["synthetic_version"])
    assert version.dataset.owner == bolt
    assert version.state == VersionState.REVIEW
    assert version.records == report["kept"]
    provenance = version.provenance
    assert provenance["model_generated"] is True and provenance["job"] == job.public_id
    assert provenance["source_merkle_root"] == source_version.merkle_root
    lineage = job.receipt["receipt"]["lineage"][0]
    assert provenance["model_artifact_sha256"] == lineage["artifact_sha256"]
    assert job.receipt["receipt"]["synthetic_version"]["dataset_version"] == version.public_id

    sealed = custody.version_seal(actor=bob, version=version, confirm_residual_risk=True)
    texts = _records(sealed)
    assert len(texts) == report["kept"]
    for source in planted:
        assert not any(source in text for text in texts), "a planted copy reached the sealed version"
    # The source model's canaries were checked: none of their codes is in the synthetic records.
    codes = [secret.rsplit(" is ", 1)[1] for secret in source_canaries(custody_model)]
    assert not any(code in text for code in codes for text in texts)
