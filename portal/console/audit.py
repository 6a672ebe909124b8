"""The audit log in the console: filter, page through, export (CSV, JSON Lines), verify the chain.

Pages go by sequence number (keyset pagination: ``?before=<seq>`` for older
events, ``?after=<seq>`` for newer), so a page is one query however long the
log grows; audit rows hold names beside ids, so no join is needed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from django import forms
from django.db import transaction
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.views.decorators.http import require_GET

from common.audit import audit_pending, audit_record
from common.audit_verify import audit_verify
from common.exports import csv_response, jsonl_response
from common.ids import parse_id
from common.models import AuditEvent
from portal.console.access import console_page, staff_user

EVENTS_PER_PAGE = 50
EXPORT_CHUNK = 2000
EXPORT_COLUMNS = [
    "seq",
    "at",
    "actor_id",
    "actor_name",
    "organisation_id",
    "organisation_name",
    "action",
    "object_type",
    "object_id",
    "details",
    "prev_hash",
    "hash",
]


class AuditFilterForm(forms.Form):
    actor = forms.CharField(required=False, max_length=254, help_text="A user name, or a user id (digits).")
    organisation = forms.CharField(
        required=False, max_length=120, help_text="An organisation name, or its id (digits)."
    )
    action = forms.CharField(
        required=False,
        max_length=80,
        help_text="An action (custody.key_disable) or its start (custody.).",
    )
    object_type = forms.CharField(required=False, max_length=80, label="Object type")
    object_id = forms.CharField(required=False, max_length=80, label="Object id")
    since = forms.DateTimeField(
        required=False,
        label="From (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"}, format="%Y-%m-%dT%H:%M:%S"),
        input_formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"],
    )
    until = forms.DateTimeField(
        required=False,
        label="Until (UTC, exclusive)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"}, format="%Y-%m-%dT%H:%M:%S"),
        input_formats=["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"],
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        for name in ("since", "until"):
            value = cleaned.get(name)
            # The console speaks UTC whatever the browser's zone: naive input is UTC.
            if isinstance(value, datetime):
                cleaned[name] = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        since, until = cleaned.get("since"), cleaned.get("until")
        if since and until and since >= until:
            self.add_error("until", "Until must be after From.")
        return cleaned

    def active_filters(self) -> dict[str, str]:
        """The filters in use, as text (for the audit record and the export links)."""
        if not self.is_valid():
            return {}
        return {
            name: value.isoformat() if isinstance(value, datetime) else str(value)
            for name, value in self.cleaned_data.items()
            if value not in (None, "")
        }


def _id_or_name(value: str, id_field: str, name_field: str) -> Q:
    value = value.strip()
    number = parse_id(value)  # not str.isdigit: "²" passes it, and int() refuses it
    if number is not None:
        return Q(**{id_field: number})
    return Q(**{f"{name_field}__iexact": value})


def audit_events_filtered(cleaned: dict[str, Any]) -> QuerySet[AuditEvent]:
    """Integrated audit events matching the console's filters (see :class:`AuditFilterForm`), unordered.

    Pending events (not sequenced yet: no seq, no hash) are counted on the page, not listed.
    """
    events = AuditEvent.objects.filter(seq__isnull=False)
    if cleaned.get("actor"):
        events = events.filter(_id_or_name(cleaned["actor"], "actor_id", "actor_name"))
    if cleaned.get("organisation"):
        events = events.filter(_id_or_name(cleaned["organisation"], "organisation_id", "organisation_name"))
    action = (cleaned.get("action") or "").strip()
    if action:
        events = (
            events.filter(action__startswith=action) if action.endswith(".") else events.filter(action=action)
        )
    if cleaned.get("object_type"):
        events = events.filter(object_type=cleaned["object_type"].strip())
    if cleaned.get("object_id"):
        events = events.filter(object_id=cleaned["object_id"].strip())
    if cleaned.get("since"):
        events = events.filter(at__gte=cleaned["since"])
    if cleaned.get("until"):
        events = events.filter(at__lt=cleaned["until"])
    return events


def _seq_param(request: HttpRequest, name: str) -> int | None:
    return parse_id(request.GET.get(name, ""))


def _page(
    events: QuerySet[AuditEvent], before: int | None, after: int | None
) -> tuple[list[AuditEvent], bool, bool]:
    """One page, newest first, and whether older and newer pages exist (one query; two after ``before``)."""
    if after is not None:
        rows = list(events.filter(seq__gt=after).order_by("seq")[: EVENTS_PER_PAGE + 1])
        has_newer = len(rows) > EVENTS_PER_PAGE
        rows = rows[:EVENTS_PER_PAGE]
        rows.reverse()
        return rows, True, has_newer
    has_newer = before is not None and events.filter(seq__gte=before).exists()
    if before is not None:
        events = events.filter(seq__lt=before)
    rows = list(events.order_by("-seq")[: EVENTS_PER_PAGE + 1])
    return rows[:EVENTS_PER_PAGE], len(rows) > EVENTS_PER_PAGE, has_newer


def _query_without_paging(request: HttpRequest) -> str:
    query = request.GET.copy()
    for name in ("before", "after", "format"):
        query.pop(name, None)
    return query.urlencode()


@console_page
@require_GET
def audit_log_page(request: HttpRequest) -> HttpResponse:
    """The audit log, newest first, filtered by actor, organisation, action, object and time."""
    form = AuditFilterForm(request.GET or None)
    events: list[AuditEvent] = []
    has_older = has_newer = False
    status = 200
    if form.is_bound and not form.is_valid():
        status = 400
    else:
        cleaned = form.cleaned_data if form.is_bound else {}
        events, has_older, has_newer = _page(
            audit_events_filtered(cleaned), _seq_param(request, "before"), _seq_param(request, "after")
        )
    context = {
        "form": form,
        "events": events,
        "rows": [(event, _details_facts(event), _details_pretty(event)) for event in events],
        "has_older": has_older,
        "has_newer": has_newer,
        "newest_seq": events[0].seq if events else None,
        "oldest_seq": events[-1].seq if events else None,
        "query": _query_without_paging(request),
        "pending": audit_pending(),
    }
    return render(request, "portal/console/audit_log.html", context, status=status)


# Keys read first when an event's details are summed up in the table (the rest follow in key order).
FACT_KEYS = ("reason", "amount", "currency", "escrow", "refunded", "state", "result", "ok", "format")
FACTS_SHOWN = 4
FACT_WIDTH = 80


def _details_facts(event: AuditEvent) -> list[tuple[str, str]]:
    """Up to four top-level scalar details (the telling ones first), each cut to a readable length."""
    details = event.details if isinstance(event.details, dict) else {}
    scalars = {k: v for k, v in details.items() if isinstance(v, str | int | float | bool) or v is None}
    ordered = [k for k in FACT_KEYS if k in scalars] + sorted(k for k in scalars if k not in FACT_KEYS)
    facts = []
    for key in ordered[:FACTS_SHOWN]:
        value = scalars[key]
        text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
        facts.append((key, text if len(text) <= FACT_WIDTH else text[: FACT_WIDTH - 1] + "…"))
    return facts


def _details_pretty(event: AuditEvent) -> str:
    """The whole details, indented, for the row's expandable view ("" when there are none)."""
    if not event.details:
        return ""
    return json.dumps(event.details, sort_keys=True, indent=2, ensure_ascii=False)


def _details_text(event: AuditEvent) -> str:
    return json.dumps(event.details, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _export_row(event: AuditEvent) -> list[Any]:
    details = _details_text(event)
    return [
        event.seq,
        event.at,
        event.actor_id,
        event.actor_name,
        event.organisation_id,
        event.organisation_name,
        event.action,
        event.object_type,
        event.object_id,
        details,
        event.prev_hash,
        event.hash,
    ]


def _export_object(event: AuditEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "at": event.at,
        "actor_id": event.actor_id,
        "actor_name": event.actor_name,
        "organisation_id": event.organisation_id,
        "organisation_name": event.organisation_name,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "details": event.details,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def _stream(events: QuerySet[AuditEvent]) -> Iterator[AuditEvent]:
    yield from events.order_by("seq").iterator(chunk_size=EXPORT_CHUNK)


@console_page
@require_GET
def audit_export(request: HttpRequest) -> HttpResponseBase:
    """The filtered log, oldest first, as CSV (``?format=csv``, spreadsheet-safe) or JSON Lines (``jsonl``).

    Audited before the download starts, with the filters used.
    """
    user = staff_user(request)
    export_format = request.GET.get("format", "csv")
    form = AuditFilterForm(request.GET)
    if export_format not in ("csv", "jsonl") or not form.is_valid():
        context = {"form": form, "events": [], "query": "", "export_error": True}
        return render(request, "portal/console/audit_log.html", context, status=400)
    filters = form.active_filters()
    with transaction.atomic():
        audit_record(
            action="console.audit_export",
            actor=user,
            object_type="audit_log",
            details={"format": export_format, "filters": filters},
        )
    events = audit_events_filtered(form.cleaned_data)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if export_format == "jsonl":
        return jsonl_response(
            filename=f"sealroom-audit-{stamp}", objects=map(_export_object, _stream(events))
        )
    rows: Iterator[Sequence[Any]] = map(_export_row, _stream(events))
    return csv_response(filename=f"sealroom-audit-{stamp}", header=EXPORT_COLUMNS, rows=rows)


@console_page
@require_GET
def audit_verify_page(request: HttpRequest) -> HttpResponse:
    """Verify the whole chain and the signed checkpoints now; show OK or the first bad sequence number."""
    user = staff_user(request)
    report = audit_verify()
    with transaction.atomic():
        audit_record(
            action="console.audit_verify",
            actor=user,
            object_type="audit_log",
            details={
                "ok": report.ok,
                "events_checked": report.events_checked,
                "last_seq": report.last_seq,
                "first_bad_seq": report.first_bad_seq,
                "problems": report.problem_count,
            },
        )
    return render(request, "portal/console/audit_verify.html", {"report": report})
