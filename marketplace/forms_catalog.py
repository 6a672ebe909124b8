"""Forms of the catalog pages. They parse input into the documents the catalog services validate."""

from __future__ import annotations

from typing import Any

from django import forms

from common.models import Organisation
from common.money import MoneyFormField, major_amount
from common.numbers import StrictIntegerField
from custody.models import DatasetVersion
from marketplace.terms import JOB_TEMPLATES, PURPOSE_WORDS, TEMPLATE_WORDS


def _words(value: str) -> list[str]:
    return [w for w in value.replace(",", " ").split() if w]


class CatalogSearchForm(forms.Form):
    q = forms.CharField(label="Search", required=False, max_length=200)
    tag = forms.CharField(label="Domain tag", required=False, max_length=40)
    language = forms.CharField(label="Language", required=False, max_length=12, help_text="For example en.")
    price_model = forms.ChoiceField(
        label="Price",
        required=False,
        choices=[
            ("", "Any"),
            ("fixed", "Fixed"),
            ("metered", "Per million tokens"),
            ("period", "Per period"),
        ],
    )


class ListingForm(forms.Form):
    title = forms.CharField(max_length=200)
    description = forms.CharField(
        required=False,
        max_length=20_000,
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="What the data is and what it is good for. Do not paste records here.",
    )
    domain_tags = forms.CharField(
        required=False, max_length=500, help_text="Lowercase words separated by commas: support, telecom."
    )
    languages = forms.CharField(
        required=False, max_length=200, help_text="Language codes separated by commas (default: as detected)."
    )
    currency = forms.CharField(
        max_length=3, initial="EUR", help_text="ISO 4217; every offer is priced in it."
    )
    requires_approval = forms.BooleanField(
        required=False, label="Approve each order myself", help_text="Orders wait until an admin approves."
    )

    def listing_fields(self) -> dict[str, Any]:
        data = dict(self.cleaned_data)
        data["domain_tags"] = _words(data["domain_tags"])
        languages = _words(data.pop("languages"))
        if languages:
            data["languages"] = languages
        data["currency"] = data["currency"].upper()
        return data


def _version_label(version: DatasetVersion) -> str:
    return f"{version.dataset.name} · version {version.number}"


