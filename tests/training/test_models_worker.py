"""Plug-in inference through a real Celery worker on queue ``serving`` (issue 16): N metered calls
settle exactly once each, also when the serving worker is SIGKILLed in the middle of a batch; a
sentinel planted in the weights reaches no response, log, broker message, row or download."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, cast

import pytest
from django.conf import settings as django_settings
from django.db import transaction

from common.models import Organisation, User, WorkItem, WorkState
from common.processes import wait_until
from custody.models import UsageKind, UsageRecord
from marketplace.ledger import ledger_check
from marketplace.models import License, Settlement, SettlementLine
from marketplace.quotes import TOKENS_PER_UNIT
from marketplace.services.funding import topup_record
from marketplace.services.model_listings import model_license_buy, model_listing_create
from marketplace.services.settlement import usage_settle
from tests.custody.scanner import scan_database, scan_files
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.training.models_world import seal_tiny_model
from tests.training.test_worker_jobs import recover, sealed, shared_dirs  # noqa: F401
from training.models import InferenceCall, InferenceState
from training.services.serving import SERVING_KIND, InferenceRequest, inference_submit

pytestmark = [pytest.mark.worker, pytest.mark.timeout(1800)]

SENTINEL = "SEALROOM-WEIGHTS-SENTINEL-7d2a41"
PRICE = "3.00"  # per million platform tokens
TERMS: dict[str, Any] = {
    "purposes": ["research"],
    "inference": {
        "allowed": True,
        "price_per_million_tokens": PRICE,
        "currency": "EUR",
        "max_tokens_per_call": 128,
        "cap_tokens": None,
    },
    "model_share_bps": 2500,
    "term_days": 30,
}


def redis_values() -> list[bytes]:
    """Every value in the broker's Redis database now (lists, hashes, sets, strings)."""
    import redis

    url = str(django_settings.CELERY_BROKER_URL)
    if not url.startswith("redis"):
        return []
    client = redis.Redis.from_url(url)
    values: list[Any] = []
    for key in client.scan_iter():
        kind = client.type(key)
        if kind == b"list":
            values += client.lrange(key, 0, -1)
        elif kind == b"hash":
            values += list(client.hgetall(key).values())
        elif kind == b"set":
            values += list(client.smembers(key))
        elif kind == b"zset":
            values += client.zrange(key, 0, -1)
        elif kind == b"string":
            values.append(client.get(key) or b"")
    return [v if isinstance(v, bytes) else str(v).encode() for v in values]


def found_in(values: list[bytes], needles: list[str]) -> list[str]:
    return [n for n in needles if any(n.encode() in v for v in values)]


def world(alice, acme, bob, bolt) -> dict[str, Any]:
    version = sealed(
        alice, acme, [{"text": f"Ticket {i}: the router in room {i % 9} was reset."} for i in range(24)]
    )
    with transaction.atomic():
        made = seal_tiny_model(version=version, trainer=bolt, actor=bob, sentinel=SENTINEL)
        listing = model_listing_create(
            actor=bob, organisation=bolt, model_ref=made.model.job_ref, title="Tickets LM", terms=TERMS
        )
        dyna = cast(Organisation, OrganisationFactory(name="Dyna Apps", is_provider=False, is_trainer=True))
        dan = cast(User, UserFactory(username="dan"))
        MembershipFactory(user=dan, organisation=dyna, role="admin")
        topup_record(
            organisation=dyna, amount=100_000, currency="EUR", external_ref="bank-dyna-1", actor=None
        )
        license_ = model_license_buy(actor=dan, buyer=dyna, listing=listing, tokens=5_000_000)
    return {"made": made, "license": license_, "dyna": dyna, "dan": dan}


def submit_calls(w: dict[str, Any], count: int) -> list[InferenceCall]:
    calls = []
    for i in range(count):
        with transaction.atomic():
            calls.append(
                inference_submit(
                    actor=w["dan"],
                    organisation=w["dyna"],
                    request=InferenceRequest(
                        model_ref=w["made"].model.job_ref,
                        task="generate",
                        prompts=[f"Ticket {i}: the router"],
                        max_new_tokens=4,
                    ),
                )
            )
    return calls


