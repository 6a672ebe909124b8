"""Forms of the orders pages: buy, reject, payout, operator top-up."""

from __future__ import annotations

import secrets
from typing import Any

from django import forms

from common import public_ids
from common.models import Organisation
from common.money import MoneyFormField, bind_currency
from common.numbers import StrictIntegerField
from marketplace.models import PriceModel
from marketplace.services.funding import MAX_TOPUP


class BuyForm(forms.Form):
    """The order of one offer's terms, after the recap: only what its price model asks, and the acceptance.

    ``terms`` carries the terms row the page showed, so the order records which
    snapshot was accepted (and is refused if the terms changed meanwhile).
    ``periods`` exists for per-period offers only; ``buy_again`` only when the
    organisation already holds a license on the offer (or has one awaiting approval).
    """

    # Generated when the page is shown: submitting the form twice places one order.
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=200, min_length=8)
    # The terms row by public id (trm_…): its integer key would count terms rows platform-wide.
    terms = forms.RegexField(widget=forms.HiddenInput, regex=f"^{public_ids.pattern('trm')}$")
    periods = StrictIntegerField(
        min_value=1,
        max_value=10_000,
        initial=1,
        help_text="How many periods to buy; one is escrowed at a time.",
    )
    accept_terms = forms.BooleanField(
        label="I have read these terms and accept them",
        error_messages={"required": "Accept the terms to place the order."},
    )

    def clean_terms(self) -> int:
        # An unknown id resolves to 0, which is never the offer's current row: "terms changed".
        return public_ids.pk_for("trm", self.cleaned_data["terms"])

    @property
    def hidden_invalid(self) -> bool:
        """A hidden field (the page's idempotency key or terms row) failed: the page is stale."""
        return self.is_bound and bool(self.errors.get("idempotency_key") or self.errors.get("terms"))

    buy_again = forms.BooleanField(
        label="Yes, buy another license on this offer",
        error_messages={"required": "You already hold this offer: confirm that you want another license."},
    )

    def __init__(self, *args: Any, price_model: str, held: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if price_model != PriceModel.PERIOD:
            del self.fields["periods"]
        if not held:
            del self.fields["buy_again"]

    @classmethod
    def fresh(cls, *, terms_id: str, price_model: str, held: bool) -> BuyForm:
        return cls(
            initial={"idempotency_key": f"page-{secrets.token_urlsafe(16)}", "terms": terms_id},
            price_model=price_model,
            held=held,
        )


class RejectForm(forms.Form):
    reason = forms.CharField(max_length=300, help_text="The buyer sees this.")


class PayoutForm(forms.Form):
    idempotency_key = forms.CharField(widget=forms.HiddenInput, max_length=200, min_length=8)
    amount = MoneyFormField(max_minor=MAX_TOPUP, help_text="In the currency's major units, such as 150.00.")
    currency = forms.RegexField(regex=r"^[A-Z]{3}$", initial="EUR", max_length=3)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        bind_currency(self)

    @classmethod
    def fresh(cls) -> PayoutForm:
        return cls(initial={"idempotency_key": f"page-{secrets.token_urlsafe(16)}", "currency": "EUR"})


class OrganisationChoiceField(forms.ModelChoiceField):
    """An organisation picked by name (and its kind), posted as its id."""

    def label_from_instance(self, obj: Organisation) -> str:
        return f"{obj.name} ({obj.kind_label})"


class TopUpForm(forms.Form):
    organisation = OrganisationChoiceField(
        queryset=Organisation.objects.order_by("name"),
        empty_label="Choose an organisation",
        help_text="Whose balance the transfer tops up (type the first letters to jump to it).",
        error_messages={"invalid_choice": "No such organisation: choose one from the list."},
    )
    amount = MoneyFormField(max_minor=MAX_TOPUP, help_text="In the currency's major units, such as 150.00.")
    currency = forms.RegexField(regex=r"^[A-Z]{3}$", initial="EUR", max_length=3)
    external_ref = forms.CharField(max_length=120, label="Transfer reference")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        bind_currency(self)
