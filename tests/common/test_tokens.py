"""API token lifecycle: shown once, stored as a hash, scoped, expiring, revocable."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from common import services
from common.exceptions import Invalid, NotPermitted
from common.models import ApiToken, AuditEvent


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


@pytest.fixture
def session_alice(alice) -> APIClient:
    client = APIClient()
    client.force_authenticate(alice)
    return client


class TestTokenCreate:
    def test_returns_the_secret_once_and_stores_only_its_hash(self, session_alice, acme):
        response = session_alice.post(
            "/api/v1/tokens",
            {"name": "ci", "organisation_id": acme.public_id, "scopes": ["read", "provide"]},
            format="json",
        )
        assert response.status_code == 201
        body = response.json()
        raw = body["token"]
        assert raw.startswith(f"srk_{body['prefix']}_")
        token = ApiToken.objects.get(public_id=body["id"])
        assert token.secret_hash == hashlib.sha256(raw.encode()).hexdigest()
        assert raw not in str(ApiToken.objects.filter(pk=token.pk).values().first())
        listed = session_alice.get("/api/v1/tokens").json()
        assert listed["results"][0]["id"] == token.public_id
        assert "token" not in listed["results"][0]

    def test_is_audited_without_the_secret(self, alice, acme):
        token, raw = services.api_token_create(user=alice, organisation=acme, name="ci", scopes=["read"])
        event = AuditEvent.objects.get(action="token.create")
        assert event.object_id == str(token.pk)
        assert event.organisation_id == acme.pk
        assert raw not in str(event.details) and raw.split("_")[-1] not in str(event.details)

    def test_defaults_to_the_configured_expiry(self, alice, acme, settings):
        settings.API_TOKEN_DEFAULT_DAYS = 30
        token, _ = services.api_token_create(user=alice, organisation=acme, name="t", scopes=["read"])
        assert timedelta(days=29, hours=23) < token.expires_at - timezone.now() <= timedelta(days=30)

    def test_rejects_unknown_scopes_and_bad_expiry_with_pointers(self, alice, acme):
        with pytest.raises(Invalid) as caught:
            services.api_token_create(
                user=alice, organisation=acme, name="", scopes=["fly"], expires_in_days=0
            )
        assert [e["pointer"] for e in caught.value.errors] == ["/name", "/scopes", "/expires_in_days"]

    def test_viewers_only_get_read_tokens(self, acme_viewer, acme):
        with pytest.raises(NotPermitted):
            services.api_token_create(user=acme_viewer, organisation=acme, name="t", scopes=["provide"])
        token, _ = services.api_token_create(user=acme_viewer, organisation=acme, name="t", scopes=["read"])
        assert token.scopes == ["read"]

    def test_a_read_only_token_cannot_mint_tokens(self, alice, acme, token_for):
        client = token_for(alice, acme, ["read", "provide", "order", "train"])
        response = client.post(
            "/api/v1/tokens",
            {"name": "same", "organisation_id": acme.public_id, "scopes": ["read"]},
            format="json",
        )
        assert response.status_code == 403
        assert response.json()["code"] == "common.token_scope_missing"
        assert ApiToken.objects.filter(name="same").count() == 0

    def test_a_token_cannot_mint_a_token_with_more_scopes(self, alice, acme, token_for):
        client = token_for(alice, acme, ["read", "admin"])
        response = client.post(
            "/api/v1/tokens",
            {"name": "wider", "organisation_id": acme.public_id, "scopes": ["read", "order"]},
            format="json",
        )
        assert response.status_code == 403
        assert response.json()["code"] == "common.token_scope_escalation"

    def test_cannot_be_made_for_an_organisation_the_user_is_not_in(self, session_alice, bolt):
        response = session_alice.post(
            "/api/v1/tokens",
            {"name": "x", "organisation_id": bolt.public_id, "scopes": ["read"]},
            format="json",
        )
        assert response.status_code == 404


class TestTokenAuthentication:
    def test_a_fresh_token_authenticates_and_records_its_use(self, alice, acme):
        token, raw = services.api_token_create(user=alice, organisation=acme, name="t", scopes=["read"])
        response = bearer(raw).get("/api/v1/me")
        assert response.status_code == 200
        assert response.json()["acting_organisation_id"] == acme.public_id
        token.refresh_from_db()
        assert token.last_used_at is not None

    def test_a_revoked_token_answers_401(self, alice, acme):
        token, raw = services.api_token_create(user=alice, organisation=acme, name="t", scopes=["read"])
        services.api_token_revoke(actor=alice, token=token)
        response = bearer(raw).get("/api/v1/me")
        assert response.status_code == 401
        assert response.json()["code"] == "common.token_revoked"

    def test_an_expired_token_answers_401(self, alice, acme):
        token, raw = services.api_token_create(user=alice, organisation=acme, name="t", scopes=["read"])
        ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        response = bearer(raw).get("/api/v1/me")
        assert response.status_code == 401
        assert response.json()["code"] == "common.token_expired"

    def test_a_tampered_secret_answers_401(self, alice, acme):
        _, raw = services.api_token_create(user=alice, organisation=acme, name="t", scopes=["read"])
        tampered = raw[:-1] + ("A" if raw[-1] != "A" else "B")
        response = bearer(tampered).get("/api/v1/me")
        assert response.status_code == 401
        assert response.json()["code"] == "common.token_unknown"

    def test_the_wrong_scope_answers_403(self, alice, acme):
        _, raw = services.api_token_create(user=alice, organisation=acme, name="t", scopes=["provide"])
        response = bearer(raw).get("/api/v1/me")
        assert response.status_code == 403
        assert response.json()["code"] == "common.token_scope_missing"

    def test_removing_a_member_revokes_their_tokens(self, alice, acme, acme_member):
        _, raw = services.api_token_create(user=acme_member, organisation=acme, name="t", scopes=["read"])
        membership = acme_member.memberships.get(organisation=acme)
        services.membership_remove(actor=alice, membership=membership)
        response = bearer(raw).get("/api/v1/me")
        assert response.status_code == 401
        assert response.json()["code"] == "common.token_revoked"

    def test_a_token_acts_only_for_its_own_organisation(self, alice, acme, bolt):
        from tests.factories import MembershipFactory

        MembershipFactory(user=alice, organisation=bolt, role="admin")
        _, raw = services.api_token_create(user=alice, organisation=acme, name="t", scopes=["read"])
        response = bearer(raw).get(f"/api/v1/organisations/{bolt.public_id}/members")
        assert response.status_code == 403
        assert response.json()["code"] == "common.token_other_org"


class TestTokenRevoke:
    def test_is_idempotent_and_audited_once(self, session_alice, alice, acme):
        token, _ = services.api_token_create(user=alice, organisation=acme, name="t", scopes=["read"])
        assert session_alice.delete(f"/api/v1/tokens/{token.public_id}").status_code == 204
        assert session_alice.delete(f"/api/v1/tokens/{token.public_id}").status_code == 204
        assert AuditEvent.objects.filter(action="token.revoke").count() == 1

    def test_another_organisations_token_is_404(self, bob, bolt, session_alice):
        token, _ = services.api_token_create(user=bob, organisation=bolt, name="t", scopes=["read"])
        assert session_alice.delete(f"/api/v1/tokens/{token.public_id}").status_code == 404
        token.refresh_from_db()
        assert token.revoked_at is None


class TestTokensCannotUsePlatformPowers:
    def test_an_operators_token_cannot_top_up_even_with_every_scope(self, ops, acme, bolt, token_for):
        from marketplace.models import TopUp
        from tests.factories import MembershipFactory

        MembershipFactory(user=ops, organisation=acme, role="admin")
        client = token_for(ops, acme, ["read", "provide", "order", "train", "admin"])
        response = client.post(
            "/api/v1/ops/topups",
            {"organisation_id": bolt.public_id, "amount": 100, "currency": "EUR", "external_ref": "tok-1"},
            format="json",
        )
        assert response.status_code == 403, response.content
        assert response.json()["code"] == "common.token_scope_missing"
        assert not TopUp.objects.exists()
