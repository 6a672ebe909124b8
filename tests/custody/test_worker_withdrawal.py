"""Withdrawals through a real Celery worker, SIGKILLed mid-re-seal: each finishes once, nothing doubled.

Acme and Cora pool records in a sealed version (Acme's fill three shards);
Cora withdraws its contribution and the ``custody.withdraw`` item re-seals
Acme's shards under a new version's key. The drill (tests/worker/drill.py)
kills the worker while it holds that item; the sweeper re-enqueues the
expired lease and the next attempt finishes from where the last one stopped.
:func:`check_withdrawals` judges the result: one successor per acknowledged
withdrawal, sealed with every kept shard and readable under its own key, the
license moved and audited once, no withdrawn record in a successor, no item
left unfinished; and the audit chain is intact. Quick profile: one kill.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import cast

import pytest

from chaos.checks import acknowledged, check_audit_chain
from chaos.history import Event
from common.audit import audit_integrate
from common.models import AuditEvent, Organisation, User, WorkItem, WorkState
from common.work import work_sweep
from custody import services
from custody.models import ContributionWithdrawal, DatasetVersion, Grant, VersionState, WithdrawalState
from custody.services.ingest import BATCH_RECORDS
from custody.services.withdrawal import WITHDRAW_WORK
from tests.custody.conftest import jsonl
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.grants import grant_for_test
from tests.worker.drill import KillDrill, use_worker_dirs

pytestmark = pytest.mark.worker

SENTINEL = "withdrawn-sentinel-31c9"


@pytest.fixture
def worker(celery_worker_process, settings):
    use_worker_dirs(settings, celery_worker_process)
    settings.WORK_REQUEUE_AFTER_SECONDS = 5
    return celery_worker_process


def check_withdrawals(events: Sequence[Event]) -> list[str]:
    """Every acknowledged withdrawal re-sealed once, complete, readable and free of the withdrawn records."""
    problems: list[str] = []
    for ack in acknowledged(events, "withdraw"):
        withdrawal = ContributionWithdrawal.objects.get(pk=ack.get("withdrawal"))
        if withdrawal.state != WithdrawalState.DONE or withdrawal.to_version is None:
            problems.append(f"withdrawal {withdrawal.pk} did not finish")
            continue
        new = withdrawal.to_version
        versions = DatasetVersion.objects.filter(dataset_id=new.dataset_id).count()
        if versions != 2:
            problems.append(f"withdrawal {withdrawal.pk} left {versions} versions, not 2")
        if new.state != VersionState.SEALED or new.shards.count() != ack.get("kept_shards"):
            problems.append(f"successor {new.pk} is {new.state} with {new.shards.count()} shards")
        grant = Grant.objects.get(pk=ack.get("grant"))
        texts = [
            r["text"]["text"]
            for b in services.grant_stream_open(grant=grant, consumer_ref="check", purpose="license")
            for r in b
        ]
        if len(texts) != ack.get("kept_records") or any(SENTINEL in t for t in texts):
            problems.append(f"successor {new.pk} streams {len(texts)} records (or a withdrawn one)")
        for action, object_id in (
            ("custody.grant_move", grant.pk),
            ("custody.contribution_withdrawn", withdrawal.contribution_id),
        ):
            n = AuditEvent.objects.filter(action=action, object_id=str(object_id)).count()
            if n != 1:
                problems.append(f"{action} on {object_id} audited {n} times")
    unfinished = WorkItem.objects.filter(kind=WITHDRAW_WORK).exclude(state=WorkState.DONE)
    problems += [f"withdraw item {item.pk} did not finish ({item.state})" for item in unfinished]
    return problems


class WithdrawalStream:
    """Pooled versions, each with one license, from which Cora withdraws one at a time."""

    def __init__(
        self, drill: KillDrill, alice: User, acme: Organisation, bolt: Organisation, limit: int
    ) -> None:
        self.drill, self.alice, self.acme, self.bolt, self.limit = drill, alice, acme, bolt, limit
        self.cora = cast(Organisation, OrganisationFactory(name="Cora Texts", is_provider=True))
        self.dana = cast(User, UserFactory(username="dana"))
        MembershipFactory(user=self.dana, organisation=self.cora, role="admin")
        self.withdrawals: list[int] = []

    def _sealed(self) -> DatasetVersion:
        dataset = services.dataset_create(
            actor=self.alice, organisation=self.acme, name=f"Pool {len(self.withdrawals)}"
        )
        version = services.version_create(actor=self.alice, dataset=dataset)
        services.contributor_invite(actor=self.alice, version=version, organisation=self.cora)
        for actor, org, rows in (
            (
                self.alice,
                self.acme,
                [f"Acme note {i} on the delayed order." for i in range(BATCH_RECORDS * 2 + 50)],
            ),
            (self.dana, self.cora, [f"Cora row {i} {SENTINEL}" for i in range(20)]),
        ):
            c = services.contribution_start(
                actor=actor, organisation=org, version=version, filename="r.jsonl"
            )
            services.contribution_part_put(contribution=c, number=1, data=jsonl([{"text": t} for t in rows]))
            services.contribution_complete(actor=actor, contribution=c)
        services.version_process(actor=self.alice, version=version)
        deadline = time.monotonic() + 600
        while DatasetVersion.objects.get(pk=version.pk).state != VersionState.REVIEW:
            assert time.monotonic() < deadline, "ingest did not finish"
            work_sweep()
            time.sleep(0.5)
        return services.version_seal(actor=self.alice, version=version)

    def withdraw(self) -> None:
        version = self._sealed()
        grant = grant_for_test(version, self.bolt)
        theirs = version.contributions.get(contributor=self.cora)
        kept = version.shards.exclude(contribution=theirs)
        self.drill.invoke("withdraw", version=version.pk)
        withdrawal = services.contribution_withdraw(
            actor=self.dana, contribution=theirs, reason="consent ended"
        )
        self.withdrawals.append(withdrawal.pk)
        self.drill.ok(
            "withdraw",
            withdrawal=withdrawal.pk,
            grant=grant.pk,
            kept_shards=kept.count(),
            kept_records=sum(kept.values_list("records", flat=True)),
        )

    def outstanding(self) -> bool:
        return ContributionWithdrawal.objects.filter(
            pk__in=self.withdrawals, state=WithdrawalState.PENDING
        ).exists()

    def feed(self) -> None:
        if not self.outstanding():
            assert len(self.withdrawals) < self.limit, "the withdrawals ran out before the schedule"
            self.withdraw()

    def busy(self) -> str | None:
        item = self.drill.holding()
        return f"{item.kind} {item.ref} (attempt {item.attempts})" if item is not None else None


def withdrawal_drill(worker, alice, acme, bolt, *, name: str, faults: int, limit: int) -> None:
    with KillDrill(
        name,
        worker,
        kinds=[WITHDRAW_WORK],
        faults=faults,
        earliest=0.05,
        latest=0.3,
        recover=work_sweep,
        sweep_every=1.0,
    ) as drill:
        stream = WithdrawalStream(drill, alice, acme, bolt, limit)
        stream.withdraw()
        drill.strike_all(busy=stream.busy, feed=stream.feed, done=lambda: not stream.outstanding(), poll=0.01)
        drill.finish(lambda: not stream.outstanding(), what="every withdrawal re-sealed", timeout=300)
        audit_integrate()
        assert drill.check([check_withdrawals, check_audit_chain]) == []
    assert drill.kills == faults


@pytest.mark.timeout(900)
def test_a_worker_killed_mid_reseal_finishes_each_withdrawal_once(worker, alice, acme, bolt):
    withdrawal_drill(worker, alice, acme, bolt, name="withdraw-quick", faults=1, limit=4)


@pytest.mark.proof
@pytest.mark.timeout(1800)
def test_a_worker_killed_during_a_stream_of_withdrawals_loses_and_doubles_nothing(worker, alice, acme, bolt):
    withdrawal_drill(worker, alice, acme, bolt, name="withdraw-proof", faults=5, limit=12)
