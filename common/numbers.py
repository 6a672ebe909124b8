"""Whole numbers from what people and clients send: ASCII digits only, within range.

``int()`` is not the parser: it takes ``"3_0"`` as 30, and Arabic-Indic
(``"٣"``), full-width (``"３"``) and other Unicode decimal digits as numbers,
so a request that a person reads as nonsense would move money. The rule: a
JSON integer (not a boolean, not a float), or text of an optional minus sign
and ASCII digits, surrounding blanks allowed; then a range check, by default
that of a bigint column. The API's serializer fields (``common/api/fields.py``)
and the form fields below apply it. Amounts of money are not whole numbers
here: they are decimal strings of major units, read by ``common/money.py``
(``parse_money``, the same strictness: ASCII digits, no exponent or grouping).
"""

from __future__ import annotations

import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

BIGINT_MIN = -(2**63)
BIGINT_MAX = 2**63 - 1
# The largest amount of money in one field, in minor units: a typo past it, never a price.
MAX_AMOUNT = 10**13
_INTEGER = re.compile(r"-?[0-9]{1,30}")


def parse_integer(value: Any) -> int | None:
    """``value`` as an int under the rule above, or None (range not checked)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
        return int(value.strip())
    return None


class StrictIntegerField(forms.IntegerField):
    """A form's whole number: ASCII digits only, within a bigint unless told a narrower range."""

    def __init__(
        self, *, min_value: int | None = BIGINT_MIN, max_value: int | None = BIGINT_MAX, **kwargs: Any
    ):
        super().__init__(min_value=min_value, max_value=max_value, **kwargs)

    def to_python(self, value: Any) -> int | None:
        if value in self.empty_values or (isinstance(value, str) and not value.strip()):
            return None
        number = parse_integer(value)
        if number is None:
            raise ValidationError(self.error_messages["invalid"], code="invalid")
        return number
