"""Withdrawal of a contribution from a sealed, pooled version: re-sealed without it, licenses moved."""

from __future__ import annotations

from decimal import Decimal
from typing import cast

import pytest

from common.audit import audit_integrate
from common.models import AuditEvent, Notification, Organisation, User, WorkItem
from custody import services, signals
from custody.exceptions import Conflict, Invalid, NotFound, NotPermitted
from custody.keys import kek_provider
from custody.models import (
    Contribution,
    ContributionWithdrawal,
    DatasetVersion,
    Finding,
    GrantState,
    PrivacyBudgetEntry,
    Shard,
    VersionState,
    WithdrawalState,
)
from custody.services import withdrawal as withdrawal_service
from tests.custody.conftest import drain, jsonl
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.grants import grant_for_test

pytestmark = pytest.mark.django_db

SENTINEL = "SENTINEL-7f3a-withdrawn"


@pytest.fixture
def cora(db) -> Organisation:
    return cast(Organisation, OrganisationFactory(name="Cora Texts", slug="cora-texts", is_provider=True))


@pytest.fixture
def cora_admin(cora) -> User:
    user = cast(User, UserFactory(username="cora-admin"))
    MembershipFactory(user=user, organisation=cora, role="admin")
    return user


@pytest.fixture
def cora_member(cora) -> User:
    user = cast(User, UserFactory(username="cora-member"))
    MembershipFactory(user=user, organisation=cora, role="member")
    return user


def contribute(
    version: DatasetVersion, user: User, organisation: Organisation, records: list[str]
) -> Contribution:
    contribution = services.contribution_start(
        actor=user, organisation=organisation, version=version, filename="records.jsonl"
    )
    services.contribution_part_put(
        contribution=contribution, number=1, data=jsonl([{"text": text} for text in records])
    )
    return services.contribution_complete(actor=user, contribution=contribution)


@pytest.fixture
def pooled(alice, acme, cora, cora_admin, dataset) -> tuple[DatasetVersion, Contribution, Contribution]:
    """A sealed version pooled from Acme (20 records) and Cora (10 records, each holding the sentinel)."""
    version = services.version_create(actor=alice, dataset=dataset, epsilon_cap=Decimal("8"))
    services.contributor_invite(actor=alice, version=version, organisation=cora)
    mine = contribute(version, alice, acme, [f"Acme note {i} about the late shipment." for i in range(20)])
    theirs = contribute(version, cora_admin, cora, [f"Cora line {i} {SENTINEL}." for i in range(10)])
    services.version_process(actor=alice, version=version)
    drain()
    sealed = services.version_seal(actor=alice, version=version)
    mine.refresh_from_db()
    theirs.refresh_from_db()
    return sealed, mine, theirs


def read_all(grant) -> list[dict]:
    return [
        r
        for batch in services.grant_stream_open(grant=grant, consumer_ref="job-x", purpose="license")
        for r in batch
    ]


