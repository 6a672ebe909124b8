"""Plug-in inference API (issue 16 item 2): bad input answers problem+json with pointers, nothing
is queued; the model listings API round trip; the extraction guard's index on its own."""

from __future__ import annotations

from typing import Any

import pytest

from common.models import WorkItem
from custody.models import CustodyModel, DatasetVersion, Grant, UsageKind
from custody.services import usage_record
from custody.services.models_custody import ExtractionIndex, custody_model_record
from tests.common.test_problems import assert_problem
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.grants import grant_for_test
from tests.marketplace.catalog.conftest import sealed_rows  # noqa: F401
from tests.marketplace.orders.conftest import fund  # noqa: F401
from training.models import InferenceCall, TrainingJob

pytestmark = pytest.mark.django_db

MODEL_TERMS: dict[str, Any] = {
    "purposes": ["research"],
    "inference": {
        "allowed": True,
        "price_per_million_tokens": "2.00",
        "currency": "EUR",
        "max_tokens_per_call": 64,
        "cap_tokens": 1_000_000,
    },
    "distillation_allowed": False,
    "generation_allowed": False,
    "fine_tune_allowed": False,
    "model_share_bps": 2500,
    "term_days": 30,
}


@pytest.fixture
def model(bolt, bob, acme, sealed_rows, tiny) -> CustodyModel:  # noqa: F811
    """A custody model record of a (succeeded) Bolt job; no weights: these calls never run."""
    version: DatasetVersion = sealed_rows(tokens={acme: 1000})
    job = TrainingJob.objects.create(
        organisation=bolt,
        submitted_by=bob,
        grant=grant_for_test(version, bolt),
        template="causal_lm",
        base=tiny,
        state="succeeded",
    )
    return custody_model_record(
        job_ref=job.public_id,
        version=version,
        trainer=bolt,
        artifact_name=f"training-job-{job.pk}",
        artifact_sha256="cd" * 32,
        receipt_sha256="ef" * 32,
        task="causal_lm",
        template="causal_lm",
        base_name="gpt2-tiny",
        metrics={"eval_loss": 3.1},
        lineage=[{"version": version.public_id, "merkle_root": version.merkle_root, "license": "lic_x"}],
    )


@pytest.fixture
def dyna(db):
    return OrganisationFactory(name="Dyna Apps", is_provider=False, is_trainer=True)


@pytest.fixture
def dan(dyna):
    user = UserFactory(username="dan")
    MembershipFactory(user=user, organisation=dyna, role="admin")
    return user


@pytest.fixture
def licensed(model, bob, bolt, dyna, dan, token_for, fund) -> dict[str, Any]:  # noqa: F811
    """Bolt lists the model through the API; Dyna buys 1,000,000 tokens through the API."""
    trainer = token_for(bob, bolt, ["read", "train"])
    created = trainer.post(
        "/api/v1/models/listings",
        {"model": model.job_ref, "title": "Support LM", "terms": MODEL_TERMS},
        format="json",
    )
    assert created.status_code == 201, created.content
    fund(dyna, 10_000)
    buyer = token_for(dan, dyna, ["read", "order", "train"])
    bought = buyer.post(
        f"/api/v1/models/listings/{created.json()['id']}/licenses",
        {"tokens": 1_000_000},
        format="json",
        HTTP_IDEMPOTENCY_KEY="buy-model-0001",
    )
    assert bought.status_code == 201, bought.content
    return {"listing": created.json(), "license": bought.json(), "client": buyer, "model": model}


