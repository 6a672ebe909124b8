"""Forms of the orders pages: buy, reject, payout, operator top-up."""

from __future__ import annotations

import secrets

from django import forms

from common.numbers import AmountField, StrictIntegerField


class BuyForm(forms.Form):
    # Generated when the page is shown: submitting the form twice places one order.
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=200, min_length=8)
    periods = StrictIntegerField(
        required=False, min_value=1, max_value=10_000, help_text="Per-period offers: how many periods to buy."
    )

    @classmethod
    def fresh(cls) -> BuyForm:
        return cls(initial={"idempotency_key": f"page-{secrets.token_urlsafe(16)}"})


class RejectForm(forms.Form):
    reason = forms.CharField(max_length=300, help_text="The buyer sees this.")


class PayoutForm(forms.Form):
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=200, min_length=8)
    amount = AmountField(help_text="In minor units (cents).")
    currency = forms.RegexField(regex=r"^[A-Z]{3}$", initial="EUR", max_length=3)

    @classmethod
    def fresh(cls) -> PayoutForm:
        return cls(initial={"idempotency_key": f"page-{secrets.token_urlsafe(16)}", "currency": "EUR"})


class TopUpForm(forms.Form):
    organisation = StrictIntegerField(min_value=1, help_text="The organisation's id.")
    amount = AmountField(help_text="In minor units (cents).")
    currency = forms.RegexField(regex=r"^[A-Z]{3}$", initial="EUR", max_length=3)
    external_ref = forms.CharField(max_length=120, label="Transfer reference")
