"""The ingest pipeline end to end: upload, parse, desensitize, screen, encrypt, review, seal."""

from __future__ import annotations

import random
from typing import cast

import pytest

from common.audit_verify import audit_verify
from common.models import AuditEvent, Organisation, User
from custody import services
from custody.exceptions import IntegrityFailure, NotFound
from custody.models import ContributionState, Finding, GrantPurpose, Shard, VersionState
from custody.services._keys import system_grant
from custody.services.ingest import BATCH_RECORDS
from tests.custody.conftest import drain, jsonl
from tests.factories import OrganisationFactory, UserFactory

TICKETS = [
    {
        "text": f"Ticket {i}: the printer on floor {i % 7} jams when printing duplex pages.",
        "topic": "printers",
    }
    for i in range(30)
]


def records_of(version) -> list[dict]:
    stream = services.grant_stream_open(
        grant=system_grant(version, GrantPurpose.REVIEW), consumer_ref="test", purpose="review"
    )
    return [record for batch in stream for record in batch]


class TestIngest:
    def test_a_version_goes_from_upload_to_review_with_progress(self, alice, version, upload):
        upload(version, jsonl(TICKETS), parts=3, metadata_fields=["topic"])
        services.version_process(actor=alice, version=version)
        drain()
        version.refresh_from_db()
        assert version.state == VersionState.REVIEW
        assert (version.records_expected, version.records_done, version.records) == (30, 30, 30)
        assert version.tokens > 30 * 10
        assert version.contributions.get().state == ContributionState.DONE
        assert hasattr(version, "report")

    def test_records_are_desensitized_and_metadata_kept(self, alice, version, upload):
        data = [{"text": "Call John Smith at john.smith@example.com today.", "topic": "sales"}]
        upload(version, jsonl(data), metadata_fields=["topic"])
        services.version_process(actor=alice, version=version)
        drain()
        version.refresh_from_db()
        (record,) = records_of(version)
        assert "john.smith@example.com" not in record["text"]["text"]
        assert "John Smith" not in record["text"]["text"]
        assert record["meta"] == {"topic": "sales"}
        assert record["lang"] == "en"
        counts = version.report.counts["entities"]
        assert counts.get("EMAIL_ADDRESS") == 1 and counts.get("PERSON") == 1

    def test_spans_many_batches_and_contributions_with_unique_ids(self, alice, version, upload):
        many = [{"text": f"Record number {i} about gardening."} for i in range(BATCH_RECORDS + 5)]
        upload(version, jsonl(many))
        upload(version, jsonl(TICKETS), filename="second.jsonl")
        services.version_process(actor=alice, version=version)
        drain()
        ids = [r["id"] for r in records_of(version)]
        assert len(ids) == len(set(ids)) == BATCH_RECORDS + 5 + 30
        assert list(version.shards.values_list("index", flat=True)) == [0, 1, 2]

    def test_running_a_batch_twice_never_duplicates(self, alice, version, upload):
        from custody.services.ingest import process_batch

        contribution = upload(version, jsonl(TICKETS))
        services.version_process(actor=alice, version=version)
        drain()
        process_batch(contribution_id=contribution.pk, index=0)
        assert Shard.objects.filter(version=version).count() == 1
        assert len(records_of(version)) == 30

    def test_duplicates_are_flagged_and_dropped_at_sealing(self, alice, version, upload):
        data = [*TICKETS, TICKETS[0], TICKETS[1]]
        upload(version, jsonl(data))
        services.version_process(actor=alice, version=version)
        drain()
        dupes = Finding.objects.filter(version=version, kind="exact_duplicate")
        assert sorted(dupes.values_list("record_id", flat=True)) == [30, 31]
        services.findings_mark(
            actor=alice, version=version, finding_ids=list(dupes.values_list("pk", flat=True)), drop=True
        )
        sealed = services.version_seal(actor=alice, version=version)
        assert sealed.state == VersionState.SEALED
        assert sealed.records == 30
        assert len(sealed.merkle_root) == 64
        assert sorted(r["id"] for r in records_of(sealed)) == list(range(30))
        event = AuditEvent.objects.filter(action="custody.version_seal").get()
        assert event.details["merkle_root"] == sealed.merkle_root
        assert audit_verify().ok

    def test_the_sealed_report_counts_only_the_records_kept(self, alice, version, upload):
        from marketplace.services.catalog import listing_statistics

        mailed = {"text": "Write to maria.lopez@example.com about the duplex jam.", "topic": "printers"}
        data = [*TICKETS, mailed, mailed, mailed]
        upload(version, jsonl(data))
        services.version_process(actor=alice, version=version)
        drain()
        version.refresh_from_db()
        assert version.report.counts["entities"]["EMAIL_ADDRESS"] == 3
        dupes = Finding.objects.filter(version=version, kind="exact_duplicate")
        assert dupes.count() == 2
        services.findings_mark(
            actor=alice, version=version, finding_ids=list(dupes.values_list("pk", flat=True)), drop=True
        )
        sealed = services.version_seal(actor=alice, version=version)
        statistics = listing_statistics(sealed)
        assert statistics["records"] == 31
        assert sum(statistics["languages"].values()) == 31
        assert sum(statistics["length_distribution"].values()) == 31
        assert statistics["entities"]["EMAIL_ADDRESS"] == 1
        sealed.report.refresh_from_db()
        assert sealed.report.counts["by_language"]["en"] == {"EMAIL_ADDRESS": 1}

    def test_sealing_shreds_the_quarantine_copy(self, alice, version, upload, settings):
        contribution = upload(version, jsonl(TICKETS))
        services.version_process(actor=alice, version=version)
        drain()
        services.version_seal(actor=alice, version=version)
        contribution.refresh_from_db()
        assert contribution.quarantine_shredded_at is not None
        assert not list((settings.BLOB_DIR / "quarantine").rglob("*-*"))
        assert not (settings.KEY_DIR / "custody" / f"kek-quarantine-{contribution.pk}.json").exists()

    def test_a_tampered_shard_fails_with_an_integrity_error(self, alice, version, upload, settings):
        upload(version, jsonl(TICKETS))
        services.version_process(actor=alice, version=version)
        drain()
        shard = version.shards.get()
        path = settings.BLOB_DIR / shard.blob_key
        blob = bytearray(path.read_bytes())
        blob[40] ^= 0x01
        path.write_bytes(bytes(blob))
        with pytest.raises(IntegrityFailure) as caught:
            records_of(version)
        assert caught.value.code == "custody.shard_hash_mismatch"
        # The message names the version by its public id, never its integer key.
        assert f"Shard 0 of version {version.public_id} " in caught.value.detail


