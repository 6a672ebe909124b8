"""Background work in the console: every work item, filtered by state and kind, and the operator's retry.

A failed item (out of attempts, or refused for good by its handler) is never
run again by itself; the page lists it with its last error, and an operator
re-drives it with a reason for the audit log (``common.work.work_retry``).
Auditors see the same page without the forms.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, QueryDict
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from common.ids import parse_id
from common.models import WorkItem, WorkState
from common.numbers import StrictIntegerField
from common.pages.paging import page_of
from common.work import work_retry
from portal.console.access import console_page, form_act, operator_user, staff_user

ITEMS_PER_PAGE = 50


class WorkFilterForm(forms.Form):
    state = forms.ChoiceField(required=False, choices=[("", "Any state"), *WorkState.choices])
    kind = forms.CharField(
        required=False,
        max_length=80,
        help_text="A kind (marketplace.settle_usage) or its start (marketplace.).",
    )

    def query(self) -> str:
        """The filters in use as a query string (``""`` when none, or when they do not parse)."""
        if not self.is_valid():
            return ""
        query = QueryDict(mutable=True)
        query.update({name: value for name, value in self.cleaned_data.items() if value})
        return query.urlencode()


class RetryForm(forms.Form):
    item = StrictIntegerField(min_value=1, widget=forms.HiddenInput())
    reason = forms.CharField(max_length=300, help_text="Why: it goes into the audit log.")
    # The list's filters, so the operator lands back where they were.
    back = forms.CharField(required=False, max_length=300, widget=forms.HiddenInput())


def work_items_filtered(cleaned: dict[str, Any]) -> QuerySet[WorkItem]:
    """Work items matching the page's filters, newest first."""
    items = WorkItem.objects.all()
    if cleaned.get("state"):
        items = items.filter(state=cleaned["state"])
    kind = (cleaned.get("kind") or "").strip()
    if kind:
        items = items.filter(kind__startswith=kind) if kind.endswith(".") else items.filter(kind=kind)
    return items.order_by("-pk")


def _render(
    request: HttpRequest, filters: WorkFilterForm, retry: RetryForm | None = None, status: int = 200
) -> HttpResponse:
    user = staff_user(request)
    if filters.is_bound and not filters.is_valid():
        status = 400 if status == 200 else status
        items = WorkItem.objects.none()
    else:
        items = work_items_filtered(filters.cleaned_data if filters.is_bound else {})
    context = {
        "form": filters,
        "page": page_of(request, items, ITEMS_PER_PAGE),
        "retry_item": _posted_item(retry),
        "retry_error": " ".join(str(e) for errors in retry.errors.values() for e in errors) if retry else "",
        "query": filters.query() if filters.is_bound else "",
        "is_operator": user.is_operator,
    }
    return render(request, "portal/console/work.html", context, status=status)


@console_page
@require_GET
def work_page(request: HttpRequest) -> HttpResponse:
    """Work items, newest first, filtered by state and kind; failed ones with a retry form for operators."""
    return _render(request, WorkFilterForm(request.GET or None))


@console_page
@require_POST
def work_retry_action(request: HttpRequest) -> HttpResponseBase:
    """Re-drive one failed work item (operators, with a reason); back to the list it was retried from."""
    actor = operator_user(request)
    form = RetryForm(request.POST)
    filters = WorkFilterForm(_back_query(request.POST.get("back", "")) or None)
    item = form_act(
        form,
        lambda: work_retry(
            item_id=form.cleaned_data["item"], actor=actor, reason=form.cleaned_data["reason"]
        ),
        lambda status: _render(request, filters, form, status=status),
    )
    if isinstance(item, HttpResponse):
        return item
    messages.success(request, f"Work item {item.pk} ({item.kind} {item.ref}) is queued again.")
    query = filters.query() if filters.is_bound else ""
    return redirect(reverse("console:work") + (f"?{query}" if query else ""))


def _posted_item(retry: RetryForm | None) -> int | None:
    raw = retry.data.get("item", "") if retry is not None else ""
    return parse_id(raw)


def _back_query(raw: str) -> dict[str, str]:
    """The list's filters from the retry form's ``back`` field (anything else in it is dropped)."""
    parsed = QueryDict(raw)
    return {name: parsed[name] for name in ("state", "kind") if parsed.get(name)}