class TestModelListingsApi:
    def test_the_listing_shows_terms_facts_and_rights_holders(self, licensed, acme, bolt):
        listing = licensed["listing"]
        assert listing["model"] == licensed["model"].job_ref
        assert listing["terms"]["inference"]["price_per_million_tokens"] == "2.00"
        assert "price_minor" not in listing["terms"]["inference"]
        assert listing["facts"]["receipt_sha256"] == "ef" * 32
        assert listing["facts"]["lineage"][0]["merkle_root"]
        holders = {h["organisation"]: h for h in listing["rights_holders"]}
        assert holders[bolt.public_id]["share"] == "1/4" and holders[bolt.public_id]["role"] == "trainer"
        assert holders[acme.public_id]["share"] == "3/4" and holders[acme.public_id]["role"] == "data"
        # The weights' hash is never shown.
        assert "cd" * 32 not in str(listing)

    def test_the_license_escrows_the_tokens_price(self, licensed):
        assert licensed["license"]["escrow_minor"] == 200 and licensed["license"]["tokens"] == 1_000_000

    def test_a_purchase_needs_an_idempotency_key(self, licensed, dan, dyna, token_for):
        client = token_for(dan, dyna, ["read", "order"])
        response = client.post(
            f"/api/v1/models/listings/{licensed['listing']['id']}/licenses", {"tokens": 10}, format="json"
        )
        assert_problem(response, 422, "idempotency.key_required")

    def test_bad_terms_point_at_the_term(self, model, bob, bolt, token_for):
        terms = {**MODEL_TERMS, "model_share_bps": 20_000}
        response = token_for(bob, bolt, ["read", "train"]).post(
            "/api/v1/models/listings", {"model": model.job_ref, "title": "X", "terms": terms}, format="json"
        )
        body = assert_problem(response, 422, "marketplace.terms_invalid")
        assert body["errors"][0]["pointer"] == "/terms/model_share_bps"

    def test_the_dataset_catalog_does_not_show_model_listings(self, licensed, dan, dyna, token_for):
        response = token_for(dan, dyna, ["read"]).get("/api/v1/catalog/listings")
        assert licensed["listing"]["id"] not in response.content.decode()


def generate(licensed: dict[str, Any], body: dict[str, Any], **headers: Any):
    return licensed["client"].post(
        f"/api/v1/models/{licensed['model'].job_ref}/generate", body, format="json", **headers
    )