class TestContributionWithdraw:
    def test_a_co_contributor_withdraws_and_a_new_version_is_sealed_without_it(
        self, pooled, cora_admin, bolt
    ):
        old, mine, theirs = pooled
        grant = grant_for_test(old, bolt)
        assert any(SENTINEL in r["text"]["text"] for r in read_all(grant))

        withdrawal = services.contribution_withdraw(
            actor=cora_admin, contribution=theirs, reason="consent ended"
        )
        old.refresh_from_db()
        assert old.state == VersionState.SUPERSEDED and withdrawal.state == WithdrawalState.PENDING
        with pytest.raises(Conflict) as caught:
            read_all(grant)  # closed at once, before the re-seal has run
        assert caught.value.code == "custody.version_unavailable"

        drain()
        withdrawal.refresh_from_db()
        new = withdrawal.to_version
        assert withdrawal.state == WithdrawalState.DONE and new is not None
        assert new.state == VersionState.SEALED and new.number == old.number + 1
        assert new.merkle_root and new.merkle_root != old.merkle_root
        assert new.key_name != old.key_name and new.wrapped_data_key != old.wrapped_data_key
        assert kek_provider().kek_state(name=new.key_name) == "active"
        assert new.records == mine.records == 20 and new.tokens == mine.tokens
        carried = new.contributions.get()
        assert carried.carried_from == mine and carried.contributor == mine.contributor
        assert set(Shard.objects.filter(version=new).values_list("contribution", flat=True)) == {carried.pk}

        grant.refresh_from_db()
        assert (
            grant.version == new
            and grant.state == GrantState.ACTIVE
            and withdrawal.grants_moved == [grant.pk]
        )
        records = read_all(grant)
        assert len(records) == 20 and not any(SENTINEL in r["text"]["text"] for r in records)
        assert {r["contribution"] for r in records} == {carried.pk}

    def test_is_idempotent_and_audited(self, pooled, cora_admin, bolt):
        old, _mine, theirs = pooled
        grant_for_test(old, bolt)
        first = services.contribution_withdraw(actor=cora_admin, contribution=theirs, reason="consent ended")
        again = services.contribution_withdraw(actor=cora_admin, contribution=theirs, reason="again")
        assert again.pk == first.pk and again.reason == "consent ended"
        drain()
        drain()  # nothing left to run
        assert (
            services.contribution_withdraw(actor=cora_admin, contribution=theirs, reason="x").pk == first.pk
        )
        assert WorkItem.objects.filter(kind="custody.withdraw").count() == 1
        assert DatasetVersion.objects.filter(dataset=old.dataset).count() == 2
        audit_integrate()
        asked = AuditEvent.objects.get(action="custody.contribution_withdraw")
        assert asked.actor_id == cora_admin.pk and asked.details["requested_as"] == "contributor"
        assert asked.details["reason"] == "consent ended"
        done = AuditEvent.objects.get(action="custody.contribution_withdrawn")
        first.refresh_from_db()
        assert done.details["to_version"] == first.to_version_id
        assert AuditEvent.objects.filter(action="custody.grant_move").count() == 1
        assert AuditEvent.objects.filter(
            action="custody.decrypt", details__what__startswith="withdraw_reseal_shard_"
        ).exists()

    def test_notifies_every_contributor_and_rings_after_commit(
        self, pooled, cora_admin, acme, cora, django_capture_on_commit_callbacks
    ):
        old, _mine, theirs = pooled
        rings: list[dict] = []

        def on_withdrawn(sender, **kwargs):
            rings.append(kwargs)

        signals.contribution_withdrawn.connect(on_withdrawn)
        try:
            withdrawal = services.contribution_withdraw(actor=cora_admin, contribution=theirs, reason="x")
            with django_capture_on_commit_callbacks(execute=True):
                drain()
        finally:
            signals.contribution_withdrawn.disconnect(on_withdrawn)
        withdrawal.refresh_from_db()
        assert [{k: r[k] for k in ("withdrawal_id", "from_version_id", "to_version_id")} for r in rings] == [
            {
                "withdrawal_id": withdrawal.pk,
                "from_version_id": old.pk,
                "to_version_id": withdrawal.to_version_id,
            }
        ]
        notified = set(
            Notification.objects.filter(kind="dataset.contribution_withdrawn").values_list(
                "organisation", flat=True
            )
        )
        assert notified == {acme.pk, cora.pk}

    def test_carries_the_privacy_budget_already_spent(self, pooled, cora_admin, bolt):
        old, _mine, theirs = pooled
        services.privacy_budget_reserve(version=old, consumer_ref="job-1", epsilon=Decimal("3"))
        services.privacy_budget_commit(version=old, consumer_ref="job-1")
        withdrawal = services.contribution_withdraw(actor=cora_admin, contribution=theirs, reason="x")
        drain()
        withdrawal.refresh_from_db()
        entry = PrivacyBudgetEntry.objects.get(version=withdrawal.to_version)
        assert entry.epsilon == Decimal("3") and entry.state == "committed"

    def test_only_the_contributors_admin_or_an_operator_may_ask(self, pooled, alice, cora_member, carol, ops):
        _old, mine, theirs = pooled
        with pytest.raises(NotFound):
            services.contribution_withdraw(
                actor=alice, contribution=theirs, reason="x"
            )  # the owner: not its data
        with pytest.raises(NotPermitted):
            services.contribution_withdraw(actor=cora_member, contribution=theirs, reason="x")
        with pytest.raises(NotFound):
            services.contribution_withdraw(actor=carol, contribution=theirs, reason="x")
        assert not ContributionWithdrawal.objects.exists()
        by_ops = services.contribution_withdraw(actor=ops, contribution=mine, reason="court order")
        assert by_ops.requested_as == "operator"

    def test_needs_a_reason_and_leaves_nothing_behind(self, pooled, cora_admin):
        old, _mine, theirs = pooled
        with pytest.raises(Invalid) as caught:
            services.contribution_withdraw(actor=cora_admin, contribution=theirs, reason="  ")
        assert caught.value.code == "custody.reason_required"
        old.refresh_from_db()
        assert old.state == VersionState.SEALED and not ContributionWithdrawal.objects.exists()

    def test_a_second_withdrawal_from_the_superseded_version_is_refused(self, pooled, cora_admin, alice):
        _old, mine, theirs = pooled
        services.contribution_withdraw(actor=cora_admin, contribution=theirs, reason="x")
        with pytest.raises(Conflict) as caught:
            services.contribution_withdraw(actor=alice, contribution=mine, reason="y")
        assert caught.value.code == "custody.version_superseded"

    def test_the_last_contribution_is_taken_down_instead(self, sealed_version, alice):
        only = sealed_version.contributions.get()
        with pytest.raises(Conflict) as caught:
            services.contribution_withdraw(actor=alice, contribution=only, reason="x")
        assert caught.value.code == "custody.withdraw_last_contribution"

    def test_a_contribution_whose_records_were_all_dropped_has_nothing_to_withdraw(
        self, alice, acme, cora, cora_admin, dataset
    ):
        version = services.version_create(actor=alice, dataset=dataset)
        services.contributor_invite(actor=alice, version=version, organisation=cora)
        rows = [f"Acme note {i} about the late shipment to the northern depot." for i in range(8)]
        contribute(version, alice, acme, rows)
        theirs = contribute(version, cora_admin, cora, rows)  # exact copies of Acme's, flagged as duplicates
        services.version_process(actor=alice, version=version)
        drain()
        theirs.refresh_from_db()
        first = cast(int, theirs.first_record_id)
        duplicates = Finding.objects.filter(version=version, record_id__gte=first, record_id__lt=first + 8)
        assert duplicates.values("record_id").distinct().count() == 8
        services.findings_mark(
            actor=alice, version=version, finding_ids=duplicates.values_list("pk", flat=True), drop=True
        )
        version = services.version_seal(actor=alice, version=version)
        with pytest.raises(Conflict) as caught:
            services.contribution_withdraw(actor=cora_admin, contribution=theirs, reason="x")
        assert caught.value.code == "custody.nothing_to_withdraw"

    def test_a_version_in_review_is_refused(self, version, alice, upload):
        contribution = upload(version, jsonl([{"text": "a record"}]))
        services.version_process(actor=alice, version=version)
        drain()
        with pytest.raises(Conflict) as caught:
            services.contribution_withdraw(actor=alice, contribution=contribution, reason="x")
        assert caught.value.code == "custody.version_not_sealed"


