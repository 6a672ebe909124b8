"""The SDK's wire mapping (sdk/sealroom/_api.py): amounts today (integers) and as decimal strings."""

from __future__ import annotations

import pytest
from sealroom import Money
from sealroom._api import amount_from_api


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


def test_money_prints_in_major_units():
    assert str(Money(1234567, "EUR")) == "12,345.67 EUR"
    assert str(Money(500, "JPY")) == "500 JPY"
