"""The SDK's wire mapping (sdk/sealroom/_api.py): amounts as decimal strings with ``_minor`` beside them."""

from __future__ import annotations

import pytest
from sealroom import Money
from sealroom._api import amount_from_api, amount_to_api, money_from_api


@pytest.mark.parametrize(
    ("value", "currency", "minor"),
    [
        (15000, "EUR", 15000),
        ("150.00", "EUR", 15000),
        ("150.5", "EUR", 15050),
        ("150", "EUR", 15000),
        ("150", "JPY", 150),
    ],
)
def test_amounts_read_as_minor_units(value, currency, minor):
    assert amount_from_api(value, currency) == minor


def test_an_amount_with_more_digits_than_its_currency_is_refused():
    with pytest.raises(ValueError, match="more digits than EUR"):
        amount_from_api("150.001", "EUR")


def test_a_response_amount_prefers_its_minor_twin():
    assert money_from_api({"amount": "150.00", "amount_minor": 15000}, "amount", "EUR") == 15000
    assert money_from_api({"amount": "150.00"}, "amount", "EUR") == 15000
    assert money_from_api({"unit_price": "1500", "unit_price_minor": 1500}, "unit_price", "JPY") == 1500


def test_amounts_go_to_the_api_as_decimal_strings():
    assert amount_to_api(15000, "EUR") == "150.00"
    assert amount_to_api(5, "EUR") == "0.05"
    assert amount_to_api(1500, "JPY") == "1500"
    with pytest.raises(TypeError):
        amount_to_api(1.5, "EUR")  # type: ignore[arg-type]


def test_money_prints_in_major_units():
    assert str(Money(1234567, "EUR")) == "12,345.67 EUR"
    assert str(Money(500, "JPY")) == "500 JPY"
