"""Key management in the console: every version's key, and the operator's two-step actions.

Each action is a confirmation page (GET, auditors may look) and the action
itself (POST, operators only): disable and enable take a reason for the audit
log; destroying a key (the crypto-shred, irreversible) takes the version's
label typed back. The custody services check the rules and audit each step.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from common.pages.paging import page_of
from custody import services as custody
from custody.models import DatasetVersion
from portal.console.access import console_page, form_act, operator_user, staff_user

VERSIONS_PER_PAGE = 25


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=300, help_text="Why: it goes into the audit log.", widget=forms.TextInput()
    )


class EnableForm(forms.Form):
    reason = forms.CharField(
        max_length=300, required=False, help_text="Optional; it goes into the audit log."
    )


class DestroyForm(forms.Form):
    confirm = forms.CharField(
        label="Type the version's label to confirm",
        max_length=200,
        widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
    )


class RotateForm(forms.Form):
    rewrap_all = forms.BooleanField(
        required=False, label="Also rewrap every version's key under the new master key now"
    )


def _version_or_404(version_id: int) -> DatasetVersion:
    version = DatasetVersion.objects.select_related("dataset__owner").filter(pk=version_id).first()
    if version is None:
        raise Http404("No such dataset version.")
    return version


@console_page
@require_GET
def keys_page(request: HttpRequest) -> HttpResponse:
    """The current master key version and each dataset version's key state, 25 a page."""
    user = staff_user(request)
    versions = DatasetVersion.objects.select_related("dataset__owner").order_by("pk")
    page = page_of(request, versions, VERSIONS_PER_PAGE)
    context = {
        "master_version": custody.master_key_version(),
        "page": page,
        "statuses": [custody.version_key_status(version) for version in page.object_list],
        "is_operator": user.is_operator,
    }
    return render(request, "portal/console/keys.html", context)


def _confirm(
    request: HttpRequest, action: str, version: DatasetVersion, form: forms.Form, status: int = 200
) -> HttpResponse:
    context = {
        "action": action,
        "version": version,
        "key": custody.version_key_status(version),
        "form": form,
        "is_operator": staff_user(request).is_operator,
    }
    return render(request, "portal/console/key_confirm.html", context, status=status)


def _key_action(request: HttpRequest, version_id: int, action: str) -> HttpResponse:
    version = _version_or_404(version_id)
    form_class: type[forms.Form] = {"disable": ReasonForm, "enable": EnableForm, "destroy": DestroyForm}[
        action
    ]
    if request.method != "POST":
        return _confirm(request, action, version, form_class())
    actor = operator_user(request)
    form = form_class(request.POST)

    def act() -> None:
        if action == "disable":
            custody.version_key_disable(actor=actor, version=version, reason=form.cleaned_data["reason"])
        elif action == "enable":
            custody.version_key_enable(actor=actor, version=version, reason=form.cleaned_data["reason"])
        else:
            custody.version_key_destroy(actor=actor, version=version, confirm=form.cleaned_data["confirm"])

    refused = form_act(form, act, lambda status: _confirm(request, action, version, form, status=status))
    if isinstance(refused, HttpResponse):
        return refused
    past = {"disable": "disabled", "enable": "enabled", "destroy": "destroyed"}[action]
    messages.success(request, f"The key of {custody.version_label(version)} is {past}.")
    return redirect("console:keys")


@console_page
@require_http_methods(["GET", "POST"])
def key_disable(request: HttpRequest, version_id: int) -> HttpResponse:
    """Disable a version's key (reversible; starts the shred delay)."""
    return _key_action(request, version_id, "disable")


@console_page
@require_http_methods(["GET", "POST"])
def key_enable(request: HttpRequest, version_id: int) -> HttpResponse:
    """Enable a disabled key again."""
    return _key_action(request, version_id, "enable")


@console_page
@require_http_methods(["GET", "POST"])
def key_destroy(request: HttpRequest, version_id: int) -> HttpResponse:
    """Destroy a disabled key for good (the crypto-shred), after typing the version's label."""
    return _key_action(request, version_id, "destroy")


@console_page
@require_http_methods(["GET", "POST"])
def master_rotate(request: HttpRequest) -> HttpResponse:
    """Rotate the master key (confirmation page, then the rotation)."""
    form = RotateForm(request.POST if request.method == "POST" else None)
    context = {"master_version": custody.master_key_version(), "form": form}
    if request.method != "POST" or not form.is_valid():
        return render(request, "portal/console/master_rotate.html", context)
    actor = operator_user(request)
    number = custody.master_key_rotate(actor=actor)
    note = ""
    if form.cleaned_data["rewrap_all"]:
        summary = custody.kek_rewrap_all(actor=actor)
        note = f" {summary.versions} version keys rewrapped."
    messages.success(request, f"Master key version {number} is now current.{note}")
    return redirect("console:keys")