def all_final(calls: list[InferenceCall]) -> bool:
    recover()
    return not InferenceCall.objects.filter(
        pk__in=[c.pk for c in calls], state__in=[InferenceState.QUEUED, InferenceState.RUNNING]
    ).exists()


def settle_and_check(w: dict[str, Any], calls: list[InferenceCall]) -> None:
    license_: License = w["license"]
    usage = list(UsageRecord.objects.filter(grant_id=license_.grant_id, kind=UsageKind.TOKENS_INFERRED))
    # One usage row per call, none for anything else.
    assert sorted(u.consumer_ref for u in usage) == sorted(c.public_id for c in calls)
    for row in usage:
        usage_settle(usage_id=row.pk)
        usage_settle(usage_id=row.pk)  # a repeat (a retried settlement) moves nothing
    assert Settlement.objects.filter(usage__in=usage).count() == len(usage)
    license_.refresh_from_db()
    total = sum(u.quantity for u in usage)
    assert license_.tokens_settled == total
    unit = license_.order.unit_price
    assert license_.released == total * unit // TOKENS_PER_UNIT
    lines = SettlementLine.objects.filter(settlement__license=license_)
    fees = sum(Settlement.objects.filter(license=license_).values_list("fee", flat=True))
    assert sum(lines.values_list("amount", flat=True)) + fees == license_.released
    assert ledger_check() == []


def test_calls_through_a_killed_serving_worker_settle_once_and_leak_no_weights(
    shared_dirs,  # noqa: F811
    alice,
    acme,
    bob,
    bolt,
    token_for,
):
    worker = shared_dirs
    w = world(alice, acme, bob, bolt)
    made = w["made"]
    needles = [SENTINEL, made.weights_sha256]
    # Positive control: the scanner finds the sentinel where it was planted (the archive's files).
    control = Path(django_settings.VAR_DIR) / "test-output" / "models-sentinel-control.tar"
    control.parent.mkdir(parents=True, exist_ok=True)
    control.write_bytes(made.plain_tar)
    assert SENTINEL in {s for found in scan_files([control], [SENTINEL]).values() for s in found}
    control.unlink()

    calls = submit_calls(w, 50)
    broker_seen = redis_values()

    def serving_running() -> WorkItem | None:
        return WorkItem.objects.filter(kind=SERVING_KIND, state=WorkState.RUNNING).first()

    wait_until(serving_running, what="a serving batch to start", timeout=300, interval=0.2)
    time.sleep(1.0)  # inside the sandbox run, most likely
    worker.kill()
    worker.restart()
    wait_until(lambda: all_final(calls), what="every call to end", timeout=1200, interval=1.0)
    states = set(InferenceCall.objects.filter(pk__in=[c.pk for c in calls]).values_list("state", flat=True))
    assert states == {InferenceState.SUCCEEDED}, list(
        InferenceCall.objects.exclude(state=InferenceState.SUCCEEDED).values("error_code", "error_detail")
    )
    # The kill cost a batch an attempt: some call's work item ran more than once.
    attempts = WorkItem.objects.filter(kind=SERVING_KIND, ref__in=[str(c.pk) for c in calls])
    assert max(attempts.values_list("attempts", flat=True)) >= 2
    settle_and_check(w, calls)

    client = token_for(w["dan"], w["dyna"], ["read", "train"])
    bodies = [client.get(f"/api/v1/models/calls/{c.public_id}").content for c in calls]
    bodies.append(client.get(f"/api/v1/training/jobs/{made.model.job_ref}/artifact").content)
    trainer = token_for(bob, bolt, ["read", "train"])
    artifact = trainer.get(f"/api/v1/training/jobs/{made.model.job_ref}/artifact")
    assert artifact.status_code in (404, 409)  # weights in custody never download
    bodies.append(artifact.content)
    assert [n for n in needles if any(n.encode() in b for b in bodies)] == []
    assert found_in(broker_seen + redis_values(), needles) == []
    assert scan_files([worker.log_dir], needles) == {}
    assert scan_database(needles) == {}
    assert all(
        json.dumps(c.prompts) == "[]" for c in InferenceCall.objects.filter(pk__in=[c.pk for c in calls])
    )
