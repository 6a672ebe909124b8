"""``{% load money %}{{ amount_minor|money:currency }}``: minor units shown in major units, by locale.

``{{ 15000|money:"EUR" }}`` renders ``€150.00`` (en-us) or ``150,00 €`` (de);
the locale is Django's active language (see ``common/money.py``). An empty
amount (``None`` or ``""``) renders ``—``; anything else that is not an int
of minor units is a bug in the view, and raises.
"""

from __future__ import annotations

from typing import Any

from django import template

from common.money import format_money, major_amount, money_labelled

register = template.Library()


@register.filter(name="money")
def money(amount_minor: Any, currency: str) -> str:
    """Format ``amount_minor`` (integer minor units) of ``currency`` for the active locale."""
    if amount_minor is None or amount_minor == "":
        return "—"
    return format_money(amount_minor, currency)


@register.filter(name="money_major")
def money_major(amount_minor: Any, currency: str) -> str:
    """``amount_minor`` as the plain decimal a form takes back: ``15000|money_major:"EUR"`` is ``150.00``."""
    if amount_minor is None or amount_minor == "":
        return ""
    return major_amount(amount_minor, currency)


@register.filter(name="money_labelled")
def money_labelled_filter(amount_minor: Any, label: str) -> str:
    """An amount whose currency ends its label (``"Title (EUR)"``), as charts and summaries key them."""
    if amount_minor is None or amount_minor == "":
        return "—"
    return money_labelled(label, amount_minor)
