"""Money as people read and type it: major units, the currency's own digits, no floats.

Internally every amount is an integer of minor units (cents for EUR, yen for
JPY: the ledger, the models, the quotes). This module is the one place that
turns such an integer into text and text back into such an integer:

- ``format_money(15000, "EUR", "en_US")`` → ``"€150.00"``; ``"de_DE"`` → ``"150,00 €"``.
  Formatting is Babel's (CLDR data), with the currency's minor-unit digits;
  the locale defaults to Django's active language, then ``settings.LANGUAGE_CODE``.
  Templates use the filter ``{% load money %}{{ amount_minor|money:currency }}``.
- ``major_amount(15000, "EUR")`` → ``"150.00"``: the canonical decimal string
  the API returns next to ``amount_minor`` (no grouping, no symbol, ``.``).
- ``parse_money("150.00", "EUR")`` → ``15000``: exact, with ``decimal``;
  ASCII digits and one ``.`` only, at most the currency's fractional digits
  (``"150.001"`` EUR and ``"1.5"`` JPY are refused), no sign unless negatives
  are allowed, no exponent, NaN, infinity, grouping or inner blanks. The
  portal's form field and the API's serializer field both call it, and so
  does the price parser of ``marketplace/quotes.py``.
"""

from __future__ import annotations

import re
from decimal import Decimal, localcontext
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.numbers import format_currency, get_currency_precision
from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import translation

from common.numbers import MAX_AMOUNT

# Surrounding ASCII blanks (a pasted value) are dropped; nothing else is forgiven.
_MONEY = re.compile(r"(?P<sign>-?)(?P<whole>[0-9]{1,30})(?:\.(?P<fraction>[0-9]{1,30}))?")
CURRENCY_CODE = re.compile(r"[A-Z]{3}")
_BLANKS = " \t"


class MoneyInvalid(ValueError):
    """Text that is not an amount of the currency; ``code`` says why, the message says it to a person."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def currency_digits(currency: str) -> int:
    """The currency's minor-unit digits (ISO 4217 via CLDR): 2 for EUR, 0 for JPY, 3 for KWD."""
    return int(get_currency_precision(currency))


def babel_locale(locale: str | Locale | None = None) -> Locale:
    """``locale``, else Django's active language, else ``settings.LANGUAGE_CODE``, else en_US."""
    if isinstance(locale, Locale):
        return locale
    for candidate in (locale, translation.get_language(), settings.LANGUAGE_CODE, "en-us"):
        if not candidate:
            continue
        try:
            return Locale.parse(translation.to_locale(candidate))
        except (UnknownLocaleError, ValueError):
            continue
    return Locale.parse("en_US")


def to_major(minor: int, currency: str) -> Decimal:
    """``minor`` minor units as an exact ``Decimal`` of major units (``15000`` EUR → ``150.00``)."""
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError(f"An amount in minor units is an int, not {type(minor).__name__}.")
    return Decimal(minor).scaleb(-currency_digits(currency))


def major_amount(minor: int, currency: str) -> str:
    """The canonical decimal string of ``minor``: ``"150.00"`` (EUR), ``"150"`` (JPY), ``"-0.05"``."""
    digits = currency_digits(currency)
    value = to_major(minor, currency)
    return f"{value:.{digits}f}"


def format_money(minor: int, currency: str, locale: str | Locale | None = None) -> str:
    """``minor`` as a person reads it in ``locale``: ``"€150.00"``, ``"150,00 €"``, ``"¥1,500"``."""
    return str(format_currency(to_major(minor, currency), currency, locale=babel_locale(locale)))


