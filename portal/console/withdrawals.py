"""Withdrawals in the console: every contribution withdrawn, its re-seal's state, and the operator's form.

Operators withdraw a contribution by its public id (``ctb_…``, from a court
order or a contributor's written request) through
``custody.services.contribution_withdraw``, the same service the contributor's
portal page calls: audited as ``custody.contribution_withdraw`` with
``requested_as: operator``. Auditors see the list. Each row links the
re-seal's work item (``custody.withdraw``) so a failed one can be retried on
the Work page.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from common.models import WorkItem
from common.pages.paging import page_of
from common.public_ids import is_public_id, pk_for
from custody import services as custody
from custody.models import Contribution, ContributionWithdrawal
from custody.services.withdrawal import WITHDRAW_WORK
from portal.console.access import console_page, form_act, operator_user, staff_user

ROWS_PER_PAGE = 50


class ConsoleWithdrawForm(forms.Form):
    contribution = forms.CharField(
        label="Contribution id",
        max_length=40,
        help_text="Its public id, ctb_ and 16 hex digits (on the provider's version page and in the API).",
    )
    reason = forms.CharField(
        max_length=300, help_text="Why (a court order, a contributor's request): it is audited."
    )
    confirm = forms.BooleanField(
        label="Re-seal its version without it, close the current version and move its licenses",
        error_messages={"required": "Confirm that you mean to withdraw the contribution."},
    )

    def clean_contribution(self) -> Contribution:
        value = self.cleaned_data["contribution"].strip()
        found = None
        if is_public_id(value, "ctb"):
            try:
                found = Contribution.objects.select_related("version__dataset").get(pk=pk_for("ctb", value))
            except (Contribution.DoesNotExist, ValueError):
                found = None
        if found is None:
            raise forms.ValidationError("No contribution has this id (ctb_ and 16 hex digits).")
        return found


def _render(request: HttpRequest, form: ConsoleWithdrawForm, status: int = 200) -> HttpResponse:
    user = staff_user(request)
    page = page_of(
        request,
        ContributionWithdrawal.objects.select_related(
            "contribution", "from_version__dataset__owner", "to_version", "organisation", "requested_by"
        ).order_by("-pk"),
        ROWS_PER_PAGE,
    )
    withdrawals = list(page.object_list)
    items = dict(
        WorkItem.objects.filter(kind=WITHDRAW_WORK, ref__in=[str(w.pk) for w in withdrawals]).values_list(
            "ref", "state"
        )
    )
    rows = [(w, items.get(str(w.pk), "")) for w in withdrawals]
    context = {"form": form, "page": page, "rows": rows, "is_operator": user.is_operator}
    return render(request, "portal/console/withdrawals.html", context, status=status)


@console_page
@require_GET
def withdrawals_page(request: HttpRequest) -> HttpResponse:
    """Every withdrawal (newest first) and, for operators, the form to withdraw a contribution."""
    return _render(request, ConsoleWithdrawForm())


@console_page
@require_POST
def withdraw_action(request: HttpRequest) -> HttpResponseBase:
    """Withdraw a contribution (operators), through custody's withdrawal service."""
    actor = operator_user(request)
    form = ConsoleWithdrawForm(request.POST)
    withdrawal = form_act(
        form,
        lambda: custody.contribution_withdraw(
            actor=actor, contribution=form.cleaned_data["contribution"], reason=form.cleaned_data["reason"]
        ),
        lambda status: _render(request, form, status=status),
    )
    if isinstance(withdrawal, HttpResponse):
        return withdrawal
    contribution = form.cleaned_data["contribution"]
    messages.success(
        request,
        f"{contribution.filename} is withdrawn from {contribution.version.dataset.name} "
        f"v{contribution.version.number} ({withdrawal.public_id}); the re-seal runs in the background.",
    )
    return redirect("console:withdrawals")