class TestInferenceBadInput:
    @pytest.mark.parametrize(
        ("body", "code", "pointer"),
        [
            ({"prompts": [""]}, "training.inference_invalid", "/prompts/0"),
            ({"prompts": ["   \n"]}, "training.inference_invalid", "/prompts/0"),
            ({"prompts": []}, "training.inference_invalid", "/prompts"),
            ({"prompts": "hello"}, "training.inference_invalid", "/prompts"),
            ({"prompts": ["ok", 7]}, "training.inference_invalid", "/prompts/1"),
            ({"prompts": ["ab\x00\x01\x02cd"]}, "training.inference_invalid", "/prompts/0"),
            ({"prompts": ["bad \ufffd bytes"]}, "training.inference_invalid", "/prompts/0"),
            ({"prompts": ["hello"], "max_new_tokens": 0}, "training.inference_invalid", "/max_new_tokens"),
            ({"prompts": ["hello"], "max_new_tokens": 65}, "training.inference_invalid", "/max_new_tokens"),
            ({"prompts": ["word " * 60], "max_new_tokens": 10}, "training.too_many_tokens", "/prompts"),
            ({"prompts": ["hello"] * 17}, "training.inference_invalid", "/prompts"),
        ],
    )
    def test_answers_problem_json_and_queues_nothing(self, licensed, body, code, pointer):
        body = assert_problem(generate(licensed, body), 422, code)
        assert pointer in [e["pointer"] for e in body["errors"]]
        assert not InferenceCall.objects.exists()
        assert not WorkItem.objects.filter(queue="serving").exists()

    def test_a_model_not_licensed_is_not_found(self, licensed, carol, acme, alice, token_for):
        client = token_for(alice, acme, ["read", "train"])
        response = client.post(
            f"/api/v1/models/{licensed['model'].job_ref}/generate", {"prompts": ["hi"]}, format="json"
        )
        body = assert_problem(response, 404, "training.model_not_licensed")
        assert body["errors"][0]["pointer"] == "/model"

    def test_an_unknown_model_is_not_found(self, licensed):
        response = licensed["client"].post(
            "/api/v1/models/job_0123456789abcdef/generate", {"prompts": ["hi"]}, format="json"
        )
        assert_problem(response, 404, "training.model_not_licensed")

    def test_classify_on_a_causal_model_is_refused(self, licensed):
        response = licensed["client"].post(
            f"/api/v1/models/{licensed['model'].job_ref}/classify", {"prompts": ["hi"]}, format="json"
        )
        body = assert_problem(response, 422, "training.task_mismatch")
        assert body["errors"][0]["pointer"] == "/model"

    def test_binary_body_is_refused(self, licensed):
        response = licensed["client"].post(
            f"/api/v1/models/{licensed['model'].job_ref}/generate",
            data=b"\x89PNG\r\n\x1a\n\x00\x00",
            content_type="application/octet-stream",
        )
        assert response.status_code == 415
        assert response["Content-Type"] == "application/problem+json"

    def test_the_cap_is_enforced(self, licensed):
        grant = Grant.objects.get(external_ref=licensed["license"]["license"])
        usage_record(grant=grant, consumer_ref="inf_used", kind=UsageKind.TOKENS_INFERRED, quantity=999_990)
        body = assert_problem(
            generate(licensed, {"prompts": ["hello"], "max_new_tokens": 32}),
            409,
            "training.inference_cap_reached",
        )
        assert body["errors"][0]["pointer"] == "/terms/inference/cap_tokens"

    def test_a_good_call_is_queued_on_serving_without_keeping_more_than_it_needs(self, licensed):
        response = generate(
            licensed, {"prompts": ["hello there"], "max_new_tokens": 8}, HTTP_IDEMPOTENCY_KEY="call-0001"
        )
        assert response.status_code == 202, response.content
        call = InferenceCall.objects.get(public_id=response.json()["id"])
        assert call.state == "queued" and call.prompt_tokens > 0
        item = WorkItem.objects.get(kind="training.inference", ref=str(call.pk))
        assert item.queue == "serving"
        again = generate(
            licensed, {"prompts": ["hello there"], "max_new_tokens": 8}, HTTP_IDEMPOTENCY_KEY="call-0001"
        )
        assert again.json()["id"] == call.public_id and InferenceCall.objects.count() == 1
        polled = licensed["client"].get(f"/api/v1/models/calls/{call.public_id}")
        assert polled.status_code == 200 and polled.json()["state"] == "queued"


class TestExtractionIndex:
    def test_finds_a_record_continued_verbatim(self):
        index = ExtractionIndex(b"k" * 32)
        index.add(["the customer Jane Roe paid invoice 4471 late on the fifth of March"])
        assert index.reproduces("the customer Jane Roe paid invoice", "4471 late on the fifth of March")

    def test_lets_new_text_through(self):
        index = ExtractionIndex(b"k" * 32)
        index.add(["the customer Jane Roe paid invoice 4471 late on the fifth of March"])
        assert not index.reproduces("the customer Jane Roe paid invoice", "on time, as she always does.")
        assert not index.reproduces("", "")

    def test_a_prompt_quoting_a_record_does_not_count_against_the_output(self):
        index = ExtractionIndex(b"k" * 32)
        record = "the customer Jane Roe paid invoice 4471 late on the fifth of March"
        index.add([record])
        assert not index.reproduces(record, "Thanks, noted for the quarter review today.")

    def test_the_key_changes_every_hash(self):
        one, two = ExtractionIndex(b"a" * 32), ExtractionIndex(b"b" * 32)
        one.add(["a b c d e f g h"])
        two.add(["a b c d e f g h"])
        assert one._digests.isdisjoint(two._digests)

    def test_a_short_record_is_kept_whole(self):
        index = ExtractionIndex(b"k" * 32)
        index.add(["Jane Roe owes 4471", "ok"])
        assert index.reproduces("Jane Roe", "owes 4471")
        assert not index.reproduces("fine", "ok")  # a one-word record guards nothing
