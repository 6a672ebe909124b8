"""Whole numbers from clients: ASCII digits only, within range (common/numbers.py, common/api/fields.py)."""

from __future__ import annotations

import pytest
from rest_framework import serializers

from common.api.fields import IdField, StrictIntegerField
from common.numbers import StrictIntegerField as StrictIntegerFormField
from common.numbers import parse_integer

# What int() takes as a number and a person does not: underscores, other scripts' digits.
NOT_ASCII_NUMBERS = ["3_0", "6_2", "٣", "٣٠", "３０", "۳", "३", "²", "1e3", "3.0", "0x1f", "+3", ""]


class TestTheRule:
    @pytest.mark.parametrize("raw", NOT_ASCII_NUMBERS)
    def test_refuses_what_int_would_take(self, raw):
        assert parse_integer(raw) is None

    @pytest.mark.parametrize(("raw", "number"), [(30, 30), ("30", 30), (" 30 ", 30), ("-4", -4), ("007", 7)])
    def test_takes_integers_and_ascii_digits(self, raw, number):
        assert parse_integer(raw) == number

    @pytest.mark.parametrize("raw", [True, False, 3.0, 2.5, None, [3], {"n": 3}])
    def test_refuses_other_json_types(self, raw):
        assert parse_integer(raw) is None


class Input(serializers.Serializer):
    number = StrictIntegerField(required=False)
    id = IdField(required=False)


class TestSerializerFields:
    @pytest.mark.parametrize("raw", [*NOT_ASCII_NUMBERS, True, 30.0])
    @pytest.mark.parametrize("field", ["number", "id"])
    def test_refuse_what_int_would_take(self, field, raw):
        data = Input(data={field: raw})
        assert not data.is_valid()
        assert data.errors[field][0].code == "invalid"

    def test_ranges_default_to_a_bigint_and_a_positive_id(self):
        cases = {"number": (-(2**63), 2**63), "id": (1, 0)}
        for field, (ok, refused) in cases.items():
            assert Input(data={field: ok}).is_valid(), field
            assert not Input(data={field: refused}).is_valid(), field

    def test_ascii_digits_in_a_string_still_count(self):
        data = Input(data={"number": "42", "id": "7"})
        assert data.is_valid(), data.errors
        assert data.validated_data == {"number": 42, "id": 7}


class TestFormFields:
    @pytest.mark.parametrize("raw", [r for r in NOT_ASCII_NUMBERS if r])
    def test_refuse_what_int_would_take(self, raw):
        from django.core.exceptions import ValidationError

        with pytest.raises(ValidationError):
            StrictIntegerFormField().clean(raw)

    def test_take_ascii_digits_within_range(self):
        from django.core.exceptions import ValidationError

        assert StrictIntegerFormField(min_value=1).clean(" 12 ") == 12
        assert StrictIntegerFormField(required=False).clean("") is None
        with pytest.raises(ValidationError):
            StrictIntegerFormField().clean(str(2**63))


def _input_serializers() -> list[tuple[str, type[serializers.Serializer]]]:
    """Every nested serializer class of an API view that reads input (``Input…``, ``Query…``)."""
    from django.urls import get_resolver

    from tests.common.test_authz_matrix import walk_patterns

    found = {}
    for _name, _path, callback in walk_patterns(get_resolver().url_patterns):
        view = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
        if view is None:
            continue
        for attr in dir(view):
            candidate = getattr(view, attr, None)
            if (
                isinstance(candidate, type)
                and issubclass(candidate, serializers.Serializer)
                and ("Input" in attr or "Query" in attr)
            ):
                found[f"{view.__module__}.{view.__name__}.{attr}"] = candidate
    return sorted(found.items())


def _lax_integer_fields(serializer: serializers.Serializer, prefix: str = "") -> list[str]:
    lax = []
    for name, field in serializer.fields.items():
        inner = getattr(field, "child", None) or field
        if isinstance(inner, serializers.Serializer):
            lax += _lax_integer_fields(inner, f"{prefix}{name}.")
        elif isinstance(inner, serializers.IntegerField) and not isinstance(inner, StrictIntegerField):
            lax.append(f"{prefix}{name}")
    return lax


def test_no_api_input_takes_a_plain_integer_field():
    inputs = _input_serializers()
    assert len(inputs) > 20
    lax = {where: fields for where, cls in inputs if (fields := _lax_integer_fields(cls()))}
    assert lax == {}, "use common.api.fields.StrictIntegerField (or IdField; MoneyField for amounts)"
