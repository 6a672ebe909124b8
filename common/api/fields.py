"""Serializer fields for numbers and money.

Whole numbers follow ``common/numbers.py`` (ASCII digits, within range);
amounts of money follow ``common/money.py``: a decimal string in major units
on the way in, and the pair ``"amount": "150.00"`` / ``"amount_minor": 15000``
on the way out (see ``docs/api.md``, "Money").
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import get_attribute

from common.money import CURRENCY_CODE, MoneyInvalid, major_amount, parse_money
from common.numbers import BIGINT_MAX, BIGINT_MIN, MAX_AMOUNT, parse_integer


class StrictIntegerField(serializers.IntegerField):
    """A whole number: a JSON integer or ASCII digits (no ``"3_0"``, ``"٣"`` or ``3.5``), within a bigint."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", BIGINT_MIN)
        kwargs.setdefault("max_value", BIGINT_MAX)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> int:
        number = parse_integer(data)
        if number is None:
            self.fail("invalid")
        return number


class IdField(StrictIntegerField):
    """An object's id: positive, within a bigint."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        super().__init__(**kwargs)


@extend_schema_field(
    {
        "type": "string",
        "format": "decimal",
        "pattern": r"^-?[0-9]+(\.[0-9]+)?$",
        "example": "150.00",
        "description": "Major units of the currency, as a decimal string (at most its decimal places)",
    }
)
class MoneyField(serializers.Field):
    """An amount of money: a decimal string in major units, exact, in the currency's digits.

    In: ``"150.00"`` (EUR) is 15000 minor units; ``"150.001"`` (EUR), ``"1.5"`` (JPY),
    ``"1e3"``, ``"NaN"``, ``"1,000"``, numbers (``150``, ``1.5``: a JSON number would be
    ambiguous between major and minor units) are refused with the field's name.
    The currency is the sibling field ``currency_field`` of the same body, or
    ``currency`` when fixed. Out: the instance's integer of minor units as the same
    decimal string, with the currency read from ``currency_field`` (a dotted path
    on the instance). Pair it with ``MinorField`` (``amount_minor``) in outputs.
    """

    default_error_messages = {
        "invalid": 'An amount is a decimal string in major units, such as "150.00".',
        "currency": "Give a valid currency (three capital letters) for this amount.",
    }

    def __init__(
        self,
        *,
        currency_field: str = "currency",
        currency: str | None = None,
        allow_zero: bool = False,
        max_minor: int = MAX_AMOUNT,
        **kwargs: Any,
    ) -> None:
        self.currency_field = currency_field
        self.currency = currency
        self.allow_zero = allow_zero
        self.max_minor = max_minor
        kwargs.setdefault(
            "help_text", "Major units as a decimal string, at most the currency's decimal places"
        )
        super().__init__(**kwargs)

    def _input_currency(self) -> str | None:
        if self.currency:
            return self.currency
        parent_data = getattr(self.parent, "initial_data", None)
        if isinstance(parent_data, dict):
            value = parent_data.get(self.currency_field)
            if isinstance(value, str) and CURRENCY_CODE.fullmatch(value):
                return value
        return None

    def to_internal_value(self, data: Any) -> int:
        currency = self._input_currency()
        if currency is None:
            self.fail("currency")
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            return parse_money(data, currency, allow_zero=self.allow_zero, max_minor=self.max_minor)
        except MoneyInvalid as error:
            raise serializers.ValidationError(error.message, code=error.code) from error

    def get_attribute(self, instance: Any) -> Any:
        value = super().get_attribute(instance)
        if value is None:
            return None
        currency = self.currency or get_attribute(instance, self.currency_field.split("."))
        return (value, currency)

    def to_representation(self, value: Any) -> str:
        minor, currency = value
        return major_amount(minor, currency)


class MinorField(serializers.IntegerField):
    """The same amount in integer minor units (``amount_minor``), for clients that compute."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("read_only", True)
        kwargs.setdefault("help_text", "The same amount in integer minor units (cents; yen for JPY)")
        super().__init__(**kwargs)
