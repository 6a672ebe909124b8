"""Money in major units: one formatter (Babel), one exact parser, their form and API fields, the filter."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest
from django import forms
from django.conf import settings
from django.template import Context, Template
from django.utils import translation
from hypothesis import given
from hypothesis import strategies as st
from rest_framework import serializers

from common.api.fields import MinorField, MoneyField
from common.money import (
    MoneyFormField,
    MoneyInvalid,
    bind_currency,
    currency_digits,
    format_money,
    major_amount,
    money_labelled,
    parse_money,
)
from common.numbers import MAX_AMOUNT

# EUR and USD have two decimals, JPY none, KWD three (ISO 4217, from CLDR).
CURRENCIES = {"EUR": 2, "USD": 2, "GBP": 2, "JPY": 0, "KRW": 0, "KWD": 3, "BHD": 3}

# What a person or a client might send that is not an exact decimal of major units.
NOT_AMOUNTS = [
    "",
    " ",
    "1e3",
    "1E3",
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "inf",
    "1,500.00",
    "1 500",
    "1_500",
    "+150",
    ".5",
    "5.",
    "1.2.3",
    "0x1f",
    "١٥٠",  # Arabic-Indic digits
    "１５０",  # full-width digits
    "150\u00a0",  # a no-break space is not an ASCII blank
    "\u2003150",
    "150\n",
    "15 0",
    "€150",
    "150 EUR",
    "150,00",
]


class TestCurrencyDigits:
    @pytest.mark.parametrize(("currency", "digits"), CURRENCIES.items())
    def test_come_from_babel(self, currency, digits):
        assert currency_digits(currency) == digits


class TestFormat:
    @pytest.mark.parametrize(
        ("minor", "currency", "locale", "shown"),
        [
            (15000, "EUR", "en_US", "€150.00"),
            (15000, "EUR", "de_DE", "150,00\xa0€"),
            (15000, "EUR", "fr_FR", "150,00\xa0€"),
            (1234567, "USD", "en_US", "$12,345.67"),
            (1500, "JPY", "en_US", "¥1,500"),
            (1500, "JPY", "ja_JP", "￥1,500"),
            (1234, "KWD", "en_US", "KWD1.234"),
            (-5, "EUR", "en_US", "-€0.05"),
            (0, "EUR", "en_US", "€0.00"),
        ],
    )
    def test_by_locale_and_currency(self, minor, currency, locale, shown):
        assert format_money(minor, currency, locale) == shown

    def test_locale_is_the_active_language_then_the_setting(self):
        assert settings.LANGUAGE_CODE == "en-us"
        assert format_money(15000, "EUR") == "€150.00"
        with translation.override("de"):
            assert format_money(15000, "EUR") == "150,00\xa0€"
        with translation.override("en-gb"):
            assert format_money(15000, "GBP") == "£150.00"
        with translation.override(None):
            assert format_money(15000, "EUR") == "€150.00"

    @pytest.mark.parametrize("bad", [150.0, Decimal("150"), "15000", True, None])
    def test_takes_integer_minor_units_only(self, bad):
        with pytest.raises(TypeError):
            format_money(bad, "EUR")

    def test_major_amount_is_the_canonical_decimal(self):
        assert major_amount(15000, "EUR") == "150.00"
        assert major_amount(5, "EUR") == "0.05"
        assert major_amount(-5, "EUR") == "-0.05"
        assert major_amount(1500, "JPY") == "1500"
        assert major_amount(1234, "KWD") == "1.234"
        assert major_amount(10**13, "EUR") == "100000000000.00"

    def test_chart_labels_carry_their_currency(self):
        assert money_labelled("Support tickets (EUR)", 27000) == "€270.00"
        assert money_labelled("2026-05 JPY", 1500) == "¥1,500"
        # No currency (a chart's "Other" row of several): the number, not a made-up currency.
        assert money_labelled("Other (3 more)", 27000) == "27,000"


class TestParse:
    @pytest.mark.parametrize(
        ("text", "currency", "minor"),
        [
            ("150.00", "EUR", 15000),
            ("150", "EUR", 15000),
            ("150.5", "EUR", 15050),
            ("0.01", "EUR", 1),
            ("007.10", "EUR", 710),
            (" 150.00 ", "EUR", 15000),
            ("\t150\t", "EUR", 15000),
            ("1500", "JPY", 1500),
            ("1.234", "KWD", 1234),
            ("100000000000.00", "EUR", MAX_AMOUNT),
        ],
    )
    def test_takes_exact_decimals(self, text, currency, minor):
        assert parse_money(text, currency) == minor

    @pytest.mark.parametrize("text", NOT_AMOUNTS)
    def test_refuses_what_is_not_a_plain_decimal(self, text):
        with pytest.raises(MoneyInvalid) as excinfo:
            parse_money(text, "EUR")
        assert excinfo.value.code == "invalid"

    @pytest.mark.parametrize(
        ("text", "currency"),
        [("150.001", "EUR"), ("0.001", "USD"), ("1.5", "JPY"), ("1.0", "JPY"), ("1.2345", "KWD")],
    )
    def test_refuses_more_decimals_than_the_currency_has(self, text, currency):
        with pytest.raises(MoneyInvalid) as excinfo:
            parse_money(text, currency)
        assert excinfo.value.code == "too_many_digits"
        assert currency in excinfo.value.message

    @pytest.mark.parametrize("value", [150, 150.0, 1.5, True, None, Decimal("150"), ["150"], {"a": 1}])
    def test_refuses_numbers_and_other_types(self, value):
        # A JSON number is ambiguous (major or minor units?) or inexact (a float): text only.
        with pytest.raises(MoneyInvalid) as excinfo:
            parse_money(value, "EUR")
        assert excinfo.value.code == "invalid"

    def test_sign_zero_and_range(self):
        for text, code in (("-1.00", "negative"), ("0", "zero"), ("0.00", "zero"), ("-0", "zero")):
            with pytest.raises(MoneyInvalid) as excinfo:
                parse_money(text, "EUR")
            assert excinfo.value.code == code, text
        assert parse_money("0.00", "EUR", allow_zero=True) == 0
        assert parse_money("-1.50", "EUR", allow_negative=True) == -150
        with pytest.raises(MoneyInvalid) as excinfo:
            parse_money("100000000000.01", "EUR")
        assert excinfo.value.code == "too_large"
        with pytest.raises(MoneyInvalid) as excinfo:
            parse_money("10.00", "EUR", max_minor=999)
        assert excinfo.value.code == "too_large"

    def test_long_amounts_are_never_rounded(self):
        # Decimal's default context keeps 28 digits; the parser's does not round at all.
        text = "123456789012345678901234567890.12"
        assert parse_money(text, "EUR", max_minor=10**40) == 12345678901234567890123456789012

    @pytest.mark.parametrize("currency", ["eur", "EURO", "", None, "€"])
    def test_refuses_a_bad_currency(self, currency):
        with pytest.raises(MoneyInvalid) as excinfo:
            parse_money("1.00", currency)
        assert excinfo.value.code == "invalid_currency"


class TestParseProperties:
    @given(currency=st.sampled_from(sorted(CURRENCIES)), minor=st.integers(min_value=1, max_value=MAX_AMOUNT))
    def test_round_trips_minor_to_text_to_minor(self, currency, minor):
        text = major_amount(minor, currency)
        assert parse_money(text, currency) == minor
        # The text has exactly the currency's decimals, and means the same as Decimal does.
        digits = CURRENCIES[currency]
        assert (text.partition(".")[2] if digits else "") == (text[-digits:] if digits else "")
        assert Decimal(text).scaleb(digits) == minor

    @given(
        currency=st.sampled_from(sorted(CURRENCIES)),
        whole=st.integers(min_value=0, max_value=10**9),
        extra=st.integers(min_value=1, max_value=4),
        fraction=st.data(),
    )
    def test_refuses_every_amount_with_more_decimals(self, currency, whole, extra, fraction):
        places = CURRENCIES[currency] + extra
        digits = fraction.draw(st.text(alphabet="0123456789", min_size=places, max_size=places))
        with pytest.raises(MoneyInvalid) as excinfo:
            parse_money(f"{whole}.{digits}", currency, allow_zero=True)
        assert excinfo.value.code == "too_many_digits"

    @given(text=st.text(max_size=12))
    def test_anything_else_is_an_exact_amount_or_refused(self, text):
        try:
            minor = parse_money(text, "EUR", allow_zero=True)
        except MoneyInvalid:
            return
        # Whatever was taken is ASCII digits and at most one point, blanks around, and means exactly that.
        assert re.fullmatch(r"[ \t]*[0-9]+(\.[0-9]{1,2})?[ \t]*", text)
        assert Decimal(text.strip(" \t")) * 100 == minor


class TestFormField:
    def test_cleans_major_units_to_minor(self):
        assert MoneyFormField(currency="EUR").clean("150.00") == 15000
        assert MoneyFormField(currency="JPY").clean("1500") == 1500
        assert MoneyFormField(currency="EUR", required=False).clean("") is None

    @pytest.mark.parametrize(("text", "currency"), [("150.001", "EUR"), ("1.5", "JPY"), ("1e3", "EUR")])
    def test_refuses_with_a_message(self, text, currency):
        with pytest.raises(forms.ValidationError) as excinfo:
            MoneyFormField(currency=currency).clean(text)
        assert currency in excinfo.value.messages[0] or "such as" in excinfo.value.messages[0]

    def test_shows_an_initial_minor_amount_in_major_units(self):
        class Price(forms.Form):
            price = MoneyFormField(currency="EUR")

        html = str(Price(initial={"price": 15000})["price"])
        assert 'value="150.00"' in html
        assert 'inputmode="decimal"' in html

    def test_reads_the_amount_in_the_currency_typed_beside_it(self):
        class Payout(forms.Form):
            amount = MoneyFormField()
            currency = forms.RegexField(regex=r"^[A-Z]{3}$", initial="EUR")

            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                bind_currency(self)

        jpy = Payout({"amount": "1500", "currency": "JPY"})
        assert jpy.is_valid(), jpy.errors
        assert jpy.cleaned_data["amount"] == 1500
        refused = Payout({"amount": "1.5", "currency": "JPY"})
        assert not refused.is_valid()
        assert "JPY has no minor unit" in refused.errors["amount"][0]
        eur = Payout({"amount": "1.50", "currency": "EUR"})
        assert eur.is_valid() and eur.cleaned_data["amount"] == 150


class Body(serializers.Serializer):
    amount = MoneyField()
    currency = serializers.RegexField(r"^[A-Z]{3}$")


class Out(serializers.Serializer):
    amount = MoneyField()
    amount_minor = MinorField(source="amount")
    currency = serializers.CharField()


class TestSerializerField:
    def test_reads_a_decimal_string_in_the_body_currency(self):
        body = Body(data={"amount": "150.00", "currency": "EUR"})
        assert body.is_valid(), body.errors
        assert body.validated_data["amount"] == 15000
        body = Body(data={"amount": "1500", "currency": "JPY"})
        assert body.is_valid() and body.validated_data["amount"] == 1500

    @pytest.mark.parametrize(
        ("amount", "currency", "code"),
        [
            ("150.001", "EUR", "too_many_digits"),
            ("1.5", "JPY", "too_many_digits"),
            (15000, "EUR", "invalid"),
            (150.5, "EUR", "invalid"),
            ("1e3", "EUR", "invalid"),
            ("-1.00", "EUR", "negative"),
            ("0", "EUR", "zero"),
            ("1.00", "euro", "currency"),
        ],
    )
    def test_refuses_with_the_field_named(self, amount, currency, code):
        body = Body(data={"amount": amount, "currency": currency})
        assert not body.is_valid()
        assert body.errors["amount"][0].code == code

    def test_writes_the_pair(self):
        assert Out({"amount": 15000, "currency": "EUR"}).data == {
            "amount": "150.00",
            "amount_minor": 15000,
            "currency": "EUR",
        }
        assert Out({"amount": 1500, "currency": "JPY"}).data["amount"] == "1500"


class TestFilter:
    def render(self, source: str, **context) -> str:
        return Template("{% load money %}" + source).render(Context(context))

    def test_formats_minor_units_by_the_active_language(self):
        source = "{{ amount|money:currency }}"
        assert self.render(source, amount=15000, currency="EUR") == "€150.00"
        with translation.override("de"):
            assert self.render(source, amount=15000, currency="EUR") == "150,00\xa0€"
        assert self.render(source, amount=None, currency="EUR") == "—"
        assert self.render("{{ 1500|money:'JPY' }}") == "¥1,500"
        assert self.render("{{ 15000|money_major:'EUR' }}") == "150.00"


# --- no template shows an amount without the filter -------------------------------------------

TEMPLATE_DIRS = [Path(settings.BASE_DIR) / "templates"]
# A variable that holds money: its last name part says so (the ledger and the models name them this way).
MONEY_NAME = re.compile(
    r"\{\{\s*(?P<expr>[\w.]*?\b(?:amount|unit_price|escrow|escrow_amount|escrow_left|escrowed|released|"
    r"refunded|balance|earned|owed|price|payable)\b[\w.]*)\s*(?P<filters>\|[^}]*)?\}\}"
)
# Words for amounts that are not money (counts, budgets in tokens, epsilon).
NOT_MONEY = re.compile(r"(tokens|epsilon|count|jobs|records|files|bytes|steps|_display|\.total_\w+)")


def _money_without_filter(text: str) -> list[str]:
    found = []
    for match in MONEY_NAME.finditer(text):
        expr, filters = match["expr"], match["filters"] or ""
        if NOT_MONEY.search(expr) or re.search(r"\|\s*money", filters):
            continue
        found.append(match.group(0))
    return found


def test_the_check_below_catches_a_bare_amount():
    assert _money_without_filter("<td>{{ payout.amount }} {{ payout.currency }}</td>") == [
        "{{ payout.amount }}"
    ]
    assert _money_without_filter('{{ row.terms.unit_price|floatformat:"g" }}')
    assert not _money_without_filter("{{ payout.amount|money:payout.currency }}")
    assert not _money_without_filter("{{ license.tokens_total }} {{ stats.records }}")


def test_no_template_renders_an_amount_without_the_money_filter():
    offenders = {}
    for root in TEMPLATE_DIRS:
        for path in root.rglob("*.html"):
            found = _money_without_filter(path.read_text(encoding="utf-8"))
            if found:
                offenders[str(path.relative_to(root))] = found
    assert offenders == {}, "show money with {% load money %}{{ amount_minor|money:currency }}"


def test_no_template_tells_people_to_read_or_type_cents():
    said = {
        str(path.relative_to(root))
        for root in TEMPLATE_DIRS
        for path in root.rglob("*.html")
        if re.search(r"are in minor units|\(minor units|\(cents\)|such as cents", path.read_text("utf-8"))
    }
    assert said == set()
