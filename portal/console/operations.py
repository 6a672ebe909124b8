"""Money and takedowns in the console: payouts, refunds and dataset takedowns, listed and acted on.

Each page lists for everyone on the console (auditors read) and acts for
operators only, through the existing services, which check the rules and
audit each step:

- takedowns: ``custody.services.version_takedown`` (the marketplace and
  training undo their side on work items, listed here with their states);
- payouts: a payout whose gateway call ran out of attempts is re-driven with
  ``common.work.work_retry`` (a refusal by the gateway is final: the money is
  owed again and the provider asks anew);
- refunds: ``escrow.refund`` ledger transactions (rejections, time-outs,
  expiries, takedowns); an operator may end an active license and refund its
  unreleased escrow with ``marketplace.services.settlement.license_refund``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django import forms
from django.contrib import messages
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from common.audit import audit_record
from common.models import AuditEvent, WorkItem, WorkState
from common.money import format_money
from common.pages.paging import page_of
from common.work import work_retry
from custody import services as custody
from custody.models import DatasetVersion, VersionState
from marketplace.models import (
    AccountKind,
    LedgerTransaction,
    License,
    LicenseState,
    Listing,
    Order,
    Payout,
    PayoutState,
)
from marketplace.services.payouts import PAYOUT_WORK
from marketplace.services.settlement import license_refund
from marketplace.services.takedown import LICENSE_WORK, LISTING_WORK, ORDER_WORK, TAKEDOWN_KINDS
from portal.console.access import console_page, form_act, operator_user, staff_user

ROWS_PER_PAGE = 50
# Versions that can still be taken down (custody's TAKEDOWN_FROM_STATES).
TAKEDOWN_FROM = (
    VersionState.UPLOADING,
    VersionState.PROCESSING,
    VersionState.REVIEW,
    VersionState.SEALED,
    VersionState.FAILED,
)


def _version_label(version: DatasetVersion) -> str:
    return f"{version.dataset.owner.name} / {version.dataset.name} / v{version.number}"


class VersionChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: DatasetVersion) -> str:
        return f"{_version_label(obj)} ({obj.get_state_display().lower()})"


class TakedownForm(forms.Form):
    version = VersionChoiceField(
        queryset=DatasetVersion.objects.filter(state__in=TAKEDOWN_FROM)
        .select_related("dataset__owner")
        .order_by("dataset__owner__name", "dataset__name", "number"),
        label="Dataset version",
        empty_label="Choose a version",
        error_messages={
            "invalid_choice": "Choose a version from the list (it may have been taken down already)."
        },
    )
    reason = forms.CharField(
        max_length=300, help_text="Why (a court order, a provider's request): it is audited."
    )
    confirm = forms.BooleanField(
        label="Withdraw its listings, revoke its licenses and refund what is unreleased",
        error_messages={"required": "Confirm that you mean to take the version down."},
    )


# --- takedowns ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TakenDown:
    version: DatasetVersion
    label: str
    at: datetime | None
    by: str
    work: dict[str, int]


def _taken_down_rows(versions: list[DatasetVersion]) -> list[TakenDown]:
    """Each taken-down version with when and by whom (its audit event) and its work items' states."""
    events = {
        event.object_id: event
        for event in AuditEvent.objects.filter(
            action="custody.version_takedown",
            object_type="dataset_version",
            object_id__in=[str(v.pk) for v in versions],
        ).order_by("seq")
    }
    owners = _takedown_item_versions([v.pk for v in versions])
    work: dict[int, dict[str, int]] = {v.pk: {} for v in versions}
    items = WorkItem.objects.filter(kind__in=TAKEDOWN_KINDS, ref__in={ref for _kind, ref in owners})
    for kind, ref, state in items.values_list("kind", "ref", "state"):
        version_id = owners.get((kind, ref))
        if version_id is not None:
            work[version_id][state] = work[version_id].get(state, 0) + 1
    return [
        TakenDown(
            version=version,
            label=_version_label(version),
            at=events[str(version.pk)].at if str(version.pk) in events else None,
            by=str(events[str(version.pk)].details.get("requested_by", ""))
            if str(version.pk) in events
            else "",
            work=work[version.pk],
        )
        for version in versions
    ]