class TestFailedIngest:
    def test_an_invalid_large_upload_fails_the_version_with_the_reason(
        self, alice, version, upload, settings
    ):
        settings.SYNC_VALIDATE_MAX_BYTES = 0
        upload(version, jsonl(TICKETS) + b'{"text": broken}\n')
        services.version_process(actor=alice, version=version)
        drain()
        version.refresh_from_db()
        assert version.state == VersionState.FAILED
        assert "line 31" in version.failure_reason
        event = AuditEvent.objects.get(action="custody.ingest_failed")
        assert "broken" not in str(event.details)

    def test_a_retry_runs_again_without_duplicates(self, alice, version, upload, settings):
        settings.SYNC_VALIDATE_MAX_BYTES = 0
        contribution = upload(version, jsonl(TICKETS))
        services.version_process(actor=alice, version=version)
        # Fail it before its work ran, as a failure mid-way would leave it, then
        # retry: the old and the new parse both run, and still no duplicates.
        from custody.services.ingest import contribution_fail

        contribution_fail(contribution_id=contribution.pk, reason="worker lost", code="test")
        services.version_retry(actor=alice, version=version)
        drain()
        version.refresh_from_db()
        assert version.state == VersionState.REVIEW
        assert len(records_of(version)) == 30
        assert version.shards.count() == 1


