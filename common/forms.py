"""Forms for the foundation pages. They parse input; the services decide.

Field errors from a service's ``Invalid`` (JSON pointers such as
``/username``) are put back on the form field they name, so the page shows
them next to that field.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.conf import settings

from common.exceptions import DomainError
from common.models import Membership, Role, Scope
from common.numbers import StrictIntegerField


def add_domain_error(form: forms.Form, error: DomainError) -> None:
    """Show a domain error: each field error beside its field, the rest above the form."""
    placed = False
    for field_error in error.errors:
        name = field_error["pointer"].lstrip("/").split("/", 1)[0]
        if name in form.fields:
            form.add_error(name, field_error["detail"])
            placed = True
    if not placed:
        form.add_error(None, error.detail)


class SignupForm(forms.Form):
    KIND_CHOICES = [
        ("provider", "Data provider: we contribute corpora"),
        ("trainer", "Model trainer: we license data and train models"),
        ("both", "Both"),
    ]

    username = forms.CharField(max_length=150, widget=forms.TextInput(attrs={"autocomplete": "username"}))
    email = forms.EmailField(label="E-mail", widget=forms.EmailInput(attrs={"autocomplete": "email"}))
    password = forms.CharField(
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="At least 8 characters, not a common password, not only digits.",
    )
    password_again = forms.CharField(
        label="Password again",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    organisation_name = forms.CharField(label="Organisation name", max_length=120)
    kind = forms.ChoiceField(
        label="Your organisation is a", choices=KIND_CHOICES, widget=forms.RadioSelect, initial="provider"
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        password, again = cleaned.get("password"), cleaned.get("password_again")
        if password and again and password != again:
            self.add_error("password_again", "The two passwords differ.")
        return cleaned


class LoginForm(forms.Form):
    username = forms.CharField(
        max_length=254, widget=forms.TextInput(attrs={"autocomplete": "username", "autofocus": True})
    )
    password = forms.CharField(
        strip=False, widget=forms.PasswordInput(attrs={"autocomplete": "current-password"})
    )


class TotpCodeForm(forms.Form):
    code = forms.RegexField(
        label="6-digit code",
        regex=r"^\s*\d{6}\s*$",
        error_messages={"invalid": "Enter the 6 digits your authenticator app shows."},
        widget=forms.TextInput(
            attrs={
                "autocomplete": "one-time-code",
                "inputmode": "numeric",
                "pattern": r"\d{6}",
                "maxlength": "6",
                "autofocus": True,
                "class": "input--code",
            }
        ),
    )

    def clean_code(self) -> str:
        code: str = self.cleaned_data["code"]
        return code.strip()


ROLE_CHOICES = [(r.value, r.label) for r in Role]


class InviteForm(forms.Form):
    email = forms.EmailField(label="E-mail", widget=forms.EmailInput(attrs={"autocomplete": "off"}))
    role = forms.ChoiceField(choices=ROLE_CHOICES, initial=Role.MEMBER)


class RoleChangeForm(forms.Form):
    role = forms.ChoiceField(choices=ROLE_CHOICES)


SCOPE_HELP: dict[str, str] = {
    Scope.READ.value: "see what your role can see",
    Scope.PROVIDE.value: "upload and manage datasets",
    Scope.ORDER.value: "quote and buy licenses",
    Scope.TRAIN.value: "submit and follow fine-tune jobs",
    Scope.ADMIN.value: "manage members, invitations, webhooks and API tokens (as your role allows)",
}


class TokenCreateForm(forms.Form):
    organisation = forms.TypedChoiceField(coerce=int, empty_value=None)
    name = forms.CharField(max_length=80, help_text="What the token is for, e.g. “CI pipeline”.")
    scopes = forms.MultipleChoiceField(
        choices=[(scope, f"{scope} — {SCOPE_HELP[scope]}") for scope in Scope.values],
        widget=forms.CheckboxSelectMultiple,
        help_text="Viewers may only create read tokens.",
    )
    expires_in_days = StrictIntegerField()

    def __init__(self, *args: Any, memberships: Iterable[Membership], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        org_field = self.fields["organisation"]
        assert isinstance(org_field, forms.TypedChoiceField)
        org_field.choices = [(m.organisation_id, f"{m.organisation.name} ({m.role})") for m in memberships]
        # Built here, not at import, so the limits follow the settings.
        self.fields["expires_in_days"] = StrictIntegerField(
            label="Expires in (days)",
            min_value=1,
            max_value=settings.API_TOKEN_MAX_DAYS,
            initial=settings.API_TOKEN_DEFAULT_DAYS,
            help_text=f"1 to {settings.API_TOKEN_MAX_DAYS} days.",
        )
