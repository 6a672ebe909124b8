"""Possible-poison flags of a sealed version carried into its next versions (issue 15 item 3).

Real data paths: the owner values its sealed version through POST /training/valuations (the
sandboxed runner embeds with MiniLM and flags records whose label disagrees with their
neighbours'); the flags stay in custody; the next upload to the same dataset shows each record it
carries over as a ``possible_poison`` finding in its review (matched by a keyed fingerprint, not
by record id), droppable at sealing. A withdrawal's successor takes over the flags of the records
it carries, not those of the withdrawn contribution.
"""

from __future__ import annotations

from django.test import Client

from common.models import AuditEvent
from custody import services as custody
from custody.models import DatasetVersion, Finding, GrantPurpose, ValuationFlag, VersionState
from custody.services._keys import system_grant
from custody.services.valuation import POSSIBLE_POISON, valuation_flags_record
from tests.training.conftest import drain, jsonl
from tests.training.test_valuation_launcher import TOPICS, _work_dir  # noqa: F401  (autouse)
from training.models import JobState, TrainingJob

FLIPPED = (7, 18, 33, 44)
BODY = {
    "label_field": "kind",
    "hyperparameters": {"batch_size": 16, "max_seq_len": 32, "seed": 3},
    "valuation": {"k": 3, "min_group": 10, "holdout_fraction": 0.25},
}


def _rows(first: int = 0, count: int = 60) -> list[dict[str, str]]:
    """Two topics alternating; the records at FLIPPED carry the other topic's label."""
    rows = []
    for i in range(first, first + count):
        topic = ("weather", "cooking")[i % 2]
        label = ("cooking" if topic == "weather" else "weather") if i in FLIPPED else topic
        rows.append({"text": TOPICS[topic].format(i=i), "kind": label})
    return rows


def _texts(version: DatasetVersion) -> dict[int, tuple[str, str]]:
    """Record id -> (text, label), read inside custody through the review grant (test only)."""
    stream = custody.grant_stream_open(
        grant=system_grant(version, GrantPurpose.REVIEW), consumer_ref="test", purpose="review"
    )
    return {r["id"]: ("\n".join(r["text"].values()), r["meta"]["kind"]) for b in stream for r in b}


def _value(version: DatasetVersion, client) -> TrainingJob:
    response = client.post(
        "/api/v1/training/valuations", {**BODY, "version_id": version.public_id}, format="json"
    )
    assert response.status_code == 202, response.content
    drain()
    job = TrainingJob.objects.get(public_id=response.json()["id"])
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)
    return job


def _process(alice, version: DatasetVersion) -> DatasetVersion:
    custody.version_process(actor=alice, version=version)
    drain()
    version = DatasetVersion.objects.get(pk=version.pk)
    assert version.state == VersionState.REVIEW, version.failure_reason
    return version


def test_a_sealed_versions_flags_become_findings_of_the_next_versions_review(
    alice, acme, dataset, upload, token_for
):
    first = custody.version_create(actor=alice, dataset=dataset)
    upload(first, jsonl(_rows()), metadata_fields=["kind"])
    first = custody.version_seal(actor=alice, version=_process(alice, first))
    job = _value(first, token_for(alice, acme, ["read", "provide"]))

    # The sealed version is not changed: its flags wait in custody, no finding is added to it.
    flags = dict(ValuationFlag.objects.filter(version=first).values_list("record_id", "source"))
    assert len(flags) == job.metrics["valuation"]["summary"]["flagged"] >= 2
    assert set(flags.values()) == {job.public_id}
    assert not Finding.objects.filter(version=first, kind=POSSIBLE_POISON).exists()
    old = _texts(first)
    flagged_rows = sorted(flags)
    # Most of what the valuation flags is what was planted (its own recall/precision is tested
    # on a public set in tests/training/runner/test_valuation_data.py).
    assert len(set(flagged_rows) & set(FLIPPED)) >= 2

    # The next version: five new records first (so record ids shift by five), then the same 60,
    # except that the first flagged record has its label corrected (no longer the same record).
    corrected = flagged_rows[0]
    rows = _rows(first=100, count=5) + [
        {**row, "kind": ("weather", "cooking")[i % 2]} if i == corrected else row
        for i, row in enumerate(_rows())
    ]
    second = custody.version_create(actor=alice, dataset=dataset)
    upload(second, jsonl(rows), metadata_fields=["kind"])
    second = _process(alice, second)

    carried = Finding.objects.filter(version=second, kind=POSSIBLE_POISON)
    assert sorted(f.record_id for f in carried) == [i + 5 for i in flagged_rows[1:]]
    new = _texts(second)
    assert {new[f.record_id] for f in carried} == {old[i] for i in flagged_rows[1:]}
    assert all(first.public_id in f.detail and job.public_id in f.detail for f in carried)
    assert second.report.findings_summary[POSSIBLE_POISON] == len(flagged_rows) - 1
    event = AuditEvent.objects.get(action="custody.valuation_flags_carried", object_id=second.pk)
    assert event.details["from"] == [first.public_id] and event.details["added"] == len(flagged_rows) - 1

    # Shown beside the screening findings in the owner's review.
    page = Client()
    page.force_login(alice)
    html = page.get(f"/data/versions/{second.public_id}/report/").content.decode()
    assert "Possible poison (valuation)" in html and first.public_id in html

    # Dropped like any finding: sealing leaves them out.
    custody.findings_mark(actor=alice, version=second, finding_ids=[f.pk for f in carried], drop=True)
    dropping = set(Finding.objects.filter(version=second, drop=True).values_list("record_id", flat=True))
    sealed = custody.version_seal(actor=alice, version=second)
    assert sealed.records == 65 - len(dropping) and dropping >= {f.record_id for f in carried}
    assert not set(_texts(sealed)) & {f.record_id for f in carried}


def test_a_withdrawals_successor_keeps_the_flags_of_the_records_it_carries(alice, acme, dataset, upload):
    version = custody.version_create(actor=alice, dataset=dataset)
    kept = upload(version, jsonl(_rows(count=30)), metadata_fields=["kind"])
    gone = upload(version, jsonl(_rows(first=30, count=30)), filename="more.jsonl", metadata_fields=["kind"])
    version = custody.version_seal(actor=alice, version=_process(alice, version))
    kept.refresh_from_db()
    gone.refresh_from_db()
    # Flags as the launcher records them for a sealed version (one record of each contribution).
    ids = [kept.first_record_id + 7, gone.first_record_id + 3]
    assert valuation_flags_record(version=version, record_ids=ids, source="job_test") == 2
    assert valuation_flags_record(version=version, record_ids=ids, source="job_test") == 0

    withdrawal = custody.contribution_withdraw(actor=alice, contribution=gone, reason="consent ended")
    drain()
    withdrawal.refresh_from_db()
    successor = withdrawal.to_version
    assert successor is not None and successor.state == VersionState.SEALED
    assert list(ValuationFlag.objects.filter(version=successor).values_list("record_id", "source")) == [
        (ids[0], "job_test")
    ]
    # The old version keeps its own flags (its lineage is unchanged).
    assert ValuationFlag.objects.filter(version=version).count() == 2