def _takedown_item_versions(version_ids: list[int]) -> dict[tuple[str, str], int]:
    """(work kind, ref) of every takedown item the versions may have, mapped to the version's id."""
    found: dict[tuple[str, str], int] = {}
    for kind, rows in (
        (LISTING_WORK, Listing.objects.filter(version_id__in=version_ids).values_list("pk", "version_id")),
        (
            ORDER_WORK,
            Order.objects.filter(listing__version_id__in=version_ids).values_list(
                "pk", "listing__version_id"
            ),
        ),
        (LICENSE_WORK, License.objects.filter(version_id__in=version_ids).values_list("pk", "version_id")),
    ):
        for pk, version_id in rows:
            found[(kind, str(pk))] = version_id
    return found


def _render_takedowns(request: HttpRequest, form: TakedownForm, status: int = 200) -> HttpResponse:
    user = staff_user(request)
    versions = page_of(
        request,
        DatasetVersion.objects.filter(state=VersionState.TAKEN_DOWN)
        .select_related("dataset__owner")
        .order_by("-pk"),
        ROWS_PER_PAGE,
    )
    context = {
        "form": form,
        "page": versions,
        "rows": _taken_down_rows(list(versions.object_list)),
        "is_operator": user.is_operator,
    }
    return render(request, "portal/console/takedowns.html", context, status=status)


@console_page
@require_GET
def takedowns_page(request: HttpRequest) -> HttpResponse:
    """Taken-down versions (when, by whom, what is left to undo) and, for operators, the takedown form."""
    return _render_takedowns(request, TakedownForm())


@console_page
@require_POST
def takedown_action(request: HttpRequest) -> HttpResponseBase:
    """Take a dataset version down (operators), through custody's takedown service."""
    actor = operator_user(request)
    form = TakedownForm(request.POST)
    done = form_act(
        form,
        lambda: custody.version_takedown(
            actor=actor, version=form.cleaned_data["version"], reason=form.cleaned_data["reason"]
        ),
        lambda status: _render_takedowns(request, form, status=status),
    )
    if isinstance(done, HttpResponse):
        return done
    version = form.cleaned_data["version"]
    messages.success(
        request,
        f"{_version_label(version)} is taken down: its listings, orders and licenses are being undone.",
    )
    return redirect("console:takedowns")


# --- payouts -----------------------------------------------------------------------------------


class PayoutFilterForm(forms.Form):
    state = forms.ChoiceField(required=False, choices=[("", "Any state"), *PayoutState.choices])


class PayoutRetryForm(forms.Form):
    payout = forms.CharField(max_length=40, widget=forms.HiddenInput())
    reason = forms.CharField(max_length=300, help_text="Why: it goes into the audit log.")


def _render_payouts(
    request: HttpRequest, retry: PayoutRetryForm | None = None, status: int = 200
) -> HttpResponse:
    user = staff_user(request)
    filters = PayoutFilterForm(request.GET or None)
    payouts = Payout.objects.select_related("organisation").order_by("-created_at", "-pk")
    if filters.is_valid() and filters.cleaned_data.get("state"):
        payouts = payouts.filter(state=filters.cleaned_data["state"])
    page = page_of(request, payouts, ROWS_PER_PAGE)
    refs = [p.ref for p in page.object_list]
    items = {
        item.ref: item for item in WorkItem.objects.filter(kind=PAYOUT_WORK, ref__in=refs).order_by("pk")
    }
    context = {
        "filters": filters,
        "page": page,
        "rows": [(payout, items.get(payout.ref)) for payout in page.object_list],
        "is_operator": user.is_operator,
        "retry_payout": retry.data.get("payout", "") if retry is not None else "",
        "retry_error": " ".join(str(e) for errors in retry.errors.values() for e in errors) if retry else "",
    }
    return render(request, "portal/console/payouts.html", context, status=status)


@console_page
@require_GET
def payouts_page(request: HttpRequest) -> HttpResponse:
    """Every payout, newest first, with its gateway call's work item; operators re-drive a failed call."""
    return _render_payouts(request)


