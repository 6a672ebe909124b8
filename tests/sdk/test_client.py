"""The SDK against the live server: identity, catalog, quotes, idempotent orders, errors, rate limits."""

from __future__ import annotations

import pytest
from sealroom import (
    AuthenticationError,
    Client,
    NotFound,
    PermissionDenied,
    RateLimited,
    ValidationError,
)

from common.api.throttling import TokenRateThrottle
from marketplace.ledger import ledger_check
from marketplace.models import Order as OrderRow


class TestIdentity:
    def test_whoami_names_the_tokens_organisation_and_scopes(self, trainer: Client, bob, bolt):
        me = trainer.whoami()
        assert me.username == "bob"
        assert me.id == bob.public_id and me.id.startswith("usr_")
        assert me.acting_organisation is not None
        assert me.acting_organisation.id == bolt.public_id
        assert me.acting_organisation.is_trainer
        assert sorted(me.token_scopes or []) == ["order", "read", "train"]

    def test_reads_the_token_and_url_from_the_environment(self, live_server, bob, bolt, monkeypatch):
        from tests.conftest import make_token

        monkeypatch.setenv("SEALROOM_TOKEN", make_token(bob, bolt, ["read"]))
        monkeypatch.setenv("SEALROOM_URL", live_server.url)
        assert Client().whoami().username == "bob"

    def test_an_unknown_token_is_an_authentication_error_with_the_servers_code(self, live_server):
        with pytest.raises(AuthenticationError) as caught:
            Client(token="srk_not_a_real_token", base_url=live_server.url).whoami()
        assert caught.value.status == 401
        assert caught.value.code
        assert caught.value.detail


class TestCatalog:
    def test_search_then_listing_offers_then_quote(self, trainer: Client, market):
        offer = market(price="fixed")
        found = trainer.search_catalog()
        assert [listing.id for listing in found] == [offer.listing.public_id]
        listing = trainer.get_listing(found[0].id)
        [sold] = listing.offers
        assert (sold.id, sold.price_model, sold.unit_price) == (offer.public_id, "fixed", 50_000)
        assert sold.plain_terms
        quoted = trainer.quote(sold.id)
        assert quoted.amount.minor == 50_000
        assert str(quoted.amount) == "500.00 EUR"

    def test_search_filters_by_words(self, trainer: Client, market):
        market(price="fixed")
        assert trainer.search_catalog("nothing-matches-this") == []


class TestOrder:
    def test_order_is_idempotent_and_its_license_resolves_to_the_jobs_grant(
        self, trainer: Client, market, fund, bolt
    ):
        offer = market(price="fixed")
        fund(bolt, 100_000)
        first = trainer.order(offer.public_id, idempotency_key="retry-me-0001")
        again = trainer.order(offer.public_id, idempotency_key="retry-me-0001")
        assert again.ref == first.ref
        assert OrderRow.objects.filter(buyer=bolt).count() == 1
        assert first.state == "paid"
        assert first.escrow.minor == 50_000
        assert first.license_ref is not None
        license_ = trainer.get_license(first.license_ref)
        assert trainer.grant_id_for(first.license_ref) == license_.grant_id
        assert trainer.grant_id_for(first.ref) == license_.grant_id  # an order ref resolves too
        assert ledger_check() == []

    def test_each_order_call_without_a_key_sends_its_own(self, trainer: Client, market, fund, bolt):
        offer = market(price="fixed")
        fund(bolt, 100_000)
        trainer.order(offer.public_id)
        trainer.order(offer.public_id)
        assert OrderRow.objects.filter(buyer=bolt).count() == 2


class TestErrors:
    def test_a_field_error_carries_its_pointer(self, trainer: Client):
        with pytest.raises(ValidationError) as caught:
            trainer.order("0")
        assert caught.value.status == 422
        assert caught.value.code == "validation_error"
        assert [e.pointer for e in caught.value.errors] == ["/offer_id"]

    def test_a_missing_offer_is_not_found(self, trainer: Client):
        with pytest.raises(NotFound) as caught:
            trainer.quote("ofr_00000000000000ff")
        assert caught.value.status == 404

    def test_a_token_without_the_scope_is_denied_with_its_code(self, connect, bob, bolt, market):
        offer = market(price="fixed")
        reader = connect(bob, bolt, ["read"])
        with pytest.raises(PermissionDenied) as caught:
            reader.order(offer.public_id)
        assert caught.value.code == "common.token_scope_missing"


class TestRateLimits:
    @pytest.fixture
    def two_a_second(self, monkeypatch):
        monkeypatch.setattr(TokenRateThrottle, "THROTTLE_RATES", {"token": "2/s", "anon": "60/min"})

    def test_a_429_is_retried_after_retry_after(self, two_a_second, trainer: Client):
        for _ in range(4):
            assert trainer.whoami().username == "bob"
        assert trainer.retries >= 1

    def test_without_retries_a_429_raises_with_retry_after(self, two_a_second, connect, bob, bolt):
        impatient = connect(bob, bolt, ["read"], max_retries=0)
        with pytest.raises(RateLimited) as caught:
            for _ in range(4):
                impatient.whoami()
        assert caught.value.code == "rate_limited"
        assert caught.value.retry_after is not None
        assert caught.value.retry_after >= 1
