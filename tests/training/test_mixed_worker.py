"""A 70/30 mixed-dataset job through a live Celery worker (issue 17 item 3).

Bolt buys two metered licenses, one on each of two sealed versions (the second with an epsilon
cap, so the mix must be DP). One DP job mixes them 70/30; the worker streams from each version
by weight, trains in the sandbox, and records usage per license. Each license is billed exactly
the platform tokens read from its own version (its usage is the sum of its contributions'
reads, and its settlement that many tokens at its price), the split is 70/30 of what was read,
each version's budget is charged the job's epsilon once, and the receipt lists every license
and Merkle root. The same again with the worker SIGKILLed once training began: usage and
epsilon still counted once per license and version.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db.models import Sum

from common.processes import wait_until
from custody.models import (
    Contribution,
    DatasetVersion,
    PrivacyBudgetEntry,
    UsageByContribution,
    UsageRecord,
)
from marketplace.ledger import ledger_check
from marketplace.models import License, Settlement
from marketplace.services import catalog
from marketplace.services.funding import topup_record
from marketplace.services.orders import order_place
from marketplace.tasks import marketplace_sweep
from tests.marketplace.catalog.conftest import terms_doc
from tests.training.conftest import TINY_HP
from tests.training.test_worker_jobs import recover, sealed, shared_dirs  # noqa: F401
from training.models import BaseModel, JobGrant, JobState, TrainingJob
from training.services import JobRequest
from training.services.mixed_jobs import MixPart, job_submit_mixed

pytestmark = pytest.mark.worker

# 100,000.00 per million platform tokens: 10 minor units a token.
MINOR_PER_TOKEN = 10
HYPERPARAMETERS = {**TINY_HP, "epochs": 1, "batch_size": 4, "max_seq_len": 32}


def records(word: str, count: int) -> list[dict]:
    return [{"text": f"Line {i}: the {word} shipment for depot {i % 7} left on time."} for i in range(count)]


def metered_license(alice, bob, bolt, version: DatasetVersion, title: str) -> License:
    listing = catalog.listing_create(actor=alice, version=version, title=title)
    doc = terms_doc(
        permission={"purposes": ["research"], "job_templates": ["causal_lm_lora"], "weights_may_leave": True},
        duty={"attribution": title, "release_gate": {"max_exposure": 30.0}},
    )
    if version.epsilon_cap is not None:
        doc["duty"]["differential_privacy"] = {"required": True, "epsilon_cap": float(version.epsilon_cap)}
    doc["constraint"] = {"max_jobs": 3, "max_epochs": 2, "max_tokens": 50_000, "term_days": 30}
    offer = catalog.offer_create(
        actor=alice,
        listing=listing,
        name="Metered",
        terms=doc,
        price={"model": "metered", "unit_price": "100000.00"},
    )
    catalog.listing_publish(actor=alice, listing=listing)
    return License.objects.select_related("grant__version").get(
        order=order_place(buyer=bolt, offer=offer, actor=bob)
    )


@pytest.mark.timeout(1200)
@pytest.mark.parametrize("kill", [False, True], ids=["straight", "worker-killed-mid-training"])
def test_a_70_30_mixed_job_bills_each_license_the_tokens_read_from_its_version_and_spends_each_epsilon_once(
    shared_dirs,  # noqa: F811
    settings,
    alice,
    acme,
    bob,
    bolt,
    ops,
    kill,
):
    settings.MARKETPLACE_FEE_BPS = 1000
    north = sealed(alice, acme, records("north", 40))
    south = sealed(alice, acme, records("south", 40))
    DatasetVersion.objects.filter(pk=south.pk).update(epsilon_cap=Decimal("20"))
    south.refresh_from_db()
    topup_record(organisation=bolt, amount=10_000_000, currency="EUR", external_ref="bank-mix", actor=ops)
    licenses = [metered_license(alice, bob, bolt, v, t) for v, t in ((north, "North"), (south, "South"))]
    assert licenses[1].grant.terms.get("epsilon_cap") is not None

    job = job_submit_mixed(
        actor=bob,
        organisation=bolt,
        parts=[MixPart(licenses[0].grant, Decimal(70)), MixPart(licenses[1].grant, Decimal(30))],
        request=JobRequest(
            template="causal_lm_lora",
            base=BaseModel.objects.get(name="gpt2-tiny", owner=None),
            hyperparameters=HYPERPARAMETERS,
            dp={"enabled": True, "target_epsilon": 8.0},
            purpose="research",
        ),
    )

    if kill:
        # SIGKILL the worker once training began (usage started on both licenses, budgets held),
        # then start a fresh one: the sweep hands it the job, which runs again from the start.
        def training() -> bool:
            current = TrainingJob.objects.get(pk=job.pk)
            return current.training_started_at is not None or current.is_final

        wait_until(training, what="training to begin", timeout=600, interval=0.2)
        shared_dirs.kill()
        shared_dirs.start()

    def ended() -> bool:
        recover()
        return TrainingJob.objects.get(pk=job.pk).is_final

    wait_until(ended, what="the mixed job to end", timeout=600, interval=1)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason, shared_dirs.log_tail())
    assert job.attempts == (2 if kill else 1)

    components = list(JobGrant.objects.filter(job=job).select_related("grant__version").order_by("position"))
    read_from = []
    for component, license_ in zip(components, licenses, strict=True):
        usage = UsageRecord.objects.get(
            grant=license_.grant, consumer_ref=job.consumer_ref, kind="tokens_trained"
        )
        reads = dict(UsageByContribution.objects.filter(usage=usage).values_list("contribution", "quantity"))
        own = set(Contribution.objects.filter(version=license_.grant.version).values_list("pk", flat=True))
        # Billed exactly what was read from its own version, and only from it.
        assert reads and set(reads) <= own
        assert usage.quantity == sum(reads.values()) == component.tokens_trained > 0
        assert component.tokens_trained <= component.tokens_planned
        read_from.append(usage.quantity)
        # Started once on each license and billed once, across attempts.
        assert UsageRecord.objects.filter(grant=license_.grant, consumer_ref=job.consumer_ref).count() == 2
    assert sum(read_from) == job.tokens_trained
    # 70/30 of what was read. The launcher's mix is 70/30 within one record, but under DP the
    # runner reads each record of the mix by Poisson sampling, so the split of the few hundred
    # tokens read is random around 0.7 (CI saw 0.745 once in four runs with a 0.03 bound); the
    # exact billing of each license is asserted above, this only checks the weights steer it.
    assert abs(read_from[0] / sum(read_from) - 0.7) < 0.1, read_from

    # Each version's budget was charged the job's epsilon once, and spent.
    entries = list(PrivacyBudgetEntry.objects.filter(consumer_ref=job.consumer_ref))
    assert sorted((e.version_id, e.epsilon, e.state) for e in entries) == sorted(
        (v.pk, job.epsilon_reserved, "committed") for v in (north, south)
    )

    receipt = job.receipt["receipt"]
    assert [(x["ref"], x["merkle_root"], x["platform_tokens"]) for x in receipt["licenses"]] == [
        (license_.ref, license_.grant.version.merkle_root, tokens)
        for license_, tokens in zip(licenses, read_from, strict=True)
    ]
    assert [x["weight_bps"] for x in receipt["licenses"]] == [7000, 3000]
    assert receipt["attribution"] == ["North", "South"]

    # Settlement bills each license its own tokens at its price.
    def settled() -> bool:
        marketplace_sweep()
        recover()
        return (
            Settlement.objects.filter(
                usage__consumer_ref=job.consumer_ref, usage__kind="tokens_trained"
            ).count()
            == 2
        )

    wait_until(settled, what="both licenses to settle", timeout=120, interval=1)
    for license_, tokens in zip(licenses, read_from, strict=True):
        settlement = Settlement.objects.get(
            usage__grant=license_.grant, usage__consumer_ref=job.consumer_ref, usage__kind="tokens_trained"
        )
        assert settlement.amount == tokens * MINOR_PER_TOKEN
    released = Settlement.objects.filter(usage__consumer_ref=job.consumer_ref).aggregate(total=Sum("amount"))
    assert released["total"] == job.tokens_trained * MINOR_PER_TOKEN
    assert ledger_check() == []
