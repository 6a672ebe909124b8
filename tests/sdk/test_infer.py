"""``Client.infer`` against the live server (issue 16 item 2): the SDK posts a call on a licensed
custody model and polls it until the serving work answers; bad input, an unlicensed model, a
timeout and the inference rate limit come back as the SDK's typed errors.

Nothing the SDK talks to is mocked: every call crosses HTTP to the live server. No Celery worker
runs: while the SDK polls from a thread, this test drains the queued serving work in-process
(``drain()`` runs the real handler, so the runner answers in the sandbox with a real gpt2-tiny
held in custody).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sealroom import Client
from sealroom.errors import NotFound, RateLimited, ValidationError

from common.api.throttling import InferenceRateThrottle
from custody import services as custody_services
from custody.models import UsageKind, UsageRecord
from marketplace.services.model_listings import model_license_buy, model_listing_create
from tests.custody.conftest import dataset, drain, jsonl, upload, version  # noqa: F401
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.sdk.conftest import TRAINER_SCOPES
from tests.training.models_world import Sealed, seal_tiny_model
from training import tasks  # noqa: F401  (registers the serving work handler for drain())
from training.models import InferenceCall, InferenceState

pytestmark = pytest.mark.timeout(900)

MODEL_TERMS: dict[str, Any] = {
    "purposes": ["research"],
    "inference": {
        "allowed": True,
        "price_per_million_tokens": "2.00",
        "currency": "EUR",
        "max_tokens_per_call": 64,
        "cap_tokens": 100_000,
    },
    "model_share_bps": 2500,
    "term_days": 30,
}
WAIT_FOR_CALL_S = 120


@pytest.fixture(autouse=True)
def _work_dir(settings, tmp_path: Path) -> Path:
    settings.TRAINING_WORK_DIR = tmp_path / "training-work"
    settings.TRAINING_MEMORY_BYTES = 4 * 1024**3
    return settings.TRAINING_WORK_DIR


@pytest.fixture
def dyna(db):
    return OrganisationFactory(name="Dyna Apps", is_provider=False, is_trainer=True)


@pytest.fixture
def dan(dyna):
    user = UserFactory(username="dan")
    MembershipFactory(user=user, organisation=dyna, role="admin")
    return user


@pytest.fixture
def sealed_model(alice, bob, bolt, version, upload) -> Sealed:  # noqa: F811
    """gpt2-tiny (random, fixed seed) held in custody on a real sealed version, listed by Bolt."""
    upload(version, jsonl([{"text": f"the {w} printer jams when duplex printing is on"} for w in "abcdefgh"]))
    custody_services.version_process(actor=alice, version=version)
    drain()
    sealed = custody_services.version_seal(actor=alice, version=version, confirm_residual_risk=True)
    return seal_tiny_model(version=sealed, trainer=bolt, actor=bob)


@pytest.fixture
def licensee(sealed_model, bob, bolt, dyna, dan, fund, connect) -> Client:
    listing = model_listing_create(
        actor=bob,
        organisation=bolt,
        model_ref=sealed_model.model.job_ref,
        title="Support LM",
        terms=MODEL_TERMS,
    )
    fund(dyna, 10_000)
    model_license_buy(actor=dan, buyer=dyna, listing=listing, tokens=100_000)
    return connect(dan, dyna, TRAINER_SCOPES, max_retries=0)


def infer_while_draining(client: Client, model: str, prompts: list[str], **kwargs: Any) -> dict[str, Any]:
    """``client.infer`` in a thread (it polls over HTTP); this thread runs the serving work once the
    call is queued, as a serving worker would."""
    result: dict[str, Any] = {}

    def call() -> None:
        try:
            result["call"] = client.infer(model, prompts, interval=0.2, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result["error"] = exc

    before = set(InferenceCall.objects.values_list("pk", flat=True))
    thread = threading.Thread(target=call)
    thread.start()
    deadline = time.monotonic() + WAIT_FOR_CALL_S
    while not InferenceCall.objects.exclude(pk__in=before).exists() and "error" not in result:
        assert time.monotonic() < deadline, "the SDK's call never reached the server"
        time.sleep(0.1)
    drain()
    thread.join(timeout=WAIT_FOR_CALL_S)
    assert not thread.is_alive(), "infer() did not return after the call was answered"
    if "error" in result:
        raise result["error"]
    answered: dict[str, Any] = result["call"]
    return answered


def test_infer_posts_polls_and_returns_the_guarded_metered_answer(licensee, sealed_model):
    ref = sealed_model.model.job_ref
    prompts = ["Please summarise the notes of the meeting", "the printer on the second floor"]
    answered = infer_while_draining(
        licensee, ref, prompts, max_new_tokens=6, idempotency_key="sdk-infer-0001"
    )

    call = InferenceCall.objects.get()
    assert answered["id"] == call.public_id and answered["model"] == ref
    assert answered["state"] == call.state == InferenceState.SUCCEEDED, answered["error"]
    assert answered["task"] == "generate" and answered["error"] is None
    assert [o["text"] for o in answered["outputs"]] == [o["text"] for o in call.outputs]
    assert len(answered["outputs"]) == 2 and answered["withheld"] == 0
    assert all(o["withheld"] is False for o in answered["outputs"])
    usage = UsageRecord.objects.get(consumer_ref=call.public_id, kind=UsageKind.TOKENS_INFERRED)
    assert usage.quantity == answered["prompt_tokens"] + answered["output_tokens"]
    assert 0 < answered["output_tokens"] <= 2 * 6
    # The prompts are not kept once answered.
    assert call.prompts == []

    # A retry with the same key is the same call (the server replays its first answer, the SDK polls
    # the call, already answered): no new call, no second meter.
    again = licensee.infer(ref, prompts, max_new_tokens=6, idempotency_key="sdk-infer-0001")
    assert again["id"] == call.public_id and again["state"] == "succeeded"
    assert InferenceCall.objects.count() == 1
    assert UsageRecord.objects.filter(kind=UsageKind.TOKENS_INFERRED).count() == 1


def test_infer_errors_come_back_typed(licensee, sealed_model, bob, bolt, connect, monkeypatch):
    ref = sealed_model.model.job_ref
    with pytest.raises(ValidationError) as empty:
        licensee.infer(ref, ["   "])
    assert empty.value.code == "training.inference_invalid"
    assert [e.pointer for e in empty.value.errors] == ["/prompts/0"]

    with pytest.raises(ValidationError) as too_many:
        licensee.infer(ref, ["hello"], max_new_tokens=65)
    assert too_many.value.code == "training.inference_invalid"
    assert too_many.value.errors[0].pointer == "/max_new_tokens"

    with pytest.raises(ValidationError) as wrong_task:
        licensee.infer(ref, ["hello"], task="classify")
    assert wrong_task.value.code == "training.task_mismatch"

    # The trainer holds no model license on its own model: not found, like any unlicensed model.
    with pytest.raises(NotFound) as unlicensed:
        connect(bob, bolt, TRAINER_SCOPES).infer(ref, ["hello"])
    assert unlicensed.value.code == "training.model_not_licensed"
    assert unlicensed.value.errors[0].pointer == "/model"
    assert not InferenceCall.objects.exists()

    # Nobody serves the queue here: infer() gives up at its timeout, the call stays queued.
    with pytest.raises(TimeoutError, match="still queued"):
        licensee.infer(ref, ["hello there"], max_new_tokens=4, timeout=0)
    assert InferenceCall.objects.get().state == InferenceState.QUEUED

    # Past the inference rate (lowered here; the four POSTs above by this token count, refused ones
    # too): the fifth is queued, the sixth is RateLimited with the limit named.
    monkeypatch.setattr(InferenceRateThrottle, "THROTTLE_RATES", {"inference": "5/min", "token": "600/min"})
    with pytest.raises(TimeoutError):
        licensee.infer(ref, ["hello again"], max_new_tokens=4, timeout=0)
    with pytest.raises(RateLimited) as limited:
        licensee.infer(ref, ["and again"], max_new_tokens=4, timeout=0)
    assert limited.value.code == "rate_limited" and "5/min" in limited.value.detail
    assert (limited.value.retry_after or 0) >= 1
    assert InferenceCall.objects.count() == 2