class TestWithdrawalResumes:
    def test_a_run_cut_after_some_shards_finishes_the_same_on_the_next_run(
        self, monkeypatch, alice, acme, cora, cora_admin, dataset, bolt
    ):
        version = services.version_create(actor=alice, dataset=dataset)
        services.contributor_invite(actor=alice, version=version, organisation=cora)
        # Three shards of Acme's (BATCH_RECORDS each at most) and one of Cora's.
        from custody.services.ingest import BATCH_RECORDS

        mine = contribute(version, alice, acme, [f"Acme record {i}." for i in range(BATCH_RECORDS * 2 + 5)])
        theirs = contribute(version, cora_admin, cora, [f"{SENTINEL} {i}" for i in range(7)])
        services.version_process(actor=alice, version=version)
        drain()
        version = services.version_seal(actor=alice, version=version)
        mine.refresh_from_db()
        grant = grant_for_test(version, bolt)
        withdrawal = services.contribution_withdraw(actor=cora_admin, contribution=theirs, reason="x")

        # What a worker killed mid-way leaves: the successor exists and one shard is written.
        successor = withdrawal_service._successor(withdrawal.pk)
        kept = withdrawal_service._kept_shards(withdrawal)
        assert len(kept) == 3
        with monkeypatch.context() as patched:
            patched.setattr(withdrawal_service, "_kept_shards", lambda w: kept[:1])
            withdrawal_service._reseal_shards(withdrawal, successor)
        assert Shard.objects.filter(version=successor).count() == 1

        drain()  # the work item runs again from the start
        withdrawal.refresh_from_db()
        assert withdrawal.state == WithdrawalState.DONE and withdrawal.to_version_id == successor.pk
        assert DatasetVersion.objects.filter(dataset=dataset).count() == 2
        assert Shard.objects.filter(version=successor).count() == 3
        grant.refresh_from_db()
        records = read_all(grant)
        assert len(records) == mine.records and not any(SENTINEL in r["text"]["text"] for r in records)


class TestLineage:
    def test_lists_every_read_of_the_withdrawn_records_across_versions(self, pooled, cora_admin, bolt):
        old, mine, theirs = pooled
        grant = grant_for_test(old, bolt)
        services.usage_record(
            grant=grant,
            consumer_ref="training-job-1",
            kind="tokens_trained",
            quantity=mine.tokens + theirs.tokens,
            by_contribution={mine.pk: mine.tokens, theirs.pk: theirs.tokens},
        )
        services.contribution_withdraw(actor=cora_admin, contribution=theirs, reason="x")
        drain()
        reads = services.contribution_lineage(contribution=theirs)
        assert [(r.consumer_ref, r.tokens, r.version_id, r.licensee_id) for r in reads] == [
            ("training-job-1", theirs.tokens, old.pk, bolt.pk)
        ]
        # Acme's records now live in v2; a read of the v1 copy is part of their lineage too.
        carried = Contribution.objects.get(carried_from=mine)
        assert [r.tokens for r in services.contribution_lineage(contribution=carried)] == [mine.tokens]
