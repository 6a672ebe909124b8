"""Prices and quotes: three price models, escrow amounts, and stable errors for bad input."""

from __future__ import annotations

import pytest

from marketplace.exceptions import PriceInvalid, QuoteInvalid
from marketplace.quotes import metered_amount, price_validate, quote
from marketplace.services import catalog
from tests.marketplace.catalog.conftest import terms_doc


@pytest.fixture
def offer_with(alice, listing):
    def _make(price, **terms_overrides):
        offer = catalog.offer_create(
            actor=alice, listing=listing, name="o", terms=terms_doc(**terms_overrides), price=price
        )
        return catalog.offer_terms_current(offer)

    return _make


class TestPriceValidate:
    @pytest.mark.parametrize(
        ("price", "pointer", "code"),
        [
            ({"model": "fixed", "unit_price": "-0.01"}, "/price/unit_price", "negative"),
            ({"model": "fixed", "unit_price": "ten"}, "/price/unit_price", "invalid"),
            ({"model": "fixed", "unit_price": 1.5}, "/price/unit_price", "invalid"),
            # A JSON number is refused: 150 could mean 150.00 or 1.50.
            ({"model": "fixed", "unit_price": 150}, "/price/unit_price", "invalid"),
            ({"model": "fixed", "unit_price": True}, "/price/unit_price", "invalid"),
            ({"model": "fixed", "unit_price": "1.001"}, "/price/unit_price", "too_many_digits"),
            ({"model": "fixed", "unit_price": "1e3"}, "/price/unit_price", "invalid"),
            ({"model": "fixed", "unit_price": "NaN"}, "/price/unit_price", "invalid"),
            ({"model": "fixed", "unit_price": "100000000000.01"}, "/price/unit_price", "too_large"),
            ({"model": "barter", "unit_price": "1.00"}, "/price/model", "invalid"),
            ({"model": "period", "unit_price": "1.00"}, "/price/period_days", "invalid"),
            (
                {"model": "fixed", "unit_price": "1.00", "period_days": 30},
                "/price/period_days",
                "not_allowed",
            ),
            ({"model": "fixed", "unit_price": "1.00", "discount": 5}, "/price/discount", "unknown_field"),
            ("100 EUR", "/price", "invalid"),
        ],
    )
    def test_rejects_malformed_prices(self, price, pointer, code):
        with pytest.raises(PriceInvalid) as excinfo:
            price_validate(price, currency="EUR")
        assert excinfo.value.code == "marketplace.price_invalid"
        assert excinfo.value.errors == [
            {"pointer": pointer, "code": code, "detail": excinfo.value.errors[0]["detail"]}
        ]

    def test_accepts_a_period_price(self):
        price = price_validate({"model": "period", "unit_price": "12.00", "period_days": 30}, currency="EUR")
        assert (price.model, price.unit_price, price.period_days) == ("period", 1200, 30)

    def test_reads_the_price_in_the_currency_s_digits(self):
        assert price_validate({"model": "fixed", "unit_price": "1500"}, currency="JPY").unit_price == 1500
        assert price_validate({"model": "fixed", "unit_price": "0"}, currency="EUR").unit_price == 0
        with pytest.raises(PriceInvalid) as excinfo:
            price_validate({"model": "fixed", "unit_price": "1.5"}, currency="JPY")
        assert excinfo.value.errors[0]["code"] == "too_many_digits"


class TestQuote:
    def test_fixed_price_is_the_price_and_the_escrow(self, offer_with):
        q = quote(offer_with({"model": "fixed", "unit_price": "500.00"}))
        assert (q.amount, q.escrow, q.currency, q.price_model) == (50_000, 50_000, "EUR", "fixed")
        assert "€500.00" in q.breakdown

    def test_metered_price_rounds_up_and_escrows_the_cap(self, offer_with):
        row = offer_with({"model": "metered", "unit_price": "9.99"})  # per million; cap 5,000,000
        q = quote(row, tokens=1_500_001)
        assert q.amount == 1499  # 1,498.500999 rounds up
        assert q.escrow == 999 * 5
        assert quote(row).amount == q.escrow  # no usage given: the cap

    def test_metered_tokens_above_the_cap_are_refused(self, offer_with):
        row = offer_with({"model": "metered", "unit_price": "0.10"})
        with pytest.raises(QuoteInvalid) as excinfo:
            quote(row, tokens=5_000_001)
        assert excinfo.value.code == "marketplace.quote_tokens_above_cap"
        assert excinfo.value.errors[0]["pointer"] == "/tokens"

    @pytest.mark.parametrize("tokens", [0, -3])
    def test_metered_tokens_must_be_positive(self, offer_with, tokens):
        with pytest.raises(QuoteInvalid) as excinfo:
            quote(offer_with({"model": "metered", "unit_price": "0.10"}), tokens=tokens)
        assert excinfo.value.code == "marketplace.quote_tokens_invalid"

    def test_period_price_escrows_one_period(self, offer_with):
        row = offer_with({"model": "period", "unit_price": "30.00", "period_days": 30})  # term 90 days
        q = quote(row, periods=3)
        assert (q.amount, q.escrow) == (9000, 3000)
        with pytest.raises(QuoteInvalid) as excinfo:
            quote(row, periods=4)
        assert excinfo.value.code == "marketplace.quote_periods_invalid"

    def test_usage_a_price_model_does_not_take_is_refused(self, offer_with):
        with pytest.raises(QuoteInvalid) as excinfo:
            quote(offer_with({"model": "fixed", "unit_price": "0.01"}), tokens=5)
        assert excinfo.value.code == "marketplace.quote_usage_not_priced"

    def test_metered_amount_is_exact_for_whole_millions(self):
        assert metered_amount(250, 4_000_000) == 1000
        assert metered_amount(0, 10**12) == 0