class TestPooledContributions:
    def test_an_invited_provider_contributes_and_each_contribution_counts_its_own(
        self, alice, acme, version, upload
    ):
        from tests.factories import MembershipFactory

        cora = cast(Organisation, OrganisationFactory(name="Cora Texts", is_provider=True))
        dana = cast(User, UserFactory(username="dana"))
        MembershipFactory(user=dana, organisation=cora, role="member")
        with pytest.raises(NotFound):
            services.contribution_start(actor=dana, organisation=cora, version=version, filename="c.jsonl")
        services.contributor_invite(actor=alice, version=version, organisation=cora)
        upload(version, jsonl(TICKETS))
        theirs = services.contribution_start(
            actor=dana, organisation=cora, version=version, filename="c.jsonl"
        )
        services.contribution_part_put(contribution=theirs, number=1, data=jsonl(TICKETS[:10]))
        services.contribution_complete(actor=dana, contribution=theirs)
        services.version_process(actor=alice, version=version)
        drain()
        version.refresh_from_db()
        assert version.state == VersionState.REVIEW
        counts = {c.contributor.name: (c.records, c.tokens > 0) for c in version.contributions.all()}
        assert counts == {"Acme Corpora": (30, True), "Cora Texts": (10, True)}
        assert version.tokens == sum(c.tokens for c in version.contributions.all())


def test_a_record_in_two_trigger_groups_gets_one_finding(alice, version, upload):
    # Two rare phrases over different sets of records; record 0 carries both,
    # so screening puts it in two trigger groups (found by bench/ingest.py).
    rng = random.Random(3)
    words = [
        "apple",
        "river",
        "stone",
        "cloud",
        "garden",
        "window",
        "paper",
        "light",
        "music",
        "forest",
        "coffee",
        "table",
        "winter",
        "summer",
        "bridge",
        "market",
        "school",
        "doctor",
        "engine",
        "silver",
        "orange",
        "planet",
        "yellow",
        "battery",
        "camera",
        "rocket",
        "puzzle",
    ]
    rows = []
    for i in range(400):
        body = " ".join(rng.choice(words) for _ in range(25))
        body += " zxq vlorp kwib." if i % 33 == 0 else ""
        body += " snarf gleep trob." if i % 31 == 0 else ""
        rows.append({"text": body})
    upload(version, jsonl(rows))
    services.version_process(actor=alice, version=version)
    drain()
    version.refresh_from_db()
    assert version.state == VersionState.REVIEW
    triggers = Finding.objects.filter(version=version, kind="trigger_ngram")
    assert triggers.filter(record_id=0).count() == 1
    assert triggers.count() == 25


def test_a_co_contributors_failure_detail_stays_with_that_contributor(
    alice, acme, version, settings, token_for
):
    from tests.factories import MembershipFactory

    settings.SYNC_VALIDATE_MAX_BYTES = 0
    cora = cast(Organisation, OrganisationFactory(name="Cora Texts", is_provider=True))
    dana = cast(User, UserFactory(username="dana"))
    MembershipFactory(user=dana, organisation=cora, role="member")
    services.contributor_invite(actor=alice, version=version, organisation=cora)
    theirs = services.contribution_start(actor=dana, organisation=cora, version=version, filename="c.jsonl")
    services.contribution_part_put(contribution=theirs, number=1, data=b'{"text": "secretheadervalue"\n')
    services.contribution_complete(actor=dana, contribution=theirs)
    services.version_process(actor=alice, version=version)
    drain()
    version.refresh_from_db()
    assert version.state == VersionState.FAILED
    assert "secretheadervalue" not in version.failure_reason
    owner_view = token_for(alice, acme, ["read"]).get(f"/api/v1/contributions/{theirs.public_id}").json()
    assert owner_view["failure_reason"] == "This upload could not be processed."
    own_view = token_for(dana, cora, ["read"]).get(f"/api/v1/contributions/{theirs.public_id}").json()
    assert "line 1" in own_view["failure_reason"]