@console_page
@require_POST
def payout_retry_action(request: HttpRequest) -> HttpResponseBase:
    """Re-drive the gateway call of a payout whose work item failed (operators, with a reason)."""
    actor = operator_user(request)
    form = PayoutRetryForm(request.POST)
    if not form.is_valid():
        return _render_payouts(request, form, status=422)
    ref = form.cleaned_data["payout"]
    item = WorkItem.objects.filter(kind=PAYOUT_WORK, ref=ref).first()
    if item is None or item.state != WorkState.FAILED:
        form.add_error(None, f"Payout {ref}'s gateway call has not failed: there is nothing to retry.")
        return _render_payouts(request, form, status=409)
    retried = form_act(
        form,
        lambda: work_retry(item_id=item.pk, actor=actor, reason=form.cleaned_data["reason"]),
        lambda status: _render_payouts(request, form, status=status),
    )
    if isinstance(retried, HttpResponse):
        return retried
    messages.success(request, f"Payout {ref} is queued for the gateway again.")
    return redirect("console:payouts")


# --- refunds -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refund:
    transaction: LedgerTransaction
    organisation: str
    amount: int
    currency: str


class LicenseRefundForm(forms.Form):
    license = forms.CharField(
        label="License reference", max_length=40, help_text="As the trainer sees it: lic_…"
    )
    reason = forms.CharField(
        max_length=300, help_text="The licensee and the provider are told; it is audited."
    )

    def clean_license(self) -> License:
        ref = self.cleaned_data["license"].strip()
        found = License.objects.select_related("licensee", "order").filter(ref=ref).first()
        if found is None:
            raise forms.ValidationError("No license has this reference.")
        if found.state != LicenseState.ACTIVE:
            raise forms.ValidationError(f"License {ref} is {found.get_state_display().lower()}, not active.")
        return found


def _refund_rows(transactions: list[LedgerTransaction]) -> list[Refund]:
    rows = []
    for txn in transactions:
        credit = next(
            (p for p in txn.postings.all() if p.account.kind == AccountKind.ORGANISATION_BALANCE),
            None,
        )
        organisation = credit.account.organisation if credit is not None else None
        rows.append(
            Refund(
                transaction=txn,
                organisation=organisation.name if organisation is not None else "",
                amount=credit.amount if credit is not None else 0,
                currency=credit.account.currency if credit is not None else "",
            )
        )
    return rows


def _render_refunds(request: HttpRequest, form: LicenseRefundForm, status: int = 200) -> HttpResponse:
    user = staff_user(request)
    refunds = (
        LedgerTransaction.objects.filter(kind="escrow.refund")
        .prefetch_related("postings__account__organisation")
        .order_by("-created_at", "-pk")
    )
    page = page_of(request, refunds, ROWS_PER_PAGE)
    context = {
        "form": form,
        "page": page,
        "rows": _refund_rows(list(page.object_list)),
        "is_operator": user.is_operator,
    }
    return render(request, "portal/console/refunds.html", context, status=status)


@console_page
@require_GET
def refunds_page(request: HttpRequest) -> HttpResponse:
    """Refunds from escrow to buyers, newest first; operators end a license and refund what is unreleased."""
    return _render_refunds(request, LicenseRefundForm())


@console_page
@require_POST
def license_refund_action(request: HttpRequest) -> HttpResponseBase:
    """End an active license and refund its unreleased escrow (operators, with a reason)."""
    actor = operator_user(request)
    form = LicenseRefundForm(request.POST)
    if not form.is_valid():
        return _render_refunds(request, form, status=422)
    license_ = form.cleaned_data["license"]
    reason = form.cleaned_data["reason"].strip()
    with transaction.atomic():
        ended = license_refund(license_=license_, reason=f"Refunded by the platform: {reason}"[:300])
        audit_record(
            action="console.license_refund",
            actor=actor,
            organisation=license_.licensee,
            object_type="license",
            object_id=license_.ref,
            details={"reason": reason[:300], "refunded": ended.refunded},
        )
    refunded = format_money(ended.refunded, ended.order.currency)
    messages.success(
        request, f"License {ended.ref} is revoked; {refunded} went back to {ended.licensee.name}."
    )
    return redirect("console:refunds")