class ListingCreateForm(ListingForm):
    version = forms.ModelChoiceField(
        queryset=DatasetVersion.objects.none(), label="Sealed version", empty_label=None
    )
    field_order = ["version", "title"]

    def __init__(self, *args: Any, organisation: Organisation, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["version"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = (
            DatasetVersion.objects.filter(dataset__owner=organisation, state="sealed")
            .select_related("dataset")
            .order_by("dataset__name", "-number")
        )
        field.label_from_instance = _version_label  # type: ignore[method-assign,assignment]


class OfferForm(forms.Form):
    name = forms.CharField(max_length=120, help_text="What trainers see, such as “Research, 3 jobs”.")
    purposes = forms.MultipleChoiceField(
        choices=[(k, v[0].upper() + v[1:]) for k, v in PURPOSE_WORDS.items()],
        widget=forms.CheckboxSelectMultiple,
        help_text="What models trained on the data may be used for.",
    )
    job_templates = forms.MultipleChoiceField(
        choices=[(k, TEMPLATE_WORDS[k][0].upper() + TEMPLATE_WORDS[k][1:]) for k in JOB_TEMPLATES],
        widget=forms.CheckboxSelectMultiple,
        label="Job templates",
    )
    weights_may_leave = forms.BooleanField(
        required=False, label="Trained weights may be downloaded", help_text="After the release gate."
    )
    max_jobs = StrictIntegerField(min_value=1, initial=3, label="Maximum jobs")
    max_epochs = StrictIntegerField(min_value=1, initial=3, label="Maximum epochs per job")
    max_tokens = StrictIntegerField(
        min_value=1, initial=10_000_000, label="Maximum platform tokens (tokens × epochs)"
    )
    term_days = StrictIntegerField(min_value=1, initial=365, label="Term (days)")
    max_licenses = StrictIntegerField(
        min_value=1,
        required=False,
        label="Exclusive: at most this many licenses",
        help_text="Empty: unlimited.",
    )
    exclusive_use = forms.BooleanField(
        required=False,
        label="Exclusive use of the dataset version",
        help_text="The only license on the version while active, trained on alone (set the licenses to 1).",
    )
    dp_required = forms.BooleanField(required=False, label="Require differential privacy")
    epsilon_cap = forms.DecimalField(
        required=False,
        min_value=0,
        max_digits=8,
        decimal_places=3,
        label="Epsilon cap per license",
        help_text="At most the version's cap.",
    )
    attribution = forms.CharField(required=False, max_length=500, label="Attribution text")
    gate_max_exposure = forms.FloatField(
        required=False,
        min_value=0,
        label="Release gate: maximum canary exposure (bits)",
        help_text="Default 4.",
    )
    price_model = forms.ChoiceField(
        choices=[
            ("fixed", "Fixed per license"),
            ("metered", "Per million platform tokens"),
            ("period", "Per period"),
        ],
        widget=forms.RadioSelect,
        initial="fixed",
    )
    unit_price = MoneyFormField(
        allow_zero=True, label="Price", help_text="In the listing's currency, such as 150.00. Never negative."
    )
    period_days = StrictIntegerField(
        required=False, min_value=1, label="Period (days, per-period price only)"
    )

    def __init__(self, *args: Any, currency: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The price is typed in the listing's currency, in its major units.
        self.currency = currency
        price = self.fields["unit_price"]
        assert isinstance(price, MoneyFormField)
        price.currency = currency
        price.label = f"Price ({currency})"
        price.widget.attrs["data-money"] = currency

    def terms_document(self) -> dict[str, Any]:
        data = self.cleaned_data
        duty: dict[str, Any] = {"attribution": data["attribution"]}
        if data["dp_required"]:
            cap = data["epsilon_cap"]
            duty["differential_privacy"] = {
                "required": True,
                "epsilon_cap": float(cap) if cap is not None else None,
            }
            if cap is None:
                del duty["differential_privacy"]["epsilon_cap"]
        else:
            duty["differential_privacy"] = {"required": False}
        if data["gate_max_exposure"] is not None:
            duty["release_gate"] = {"max_exposure": data["gate_max_exposure"]}
        return {
            "version": 1,
            "permission": {
                "purposes": data["purposes"],
                "job_templates": data["job_templates"],
                "weights_may_leave": data["weights_may_leave"],
            },
            "constraint": {
                "max_jobs": data["max_jobs"],
                "max_epochs": data["max_epochs"],
                "max_tokens": data["max_tokens"],
                "term_days": data["term_days"],
                "max_licenses": data["max_licenses"],
                "exclusive_use": bool(data.get("exclusive_use")),
            },
            "duty": duty,
        }

    def price_document(self) -> dict[str, Any]:
        data = self.cleaned_data
        # The service reads prices as the API sends them: a decimal string in major units.
        unit_price = major_amount(data["unit_price"], self.currency)
        price: dict[str, Any] = {"model": data["price_model"], "unit_price": unit_price}
        if data["price_model"] == "period":
            price["period_days"] = data["period_days"]
        return price

    @staticmethod
    def initial_from(name: str, terms: dict[str, Any], price: dict[str, Any]) -> dict[str, Any]:
        """Form values that show an existing terms version (to edit into a new one)."""
        permission, constraint, duty = terms["permission"], terms["constraint"], terms.get("duty", {})
        dp = duty.get("differential_privacy", {})
        return {
            "name": name,
            **permission,
            **constraint,
            "dp_required": dp.get("required", False),
            "epsilon_cap": dp.get("epsilon_cap"),
            "attribution": duty.get("attribution", ""),
            "gate_max_exposure": duty.get("release_gate", {}).get("max_exposure"),
            "price_model": price["model"],
            "unit_price": price["unit_price"],
            "period_days": price.get("period_days"),
        }


class PreviewPickForm(forms.Form):
    record_ids = forms.TypedMultipleChoiceField(
        coerce=int, required=False, widget=forms.CheckboxSelectMultiple, label="Preview records"
    )

    def __init__(self, *args: Any, candidates: list[dict[str, Any]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["record_ids"]
        assert isinstance(field, forms.TypedMultipleChoiceField)
        field.choices = [(c["record_id"], f"Record {c['record_id']}") for c in candidates]


class RightsForm(forms.Form):
    """One basis-points field per contributing organisation."""

    def __init__(
        self, *args: Any, holders: list[Organisation], initial_bps: dict[int, int], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        for org in holders:
            self.fields[f"share_{org.pk}"] = StrictIntegerField(
                label=f"{org.name} (basis points)",
                min_value=1,
                max_value=10_000,
                initial=initial_bps.get(org.pk),
            )

    def shares(self) -> dict[int, int]:
        return {int(name.removeprefix("share_")): value for name, value in self.cleaned_data.items()}


class QuoteForm(forms.Form):
    tokens = StrictIntegerField(required=False, min_value=1, label="Platform tokens")
    periods = StrictIntegerField(required=False, min_value=1, label="Periods")