def parse_money(
    value: Any,
    currency: str,
    *,
    allow_zero: bool = False,
    allow_negative: bool = False,
    max_minor: int = MAX_AMOUNT,
) -> int:
    """``value``, a decimal string of major units, as integer minor units of ``currency``.

    Only text: a number (``150``, ``1.5``) would be ambiguous between major and minor
    units, or inexact, so it is refused like any other non-decimal.

    :raises MoneyInvalid: with ``code`` one of ``invalid`` (not a decimal string),
        ``too_many_digits`` (more fractional digits than the currency has),
        ``negative``, ``zero``, ``too_large``.
    """
    if not isinstance(currency, str) or not CURRENCY_CODE.fullmatch(currency):
        raise MoneyInvalid("invalid_currency", "A currency is three capital letters (ISO 4217).")
    digits = currency_digits(currency)
    if isinstance(value, str):
        text = value.strip(_BLANKS)
    else:
        raise MoneyInvalid("invalid", f"An amount is a decimal string such as {_example(currency)!r}.")
    match = _MONEY.fullmatch(text)
    if match is None:
        raise MoneyInvalid(
            "invalid",
            f"Enter an amount in {currency} such as {_example(currency)!r}: digits and "
            + ("no decimal point." if digits == 0 else "a point, no grouping or exponent."),
        )
    fraction = match["fraction"] or ""
    if len(fraction) > digits:
        raise MoneyInvalid(
            "too_many_digits",
            f"{currency} has no minor unit: enter a whole amount."
            if digits == 0
            else f"{currency} has {digits} decimal place{'s' if digits != 1 else ''}; "
            f"{value!r} has {len(fraction)}.",
        )
    with localcontext() as context:
        context.prec = 80  # more than the 30 + 30 digits the pattern lets through: never rounded
        magnitude = Decimal(f"{match['whole']}.{fraction or '0'}").scaleb(digits)
    minor = int(magnitude)  # exact: the fraction fits the currency's digits
    if match["sign"]:
        minor = -minor
    if minor < 0 and not allow_negative:
        raise MoneyInvalid("negative", "An amount cannot be negative.")
    if minor == 0 and not allow_zero:
        raise MoneyInvalid("zero", "An amount must be more than zero.")
    if abs(minor) > max_minor:
        raise MoneyInvalid("too_large", f"At most {major_amount(max_minor, currency)} {currency}.")
    return minor


def _example(currency: str) -> str:
    digits = currency_digits(currency)
    return "150" + ("." + "0" * digits if digits else "")


class MoneyFormField(forms.Field):
    """A form's amount of money: typed in major units (``150.00``), cleaned to integer minor units.

    The currency is given at construction or set on the field before validation
    (``form.fields["amount"].currency = listing.currency``); errors are
    ``parse_money``'s messages. ``prepare_value`` shows an initial int of minor
    units back in major units, so an edit form round-trips.
    """

    widget = forms.TextInput

    def __init__(
        self,
        *,
        currency: str = "EUR",
        allow_zero: bool = False,
        max_minor: int = MAX_AMOUNT,
        **kwargs: Any,
    ) -> None:
        self.currency = currency
        self.allow_zero = allow_zero
        self.max_minor = max_minor
        super().__init__(**kwargs)

    def widget_attrs(self, widget: forms.Widget) -> dict[str, Any]:
        attrs = super().widget_attrs(widget)
        attrs.update({"inputmode": "decimal", "autocomplete": "off"})
        return attrs

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return major_amount(value, self.currency)
        return value

    def to_python(self, value: Any) -> int | None:
        # Not stripped first: only ASCII blanks around the amount are forgiven (by parse_money).
        if value in self.empty_values:
            return None
        try:
            return parse_money(value, self.currency, allow_zero=self.allow_zero, max_minor=self.max_minor)
        except MoneyInvalid as error:
            raise ValidationError(error.message, code=error.code) from error


def bind_currency(form: forms.BaseForm, *, field: str = "amount", currency_field: str = "currency") -> None:
    """Read ``form``'s amount in the currency typed beside it (when that is a currency code)."""
    raw = form.data.get(form.add_prefix(currency_field)) if form.is_bound else None
    if not (isinstance(raw, str) and CURRENCY_CODE.fullmatch(raw)):
        raw = form.initial.get(currency_field) or form.fields[currency_field].initial
    if isinstance(raw, str) and CURRENCY_CODE.fullmatch(raw):
        amount_field = form.fields[field]
        if isinstance(amount_field, MoneyFormField):
            amount_field.currency = raw


_LABEL_CURRENCY = re.compile(r"\b([A-Z]{3})\)?$")


def money_labelled(label: str, minor: int) -> str:
    """A chart's value: ``minor`` in the currency that ends its label (``"Title (EUR)"``, ``"2026-05 EUR"``).

    A label without one (a chart's "Other" row) shows the bare number of minor units
    with no currency, rather than pass it off as major units.
    """
    found = _LABEL_CURRENCY.search(label)
    return format_money(minor, found.group(1)) if found else f"{minor:,}"
