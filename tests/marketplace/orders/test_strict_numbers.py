"""Money and ids in requests: "3_0" is not thirty, "٣" is not three (issue 13, item 2)."""

from __future__ import annotations

import pytest
from django.test import Client

from marketplace.models import Order, Payout, TopUp
from tests.common.test_problems import assert_problem
from tests.helpers import login_with_otp
from tests.marketplace.orders.test_services import buyer_balance

# Amounts are decimal strings of major units (common/money.py): these are not, or not exactly EUR.
LAX = ["3_0", "٣٠", "３０", "6_2", "30.000", "3e1", 30, 30.0]


@pytest.fixture
def ops_api(ops, api):
    login_with_otp(api, ops)
    return api


class TestTopUps:
    @pytest.mark.parametrize("amount", LAX)
    def test_an_amount_in_other_digits_is_refused(self, ops_api, bolt, amount):
        body = {"organisation_id": bolt.public_id, "amount": amount, "currency": "EUR"}
        body["external_ref"] = "bank-1"
        problem = assert_problem(
            ops_api.post("/api/v1/ops/topups", body, format="json"), 422, "validation_error"
        )
        assert problem["errors"][0]["pointer"] == "/amount"
        assert not TopUp.objects.exists() and buyer_balance(bolt) == 0

    def test_an_organisation_id_in_other_digits_is_refused(self, ops_api, bolt):
        body = {"organisation_id": "٣", "amount": "0.30", "currency": "EUR", "external_ref": "bank-1"}
        problem = assert_problem(
            ops_api.post("/api/v1/ops/topups", body, format="json"), 422, "validation_error"
        )
        assert problem["errors"][0]["pointer"] == "/organisation_id"

    def test_an_absurd_amount_is_refused_and_ascii_digits_still_work(self, ops_api, bolt):
        body = {"organisation_id": bolt.public_id, "amount": "1" + "0" * 15, "currency": "EUR"}
        body["external_ref"] = "bank-1"
        assert_problem(ops_api.post("/api/v1/ops/topups", body, format="json"), 422, "validation_error")
        body.update(amount="0.30")
        assert ops_api.post("/api/v1/ops/topups", body, format="json").status_code == 201
        assert buyer_balance(bolt) == 30

    @pytest.mark.parametrize("amount", ["3_0", "٣٠"])
    def test_the_top_up_page_refuses_them_too(self, ops, bolt, amount):
        client = Client()
        login_with_otp(client, ops)
        page = client.post(
            "/market/ops/topups/",
            {"organisation": bolt.pk, "amount": amount, "currency": "EUR", "external_ref": "bank-2"},
        )
        assert page.status_code in (200, 422)
        assert not TopUp.objects.exists()


class TestPayoutsAndOrders:
    @pytest.mark.parametrize("amount", LAX)
    def test_a_payout_of_3_0_is_refused(self, alice, acme, token_for, amount):
        client = token_for(alice, acme, ["read", "provide"])
        response = client.post(
            "/api/v1/payouts",
            {"amount": amount, "currency": "EUR"},
            format="json",
            HTTP_IDEMPOTENCY_KEY="p-000001",
        )
        problem = assert_problem(response, 422, "validation_error")
        assert problem["errors"][0]["pointer"] == "/amount"
        assert not Payout.objects.exists()

    @pytest.mark.parametrize(("field", "value"), [("offer_id", "٣"), ("offer_id", "1_0"), ("periods", "6_2")])
    def test_an_order_with_lax_numbers_is_refused(self, bob, bolt, token_for, market, fund, field, value):
        offer = market("fixed")
        fund(bolt, 60_000)
        client = token_for(bob, bolt, ["read", "order"])
        body = {"offer_id": offer.public_id, field: value}
        response = client.post("/api/v1/orders", body, format="json", HTTP_IDEMPOTENCY_KEY="o-000001")
        problem = assert_problem(response, 422, "validation_error")
        assert problem["errors"][0]["pointer"] == f"/{field}"
        assert not Order.objects.exists()

    @pytest.mark.parametrize("tokens", ["1_000", "١٠٠٠"])
    def test_a_quote_for_lax_tokens_is_refused(self, bob, bolt, token_for, market, tokens):
        offer = market("metered")
        client = token_for(bob, bolt, ["read"])
        response = client.get(f"/api/v1/catalog/offers/{offer.public_id}/quote", {"tokens": tokens})
        assert response.status_code == 422, response.content
        assert response.json()["code"] == "marketplace.quote_tokens_invalid"
