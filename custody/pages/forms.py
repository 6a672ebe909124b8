"""Forms of the custody pages. They parse input; the custody services decide."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms

from custody.desensitize.policy import NAMED_POLICIES

POLICY_HELP: dict[str, str] = {
    "default": "Default: every supported entity type replaced by its type tag, such as <PERSON>.",
    "strict": "Strict: more recall (lower score threshold); card, bank and identity numbers removed.",
    "pseudonym": "Pseudonyms: each value becomes a keyed pseudonym, the same one throughout a version.",
    "surrogate": "Surrogates: realistic fake values of the same type, so text still reads naturally.",
}


class DatasetForm(forms.Form):
    name = forms.CharField(max_length=120, help_text="Unique within your organisation.")
    description = forms.CharField(
        required=False,
        max_length=4000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="What the corpus is, where it comes from. Optional.",
    )
    policy = forms.ChoiceField(
        label="Desensitization policy",
        choices=[(name, POLICY_HELP.get(name, name)) for name in NAMED_POLICIES],
        initial="default",
        widget=forms.RadioSelect,
        help_text="What happens to personal data before anything is stored. Applies to every version.",
    )

    def policy_dict(self) -> dict[str, Any]:
        return NAMED_POLICIES[self.cleaned_data["policy"]].to_dict()


class VersionForm(forms.Form):
    epsilon_cap = forms.DecimalField(
        label="Privacy cap (epsilon)",
        required=False,
        min_value=Decimal("0.001"),
        max_digits=8,
        decimal_places=3,
        help_text=(
            "Optional. With a cap, only differentially private training may use this version, "
            "and all jobs together may spend at most this epsilon. Leave empty for no cap."
        ),
        widget=forms.NumberInput(attrs={"step": "0.001", "inputmode": "decimal"}),
    )


class RejectForm(forms.Form):
    reason = forms.CharField(
        required=False,
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Optional; kept with the version.",
    )


class ContributorInviteForm(forms.Form):
    organisation = forms.CharField(
        label="Organisation",
        max_length=120,
        help_text=(
            "The name of another provider organisation, as Sealroom shows it (or its short name). "
            "Its members may then upload files to this version; you review and seal them with yours."
        ),
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )
