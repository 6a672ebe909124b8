"""The desensitization report: entity charts, screening findings and drops, samples, seal."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.cache import add_never_cache_headers
from django.utils.http import urlencode
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from common import otp
from common.exceptions import Conflict, Invalid, NotFound, NotPermitted
from common.ids import parse_id
from common.models import Role
from common.pages.helpers import page_user, raise_http
from common.pages.paging import page_of
from common.public_ids import is_public_id, pks_for
from custody import selectors, services
from custody.charts import BarChart, bar_chart, totals_by_key
from custody.exceptions import ResidualRiskUnconfirmed
from custody.models import DatasetVersion, Finding, Report, VersionState
from custody.pages.access import VersionAccess, owner_version_for, require_role
from custody.pages.forms import RejectForm
from custody.services.residual import ResidualEstimate, ResidualRow

FINDINGS_PER_PAGE = 50
SAMPLES_PER_PAGE = 10
LANGUAGE_LABELS = {"en": "English", "zh": "Chinese", "other": "Other", "": "Unknown"}
FINDING_LABELS = {
    "exact_duplicate": "Exact duplicate",
    "near_duplicate": "Near duplicate",
    "empty": "Empty",
    "garbage": "Garbage",
    "over_long": "Over-long",
    "trigger_ngram": "Repeated rare n-gram",
    "possible_poison": "Possible poison (valuation)",
}
FINDING_HELP = {
    "exact_duplicate": "The same text as an earlier record (the group names the record kept).",
    "near_duplicate": "Almost the same text as another record.",
    "empty": "Nothing left to train on after normalization.",
    "garbage": "Mostly symbols, digits or repeated characters.",
    "over_long": "Longer than the screening limit.",
    "trigger_ngram": "A rare word sequence repeated across records: a possible poisoning trigger.",
    "possible_poison": "A valuation found its label at odds with its nearest records': a flipped label?",
}


def _percent(value: float) -> str:
    return f"{value:.1%}" if value >= 0.001 or value == 0 else f"{value:.2%}"


def residual_context(estimate: ResidualEstimate | None) -> dict[str, Any] | None:
    """The residual-risk estimate as the report and seal pages show it (percentages, 95% Wilson interval)."""
    if estimate is None:
        return None

    def row(r: ResidualRow, label: str) -> dict[str, Any]:
        return {
            "entity_type": r.entity_type,
            "label": label,
            "records": r.hits,
            "rate": _percent(r.rate),
            "interval": f"{_percent(r.low)} – {_percent(r.high)}",
        }

    return {
        "sampled": estimate.sampled,
        "any": row(estimate.any, "Any entity type"),
        "rows": [row(r, r.entity_type) for r in estimate.rows],
        "threshold": _percent(estimate.threshold),
        "needs_confirmation": estimate.needs_confirmation,
    }


def _report_or_redirect(request: HttpRequest, access: VersionAccess) -> Report | HttpResponse:
    report: Report | None = getattr(access.version, "report", None)
    if report is None or access.version.state not in (VersionState.REVIEW, VersionState.SEALED):
        messages.info(request, "The report is ready once processing finishes.")
        return redirect("custody:version", version_id=access.version.public_id)
    return report


def _charts(report: Report) -> list[BarChart]:
    counts: dict[str, Any] = report.counts or {}
    return [
        bar_chart(slug="by-type", title="Entities found, by type", counts=counts.get("entities", {})),
        bar_chart(
            slug="by-field",
            title="Entities found, by field",
            counts=totals_by_key(counts.get("by_field", {})),
        ),
        bar_chart(
            slug="by-language",
            title="Entities found, by language",
            counts=totals_by_key(counts.get("by_language", {})),
            labels=LANGUAGE_LABELS,
        ),
    ]


def _summary_rows(report: Report, version: DatasetVersion) -> list[dict[str, Any]]:
    summary: dict[str, int] = report.findings_summary or {}
    marked = dict(
        Finding.objects.filter(version=version, drop=True)
        .values("kind")
        .annotate(n=Count("pk"))
        .values_list("kind", "n")
    )
    return [
        {
            "kind": kind,
            "label": FINDING_LABELS.get(kind, kind),
            "help": FINDING_HELP.get(kind, ""),
            "count": count,
            "marked": marked.get(kind, 0),
        }
        for kind, count in sorted(summary.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


@otp.signed_in
@require_GET
def report_page(request: HttpRequest, version_id: int) -> HttpResponse:
    """Counts as charts, screening findings (members choose drops), samples on request."""
    access = owner_version_for(request, version_id)
    found = _report_or_redirect(request, access)
    if isinstance(found, HttpResponse):
        return found
    report, version = found, access.version
    kind = request.GET.get("kind") or None
    findings = selectors.finding_list(version=version, kind=kind)
    page = page_of(request, findings, FINDINGS_PER_PAGE)
    counts: dict[str, Any] = report.counts or {}
    context = {
        "version": version,
        "dataset": version.dataset,
        "access": access,
        "report": report,
        "charts": _charts(report),
        "records_by_language": sorted(
            ((LANGUAGE_LABELS.get(k, k), v) for k, v in counts.get("languages", {}).items()),
            key=lambda kv: -kv[1],
        ),
        "summary": _summary_rows(report, version),
        "dropping": Finding.objects.filter(version=version, drop=True).values("record_id").distinct().count(),
        "kind": kind,
        "kind_label": FINDING_LABELS.get(kind or "", kind),
        "finding_labels": FINDING_LABELS,
        "page": page,
        "in_review": version.state == VersionState.REVIEW,
        "reject_form": RejectForm(),
        "residual": residual_context(services.version_residual_estimate(version=version)),
    }
    return render(request, "custody/report.html", context)


def highlighted(text: str, spans: list[list[Any]]) -> list[tuple[str, str]]:
    """Split ``text`` into ``(piece, entity_type)`` pairs, ``""`` for the text between spans."""
    pieces: list[tuple[str, str]] = []
    cursor = 0
    for start, end, entity_type in sorted(spans, key=lambda s: (s[0], s[1])):
        if start < cursor or end > len(text):
            continue  # overlapping or out of range: never show a wrong highlight
        if start > cursor:
            pieces.append((text[cursor:start], ""))
        pieces.append((text[start:end], str(entity_type)))
        cursor = end
    if cursor < len(text):
        pieces.append((text[cursor:], ""))
    return pieces


def _page_number(request: HttpRequest) -> int:
    # parse_id, not str.isdigit: "²" passes isdigit and int() raises on it.
    number = parse_id(request.GET.get("page", ""))
    return number if number is not None and number < 10**8 else 1


def _page_links(request: HttpRequest, number: int, total: int, per_page: int) -> dict[str, Any]:
    """What ``includes/pagination.html`` reads, for a page the service cut."""
    pages = max(1, -(-total // per_page))

    def url(n: int) -> str:
        query = request.GET.copy()
        query["page"] = str(n)
        return "?" + query.urlencode()

    return {
        "number": number,
        "has_other_pages": pages > 1,
        "paginator": {"num_pages": pages},
        "previous_url": url(number - 1) if number > 1 else "",
        "next_url": url(number + 1) if number < pages else "",
    }


def _never_cached(response: HttpResponse) -> HttpResponse:
    # Raw records of the provider's own: never kept in a cache.
    add_never_cache_headers(response)
    return response


@otp.signed_in
@require_GET
def samples_page(request: HttpRequest, version_id: int) -> HttpResponse:
    """Before/after samples of the owner's own records, by language and entity type: decrypted and audited."""
    access = owner_version_for(request, version_id)
    require_role(access.membership, Role.MEMBER, "see the before/after samples")
    language = request.GET.get("language", "")[:8]
    entity_type = request.GET.get("entity_type", "")[:40]
    number = _page_number(request)
    actor, version = page_user(request), access.version

    def page(n: int) -> Any:
        return services.report_samples_page(
            actor=actor,
            version=version,
            language=language or None,
            entity_type=entity_type or None,
            offset=(n - 1) * SAMPLES_PER_PAGE,
            limit=SAMPLES_PER_PAGE,
        )

    try:
        found = page(number)
        last = max(1, -(-found.total // SAMPLES_PER_PAGE))
        if number > last:
            number = last
            found = page(number)
    except (NotFound, NotPermitted) as exc:
        raise_http(exc)
    samples = [
        {
            **s,
            "before_pieces": highlighted(s["before"], s["before_spans"]),
            "after_pieces": highlighted(s["after"], s["after_spans"]),
        }
        for s in found.samples
    ]
    template = "custody/_samples.html" if request.headers.get("HX-Request") else "custody/samples.html"
    context = {
        "version": version,
        "dataset": version.dataset,
        "samples": samples,
        "total": found.total,
        "languages": [(code, LANGUAGE_LABELS.get(code, code)) for code in found.languages],
        "entity_types": found.entity_types,
        "language": language,
        "entity_type": entity_type,
        "page": _page_links(request, number, found.total, SAMPLES_PER_PAGE),
    }
    return _never_cached(render(request, template, context))


@otp.signed_in
@require_GET
def residual_page(request: HttpRequest, version_id: int) -> HttpResponse:
    """Records where the strict detector still found something: decrypted for the owner, audited."""
    access = owner_version_for(request, version_id)
    require_role(access.membership, Role.MEMBER, "see what may be left in the records")
    entity_type = request.GET.get("entity_type", "")[:40]
    try:
        examples = services.residual_examples(
            actor=page_user(request), version=access.version, entity_type=entity_type or None
        )
    except (NotFound, NotPermitted) as exc:
        raise_http(exc)
    shown = [{**e, "pieces": highlighted(e["text"], e["hits"])} for e in examples]
    template = "custody/_residual.html" if request.headers.get("HX-Request") else "custody/residual.html"
    context = {
        "version": access.version,
        "dataset": access.version.dataset,
        "examples": shown,
        "entity_type": entity_type,
    }
    return _never_cached(render(request, template, context))


def _finding_pks(version: DatasetVersion, values: list[str]) -> list[int]:
    """The keys of the findings the form names by public id (malformed ones ignored, unknown ones 0)."""
    named = sorted({value for value in values if is_public_id(value, "fnd")})
    return pks_for("fnd", named, within=Finding.objects.filter(version=version))


def _back_to_findings(version_id: str, kind: str, page: str) -> str:
    """The findings table as it was: same kind filter and page."""
    query = {"kind": kind if kind in FINDING_LABELS else "", "page": page if page.isdigit() else ""}
    encoded = urlencode({k: v for k, v in query.items() if v})
    url = reverse("custody:report", kwargs={"version_id": version_id})
    return f"{url}?{encoded}#findings" if encoded else f"{url}#findings"


@otp.signed_in
@require_POST
def findings_mark(request: HttpRequest, version_id: int) -> HttpResponse:
    """Save which of the shown findings' records to drop at sealing (or all findings of a kind)."""
    access = owner_version_for(request, version_id)
    require_role(access.membership, Role.MEMBER, "choose records to drop")
    actor, version = page_user(request), access.version
    all_of_kind = request.POST.get("drop_all_of_kind", "")
    if all_of_kind:
        chosen = list(selectors.finding_list(version=version, kind=all_of_kind).values_list("pk", flat=True))
        keep: list[int] = []
    else:
        dropped = set(request.POST.getlist("drop"))
        chosen = _finding_pks(version, list(dropped))
        keep = _finding_pks(version, [f for f in request.POST.getlist("shown") if f not in dropped])
    try:
        if chosen:
            services.findings_mark(actor=actor, version=version, finding_ids=chosen, drop=True)
        if keep:
            services.findings_mark(actor=actor, version=version, finding_ids=keep, drop=False)
    except (Conflict, Invalid) as exc:
        messages.error(request, exc.detail)
    except (NotFound, NotPermitted) as exc:
        raise_http(exc)
    else:
        if chosen or keep:
            dropping = (
                Finding.objects.filter(version=version, drop=True).values("record_id").distinct().count()
            )
            messages.success(request, f"Saved. {dropping} flagged record(s) will be dropped when you seal.")
        else:
            messages.info(request, "Nothing to change.")
    return redirect(
        _back_to_findings(version.public_id, request.POST.get("kind", ""), request.POST.get("page", ""))
    )


@otp.signed_in
@require_http_methods(["GET", "POST"])
def seal_page(request: HttpRequest, version_id: int) -> HttpResponse:
    """Confirm, then seal: drops applied, Merkle root computed, version frozen.

    A high residual-risk estimate needs its own checkbox ticked.
    """
    access = owner_version_for(request, version_id)
    require_role(access.membership, Role.MEMBER, "seal versions")
    version = access.version
    if request.method == "POST":
        confirmed = request.POST.get("confirm_residual_risk") in ("on", "true", "1")
        try:
            sealed = services.version_seal(
                actor=page_user(request), version=version, confirm_residual_risk=confirmed
            )
        except ResidualRiskUnconfirmed as exc:
            return _seal_confirm(request, version, error=exc.detail, status=409)
        except (Conflict, Invalid) as exc:
            messages.error(request, exc.detail)
        except (NotFound, NotPermitted) as exc:
            raise_http(exc)
        else:
            messages.success(
                request, f"Version {sealed.number} is sealed. Its Merkle root is recorded in the audit log."
            )
        return redirect("custody:version", version_id=version.public_id)
    if version.state != VersionState.REVIEW:
        messages.info(request, "Only a version in review can be sealed.")
        return redirect("custody:version", version_id=version.public_id)
    return _seal_confirm(request, version)


def _seal_confirm(
    request: HttpRequest, version: DatasetVersion, *, error: str = "", status: int = 200
) -> HttpResponse:
    dropping = Finding.objects.filter(version=version, drop=True).values("record_id").distinct().count()
    context = {
        "version": version,
        "dataset": version.dataset,
        "dropping": dropping,
        "keeping": max(version.records - dropping, 0),
        "residual": residual_context(services.version_residual_estimate(version=version)),
        "residual_error": error,
    }
    return render(request, "custody/seal_confirm.html", context, status=status)
