"""Orders API: problem+json with stable codes, idempotency keys, decisions, payouts, statements."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from common.models import IdempotencyRecord, IdempotencyState
from marketplace.models import License, Order, OrderState, RightsAllocation
from marketplace.services.settlement import usage_settle
from tests.common.test_problems import assert_problem
from tests.marketplace.orders.conftest import use
from tests.marketplace.orders.test_services import buyer_balance


@pytest.fixture(autouse=True)
def _fee(settings):
    settings.MARKETPLACE_FEE_BPS = 1000


@pytest.fixture
def trainer(bob, bolt, token_for):
    return token_for(bob, bolt, ["read", "order"])


@pytest.fixture
def provider(alice, acme, token_for):
    return token_for(alice, acme, ["read", "provide"])


def place(client, offer_id, key="order-key-0001", **body):
    return client.post(
        "/api/v1/orders", {"offer_id": offer_id, **body}, format="json", HTTP_IDEMPOTENCY_KEY=key
    )


class TestPlaceOrder:
    def test_places_and_pays_an_order(self, trainer, market, bolt, fund):
        offer = market("fixed")
        fund(bolt, 60_000)
        response = place(trainer, offer.public_id)
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["state"] == "paid"
        assert (body["escrow_amount"], body["escrow_amount_minor"]) == ("500.00", 50_000)
        assert (body["unit_price"], body["unit_price_minor"], body["currency"]) == ("500.00", 50_000, "EUR")
        assert body["license_ref"].startswith("lic_")
        # The terms and allocation frozen into the order are named by public id (issue 13, item 9).
        order = Order.objects.get(ref=body["ref"])
        assert (
            body["terms_id"]
            == order.terms.public_id
            == trainer.get(f"/api/v1/catalog/offers/{offer.public_id}").json()["current"]["id"]
        )
        assert body["allocation_id"] == RightsAllocation.objects.get(pk=order.allocation_id).public_id
        assert body["allocation_id"].startswith("alc_")
        listed = trainer.get("/api/v1/orders").json()["results"]
        assert [(o["terms_id"], o["allocation_id"]) for o in listed] == [
            (body["terms_id"], body["allocation_id"])
        ]
        detail = trainer.get(f"/api/v1/licenses/{body['license_ref']}").json()
        assert detail["remaining"]["jobs_allowed"] == 3
        assert detail["remaining"]["jobs_used"] == 0
        assert detail["remaining"]["tokens_allowed"] == 5_000_000

    def test_insufficient_balance_is_409(self, trainer, market, bolt, fund):
        fund(bolt, 10)
        assert_problem(place(trainer, market("fixed").public_id), 409, "marketplace.insufficient_funds")
        assert not Order.objects.exists()
        assert not IdempotencyRecord.objects.exists()  # the key is free for a retry

    def test_a_withdrawn_listing_is_409(self, trainer, market, alice, bolt, fund):
        from marketplace.services import catalog

        offer = market("fixed")
        catalog.listing_withdraw(actor=alice, listing=offer.listing, reason="gone")
        fund(bolt, 60_000)
        assert_problem(place(trainer, offer.public_id), 409, "marketplace.listing_withdrawn")

    def test_an_exclusive_offer_sold_out_is_409(self, trainer, market, bolt, fund):
        offer = market("fixed", max_licenses=1)
        fund(bolt, 200_000)
        assert place(trainer, offer.public_id, key="first-order-1").status_code == 201
        assert_problem(
            place(trainer, offer.public_id, key="second-order-2"), 409, "marketplace.offer_sold_out"
        )

    @pytest.mark.parametrize("periods", [-1, 0, "two", 1.5, None])
    def test_malformed_periods_are_422_with_a_pointer(self, trainer, market, bolt, fund, periods):
        fund(bolt, 60_000)
        body = assert_problem(
            place(trainer, market("period").public_id, periods=periods), 422, "validation_error"
        )
        assert body["errors"][0]["pointer"] == "/periods"

    def test_an_unknown_offer_is_404(self, trainer, db):
        assert_problem(place(trainer, "ofr_0000000000000000"), 404, "marketplace.offer_not_found")

    def test_a_provider_cannot_order(self, provider, alice, acme, token_for, market):
        client = token_for(alice, acme, ["order"])
        assert_problem(place(client, market("fixed").public_id), 403, "marketplace.not_a_trainer")

    def test_a_token_without_the_order_scope_is_refused(self, bob, bolt, token_for, market):
        client = token_for(bob, bolt, ["read"])
        assert_problem(place(client, market("fixed").public_id), 403, "common.token_scope_missing")


class TestIdempotencyKey:
    def test_a_replay_returns_the_first_response_and_moves_no_money(self, trainer, market, bolt, fund):
        offer = market("fixed")
        fund(bolt, 200_000)
        first = place(trainer, offer.public_id, key="replay-key-1")
        again = place(trainer, offer.public_id, key="replay-key-1")
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.json() == first.json()
        assert Order.objects.count() == 1
        assert buyer_balance(bolt) == 150_000

    def test_the_same_key_with_another_body_is_422(self, trainer, market, bolt, fund):
        fund(bolt, 200_000)
        assert place(trainer, market("fixed").public_id, key="body-key-1").status_code == 201
        assert_problem(
            place(trainer, market("fixed").public_id, key="body-key-1"), 422, "idempotency.key_reused"
        )

    def test_a_duplicate_in_flight_is_409(self, trainer, market, bolt, fund):
        offer = market("fixed")
        fund(bolt, 200_000)
        from common.idempotency import _claim, request_hash

        _claim(
            organisation=bolt,
            endpoint="orders.place",
            key="flight-key-1",
            digest=request_hash({"offer_id": offer.pk}),  # the validated body: the offer's key
        )
        assert_problem(place(trainer, offer.public_id, key="flight-key-1"), 409, "idempotency.in_progress")
        assert not Order.objects.exists()

    def test_a_key_left_by_a_dead_request_is_taken_over(self, trainer, market, bolt, fund):
        offer = market("fixed")
        fund(bolt, 200_000)
        from common.idempotency import _claim, request_hash

        _claim(
            organisation=bolt,
            endpoint="orders.place",
            key="dead-key-01",
            digest=request_hash({"offer_id": offer.pk}),  # the validated body: the offer's key
        )
        IdempotencyRecord.objects.update(
            locked_until=timezone.now()
            - timedelta(seconds=settings.MARKETPLACE_IDEMPOTENCY_IN_FLIGHT_SECONDS)
        )
        assert place(trainer, offer.public_id, key="dead-key-01").status_code == 201
        assert IdempotencyRecord.objects.get().state == IdempotencyState.DONE

    def test_keys_are_scoped_to_the_endpoint_and_kept_a_day(self, trainer, market, bolt, fund):
        offer = market("fixed")
        fund(bolt, 200_000)
        assert place(trainer, offer.public_id, key="day-key-001").status_code == 201
        IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=25))
        assert place(trainer, offer.public_id, key="day-key-001").status_code == 201
        assert Order.objects.count() == 2

    @pytest.mark.parametrize("key", [None, "short", "has spaces in it", "x" * 201])
    def test_a_missing_or_malformed_key_is_422(self, trainer, market, bolt, fund, key):
        offer = market("fixed")
        headers = {} if key is None else {"HTTP_IDEMPOTENCY_KEY": key}
        response = trainer.post("/api/v1/orders", {"offer_id": offer.public_id}, format="json", **headers)
        code = "idempotency.key_required" if key is None else "idempotency.key_invalid"
        body = assert_problem(response, 422, code)
        assert body["errors"][0]["pointer"] == "/headers/Idempotency-Key"


class TestDecisions:
    def test_the_provider_approves_and_rejects(self, trainer, provider, market, bolt, fund):
        offer = market("fixed", approval=True)
        fund(bolt, 100_000)
        first = place(trainer, offer.public_id, key="approve-me-1").json()
        second = place(trainer, offer.public_id, key="reject-me-01").json()
        assert first["state"] == "pending"
        received = provider.get("/api/v1/orders/received?state=pending").json()
        assert {o["ref"] for o in received["results"]} == {first["ref"], second["ref"]}
        for state in ("shipped", "pending\x00"):
            refused = provider.get("/api/v1/orders/received", {"state": state})
            assert refused.status_code == 422, refused.content
            assert refused.json()["errors"][0]["pointer"] == "/state"
        approved = provider.post(f"/api/v1/orders/{first['ref']}/approve", format="json")
        assert approved.json()["state"] == "paid"
        assert_problem(
            provider.post(f"/api/v1/orders/{second['ref']}/reject", {}, format="json"),
            422,
            "validation_error",
        )
        rejected = provider.post(f"/api/v1/orders/{second['ref']}/reject", {"reason": "No"}, format="json")
        assert rejected.json()["state"] == "rejected"
        assert_problem(
            provider.post(f"/api/v1/orders/{second['ref']}/approve", format="json"),
            409,
            "marketplace.order_state",
        )
        assert buyer_balance(bolt) == 50_000

    def test_the_buyer_cannot_approve_its_own_order(self, trainer, bob, bolt, token_for, market, fund):
        offer = market("fixed", approval=True)
        fund(bolt, 100_000)
        ref = place(trainer, offer.public_id).json()["ref"]
        client = token_for(bob, bolt, ["provide"])
        assert_problem(
            client.post(f"/api/v1/orders/{ref}/approve", format="json"), 403, "marketplace.not_provider"
        )
        assert Order.objects.get(ref=ref).state == OrderState.PENDING

    def test_another_organisations_order_is_404(
        self, provider, carol, token_for, market, trainer, bolt, fund
    ):
        fund(bolt, 100_000)
        ref = place(trainer, market("fixed").public_id).json()["ref"]
        from tests.factories import MembershipFactory, OrganisationFactory

        other = OrganisationFactory(name="Other Trainer", is_provider=False, is_trainer=True)
        MembershipFactory(user=carol, organisation=other, role="admin")
        client = token_for(carol, other, ["read"])
        assert_problem(client.get(f"/api/v1/orders/{ref}"), 404, "marketplace.order_not_found")


class TestMoneyEndpoints:
    def test_operator_top_up_and_its_validation(self, ops, bolt, api):
        from tests.helpers import login_with_otp

        login_with_otp(api, ops)
        ok = api.post(
            "/api/v1/ops/topups",
            {
                "organisation_id": bolt.public_id,
                "amount": "50.00",
                "currency": "EUR",
                "external_ref": "bank-77",
            },
            format="json",
        )
        assert ok.status_code == 201, ok.content
        assert (ok.json()["amount"], ok.json()["amount_minor"]) == ("50.00", 5_000)
        for amount in ("-5.00", "0", "0.00", "1e3", 2.5, 5000, "50.001", "NaN", "5,000.00", "１０"):
            body = assert_problem(
                api.post(
                    "/api/v1/ops/topups",
                    {
                        "organisation_id": bolt.public_id,
                        "amount": amount,
                        "currency": "EUR",
                        "external_ref": "bank-78",
                    },
                    format="json",
                ),
                422,
                "validation_error",
            )
            assert body["errors"][0]["pointer"] == "/amount"
        assert buyer_balance(bolt) == 5_000

    def test_amounts_take_the_currency_s_decimals(self, ops, bolt, api):
        from tests.helpers import login_with_otp

        login_with_otp(api, ops)

        def top_up(amount, currency, ref):
            body = {"organisation_id": bolt.public_id, "amount": amount, "currency": currency}
            body["external_ref"] = ref
            return api.post("/api/v1/ops/topups", body, format="json")

        refused = assert_problem(top_up("150.001", "EUR", "bank-1"), 422, "validation_error")
        assert refused["errors"][0]["pointer"] == "/amount"
        assert refused["errors"][0]["code"] == "too_many_digits"
        assert "EUR has 2 decimal places" in refused["errors"][0]["detail"]
        refused = assert_problem(top_up("1.5", "JPY", "bank-2"), 422, "validation_error")
        assert refused["errors"][0]["pointer"] == "/amount"
        assert "JPY has no minor unit" in refused["errors"][0]["detail"]
        yen = top_up("1500", "JPY", "bank-3")
        assert yen.status_code == 201, yen.content
        assert (yen.json()["amount"], yen.json()["amount_minor"]) == ("1500", 1500)
        euros = top_up("150.00", "EUR", "bank-4")
        assert (euros.json()["amount"], euros.json()["amount_minor"]) == ("150.00", 15_000)

    def test_payout_statements_and_csv(self, trainer, provider, market, acme, bolt, fund):
        fund(bolt, 60_000)
        ref = place(trainer, market("fixed").public_id).json()["license_ref"]
        usage_settle(usage_id=use(License.objects.get(ref=ref), "job-1", "job_started", 1).pk)
        balances = {
            (b["kind"], b["currency"]): (b["amount"], b["amount_minor"])
            for b in provider.get("/api/v1/balances").json()
        }
        assert balances[("rights_holder_payable", "EUR")] == ("337.50", 33_750)
        too_much = provider.post(
            "/api/v1/payouts",
            {"amount": "400.00", "currency": "EUR"},
            format="json",
            HTTP_IDEMPOTENCY_KEY="payout-0001",
        )
        assert "is owed €337.50; €400.00 was asked" in too_much.json()["detail"]
        assert_problem(too_much, 409, "marketplace.payout_exceeds_payable")
        negative = provider.post(
            "/api/v1/payouts",
            {"amount": "-1.00", "currency": "EUR"},
            format="json",
            HTTP_IDEMPOTENCY_KEY="payout-0002",
        )
        assert_problem(negative, 422, "validation_error")
        sent = provider.post(
            "/api/v1/payouts",
            {"amount": "300.00", "currency": "EUR"},
            format="json",
            HTTP_IDEMPOTENCY_KEY="payout-0003",
        )
        assert sent.status_code == 201
        assert (sent.json()["amount"], sent.json()["amount_minor"]) == ("300.00", 30_000)
        earnings = provider.get("/api/v1/statements/earnings").json()
        assert [(row["amount"], row["amount_minor"]) for row in earnings] == [("337.50", 33_750)]
        exported = provider.get("/api/v1/statements/earnings?export=csv")
        rows = list(csv.reader(io.StringIO(b"".join(exported.streaming_content).decode())))
        assert rows[0] == ["period", "listing_id", "listing", "currency", "amount_minor"]
        assert rows[1][-1] == "33750"
        spend = trainer.get("/api/v1/statements/spend").json()
        assert (spend[0]["released"], spend[0]["released_minor"]) == ("500.00", 50_000)
        spend_csv = trainer.get("/api/v1/statements/spend?export=csv")
        spend_rows = list(csv.reader(io.StringIO(b"".join(spend_csv.streaming_content).decode())))
        assert spend_rows[0][-3:] == ["escrowed_minor", "released_minor", "refunded_minor"]
        assert spend_rows[1][-2] == "50000"
        assert_problem(provider.get("/api/v1/statements/earnings?bucket=year"), 422, "validation_error")
        assert_problem(trainer.get("/api/v1/statements/spend?export=xlsx"), 422, "validation_error")


class TestOperatorRefunds:
    def test_an_operator_refunds_a_failed_job_then_revokes(self, ops, api, trainer, market, bolt, fund):
        from tests.helpers import login_with_otp

        fund(bolt, 60_000)
        ref = place(trainer, market("fixed").public_id).json()["license_ref"]
        license_ = License.objects.get(ref=ref)
        usage_settle(usage_id=use(license_, "job-1", "job_started", 1).pk)
        login_with_otp(api, ops)
        url = f"/api/v1/ops/licenses/{ref}/refund"
        fault = api.post(url, {"reason": "GPU lost", "consumer_ref": "job-1"}, format="json")
        assert fault.status_code == 200, fault.content
        returned = fault.json()
        assert (returned["returned_to_escrow"], returned["returned_to_escrow_minor"]) == ("500.00", 50_000)
        assert_problem(api.post(url, {}, format="json"), 422, "validation_error")
        revoked = api.post(url, {"reason": "operator decision"}, format="json").json()
        assert (revoked["license"]["state"], revoked["license"]["refunded"]) == ("revoked", "500.00")
        assert revoked["license"]["refunded_minor"] == 50_000
        assert buyer_balance(bolt) == 60_000
        assert_problem(
            api.post("/api/v1/ops/licenses/lic_nope/refund", {"reason": "x"}, format="json"),
            404,
            "marketplace.license_not_found",
        )
