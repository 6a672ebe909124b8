"""Serializer fields for numbers: the rule of ``common/numbers.py`` (ASCII digits, within range)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

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


class AmountField(StrictIntegerField):
    """An amount of money in minor units: positive, at most ``MAX_AMOUNT``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", MAX_AMOUNT)
        kwargs.setdefault("help_text", "Minor units (cents): ASCII digits only")
        super().__init__(**kwargs)
