"""Idempotency-Key across the API: which POSTs take one (the audit, checked against the schema),
and that an optional key replays instead of creating twice (docs/api.md "Retries").
"""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator

from common.models import IdempotencyRecord
from custody.models import Dataset
from tests.common.test_problems import assert_problem

# The key is required: these move money.
REQUIRED = {
    "POST /api/v1/orders",
    "POST /api/v1/payouts",
    # Buys a model license (issue 16).
    "POST /api/v1/models/listings/{listing_id}/licenses",
}
# The key is accepted: these create something.
OPTIONAL = {
    "POST /api/v1/training/jobs",
    "POST /api/v1/training/valuations",
    "POST /api/v1/datasets",
    "POST /api/v1/datasets/{dataset_id}/versions",
    "POST /api/v1/versions/{version_id}/contributors",
    "POST /api/v1/versions/{version_id}/contributions",
    "POST /api/v1/catalog/listings",
    "POST /api/v1/catalog/listings/{listing_id}/offers",
    "POST /api/v1/catalog/offers/{offer_id}/terms",
    "POST /api/v1/catalog/listings/{listing_id}/rights",
    "POST /api/v1/organisations/{org_id}/invitations",
    # Model listings and plug-in inference (issue 16).
    "POST /api/v1/models/listings",
    "POST /api/v1/models/{job_id}/generate",
    "POST /api/v1/models/{job_id}/classify",
}
# No key, each for a reason (docs/api.md "Retries" keeps the same table).
EXEMPT = {
    # The response carries a secret shown once: a replay would have to store it.
    "POST /api/v1/tokens": "secret",
    "POST /api/v1/organisations/{org_id}/webhooks": "secret",
    # A binary body (an archive): retry by listing the bases first.
    "POST /api/v1/training/bases": "binary",
    # Operator endpoints, idempotent by their own reference or state.
    "POST /api/v1/ops/topups": "external_ref",
    "POST /api/v1/ops/licenses/{license_ref}/refund": "state",
    "POST /api/v1/ops/keys/rotate": "operator",
    "POST /api/v1/ops/versions/{version_id}/data-key/rotate": "operator",
    "POST /api/v1/ops/versions/{version_id}/key/destroy": "operator",
    "POST /api/v1/ops/versions/{version_id}/key/disable": "operator",
    "POST /api/v1/ops/versions/{version_id}/key/enable": "operator",
    "POST /api/v1/ops/versions/{version_id}/key/rewrap": "operator",
    # State transitions: repeating one answers the same state or a 409, never a second object.
    "POST /api/v1/catalog/listings/{listing_id}/preview/approve": "transition",
    "POST /api/v1/catalog/listings/{listing_id}/publish": "transition",
    "POST /api/v1/catalog/listings/{listing_id}/withdraw": "transition",
    "POST /api/v1/catalog/offers/{offer_id}/retire": "transition",
    "POST /api/v1/catalog/rights/{allocation_id}/approve": "transition",
    "POST /api/v1/catalog/rights/{allocation_id}/reject": "transition",
    "POST /api/v1/contributions/{contribution_id}/complete": "transition",
    "POST /api/v1/contributions/{contribution_id}/withdraw": "transition",
    "POST /api/v1/orders/{order_ref}/approve": "transition",
    "POST /api/v1/orders/{order_ref}/reject": "transition",
    "POST /api/v1/organisations/{org_id}/notifications": "transition",
    "POST /api/v1/training/jobs/{job_id}/cancel": "transition",
    "POST /api/v1/versions/{version_id}/findings": "transition",
    "POST /api/v1/versions/{version_id}/process": "transition",
    "POST /api/v1/versions/{version_id}/reject": "transition",
    "POST /api/v1/versions/{version_id}/retry": "transition",
    "POST /api/v1/versions/{version_id}/seal": "transition",
    "POST /api/v1/versions/{version_id}/takedown": "transition",
}


@pytest.fixture(scope="module")
def posts() -> dict[str, bool | None]:
    """Each POST operation -> whether its Idempotency-Key is required (None: it takes none)."""
    schema = SchemaGenerator().get_schema(request=None, public=True)
    found: dict[str, bool | None] = {}
    for path, item in schema["paths"].items():
        if "post" not in item:
            continue
        headers = [p for p in item["post"].get("parameters", []) if p["name"] == "Idempotency-Key"]
        found[f"POST {path}"] = bool(headers[0].get("required")) if headers else None
    return found


class TestTheAudit:
    def test_every_post_was_decided(self, posts):
        undecided = sorted(set(posts) - REQUIRED - OPTIONAL - set(EXEMPT))
        assert not undecided, f"decide whether these take an Idempotency-Key: {undecided}"

    def test_the_schema_matches_the_decisions(self, posts):
        assert {op for op, required in posts.items() if required} == REQUIRED
        assert {op for op, required in posts.items() if required is False} == OPTIONAL


@pytest.fixture
def provider(token_for, alice, acme):
    return token_for(alice, acme, ["read", "provide"])


def create_dataset(client, body, key: str | None = None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post("/api/v1/datasets", body, format="json", **headers)


class TestAnOptionalKey:
    def test_a_retry_with_the_same_key_replays_the_first_response(self, provider):
        first = create_dataset(provider, {"name": "tickets"}, key="create-tickets-1")
        again = create_dataset(provider, {"name": "tickets"}, key="create-tickets-1")
        assert first.status_code == again.status_code == 201, again.content
        assert again.json() == first.json()
        assert Dataset.objects.filter(name="tickets").count() == 1

    def test_the_same_key_with_another_body_is_refused(self, provider):
        assert create_dataset(provider, {"name": "tickets"}, key="create-tickets-2").status_code == 201
        response = create_dataset(provider, {"name": "emails"}, key="create-tickets-2")
        assert_problem(response, 422, "idempotency.key_reused")
        assert not Dataset.objects.filter(name="emails").exists()

    def test_a_refused_request_frees_the_key(self, provider):
        assert create_dataset(provider, {"name": ""}, key="create-tickets-3").status_code == 422
        assert not IdempotencyRecord.objects.exists()
        assert create_dataset(provider, {"name": "tickets"}, key="create-tickets-3").status_code == 201

    def test_a_malformed_key_is_refused(self, provider):
        assert_problem(
            create_dataset(provider, {"name": "tickets"}, key="short"), 422, "idempotency.key_invalid"
        )
        assert not Dataset.objects.exists()

    def test_without_a_key_nothing_is_recorded(self, provider):
        assert create_dataset(provider, {"name": "tickets"}).status_code == 201
        assert not IdempotencyRecord.objects.exists()

    def test_keys_are_scoped_to_the_organisation(self, provider, token_for, carol, bolt):
        from tests.factories import MembershipFactory

        MembershipFactory(user=carol, organisation=bolt, role="admin")
        bolt.is_provider = True
        bolt.save()
        other = token_for(carol, bolt, ["read", "provide"])
        assert create_dataset(provider, {"name": "tickets"}, key="shared-key-1").status_code == 201
        assert create_dataset(other, {"name": "tickets"}, key="shared-key-1").status_code == 201
        assert Dataset.objects.filter(name="tickets").count() == 2
