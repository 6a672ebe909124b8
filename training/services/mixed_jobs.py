"""Submitting a mixed-dataset job: several licenses, mixing weights (issue 17 item 3).

The combined terms come from ``training/services/mixing.py`` (the rule, tested as a
property); here they are applied to the locked grants: every license must be the
organisation's, usable, and agree with the request; each license's own limits (jobs,
tokens read from its version, epsilon, delta) are checked and reserved for it, in one
transaction under row locks, as a single-license job's are (``jobs.job_submit``).

The job reads ``share_i`` of its platform tokens from version ``i``: the launcher takes
as many tokens from each version as keep the proportions without repeating a record,
``M = min_i(tokens_i / share_i)``, ``planned_i = floor(share_i x M) x epochs``, which is
also what each license is checked (and, at the most, billed) for.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

from django.conf import settings
from django.db import transaction

from common.audit import audit_record
from common.exceptions import FieldError
from common.models import Organisation, User
from common.work import work_enqueue
from custody import services as custody
from custody.exceptions import Conflict as CustodyConflict
from custody.models import Grant
from training.exceptions import Conflict, Invalid, NotPermitted
from training.models import BaseKind, BudgetHold, JobGrant, TrainingJob
from training.services import jobs
from training.services.mixing import Combined, Component, MixRequest, combine

MAX_COMPONENTS = 8
BPS = 10_000


@dataclass(frozen=True)
class MixPart:
    """One license of a mixed submit: the grant and its (positive) mixing weight."""

    grant: Grant
    weight: Decimal


def weights_bps(weights: list[Decimal]) -> list[int]:
    """Weights as basis points adding up to 10,000 (largest remainder).

    :raises ValueError: a share rounds to 0.
    """
    total = sum(weights)
    exact = [w * BPS / total for w in weights]
    parts = [int(e) for e in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - parts[i]), i))
    for index in order[: BPS - sum(parts)]:
        parts[index] += 1
    if any(p <= 0 for p in parts):
        raise ValueError("a weight is too small (under 1 basis point of the mix)")
    return parts


def planned_tokens(version_tokens: list[int], bps: list[int]) -> list[int]:
    """Tokens read from each version per epoch: the most that keeps the proportions, no record twice."""
    if any(t <= 0 for t in version_tokens):
        return [0] * len(bps)
    # M = min_i(T_i / s_i) with s_i = bps_i / 10,000; planned_i = floor(s_i x M), in integers.
    num, den = min(
        ((t * BPS, b) for t, b in zip(version_tokens, bps, strict=True)), key=lambda f: f[0] / f[1]
    )
    return [min(b * num // (den * BPS), t) for t, b in zip(version_tokens, bps, strict=True)]


def _refuse(detail: str, code: str, errors: list[dict[str, Any]]) -> Invalid:
    """A 422 whose errors carry, besides pointer, code and detail, the ``license`` and ``term``."""
    return Invalid(detail, code=code, errors=cast(list[FieldError], errors))


def _combined(
    parts: list[MixPart], request: jobs.JobRequest, spec: dict[str, Any], weights_leave: bool
) -> Combined:
    components = [
        Component(
            license=jobs._license_name(part.grant),
            terms=part.grant.terms,
            version=part.grant.version.public_id,
            epsilon_cap=part.grant.version.epsilon_cap is not None,
        )
        for part in parts
    ]
    return combine(
        components,
        MixRequest(
            template=request.template,
            purpose=request.purpose,
            epochs=int(spec["hyperparameters"]["epochs"]),
            dp="dp" in spec,
            weights_leave=weights_leave,
        ),
    )


@transaction.atomic
def job_submit_mixed(
    *,
    actor: User,
    organisation: Organisation,
    parts: list[MixPart],
    request: jobs.JobRequest,
    weights_leave: bool = False,
) -> TrainingJob:
    """Check a mixed job against every license and the combined terms, reserve, and queue it.

    :raises Invalid: the licenses conflict (``training.licenses_incompatible``, one error per
        conflicting term of each license), a license's tokens or the spec refuse it.
    :raises Conflict: a license is revoked, expired, exhausted, or out of privacy budget.
    :raises NotPermitted: not a trainer, or a license of another organisation.
    """
    if not organisation.is_trainer:
        raise NotPermitted(f"{organisation.name} is not a trainer organisation.", code="training.not_trainer")
    if not 2 <= len(parts) <= MAX_COMPONENTS:
        raise jobs._invalid(
            "/licenses",
            "length",
            f"A mixed job names 2 to {MAX_COMPONENTS} licenses; {len(parts)} given.",
            problem="training.licenses_invalid",
        )
    if request.template == "valuation":
        raise jobs._invalid(
            "/template", "not_permitted", "A valuation reads one version; it cannot mix licenses."
        )
    spec = jobs.spec_check(request, gate_max_exposure=settings.TRAINING_GATE_MAX_EXPOSURE)
    pks = sorted({part.grant.pk for part in parts})
    locked_by_pk = {
        g.pk: g
        for g in Grant.objects.select_for_update(of=("self",))
        .select_related("version")
        .filter(pk__in=pks)
        .order_by("pk")
    }
    parts = [dataclasses.replace(part, grant=locked_by_pk[part.grant.pk]) for part in parts]
    for part in parts:
        if part.grant.licensee_id != organisation.pk:
            raise NotPermitted(
                "This license belongs to another organisation.", code="training.license_other_org"
            )
        jobs._license_check_state(part.grant)
    combined = _combined(parts, request, spec, weights_leave)
    if not combined.admitted:
        conflicting = sorted({e["license"] for e in combined.errors})
        raise _refuse(
            f"The licenses do not allow this job together: {len(combined.errors)} conflicting term(s) "
            f"in {', '.join(conflicting)}.",
            "training.licenses_incompatible",
            combined.errors,
        )
    gate_threshold = (
        combined.gate_max_exposure
        if combined.gate_max_exposure is not None
        else settings.TRAINING_GATE_MAX_EXPOSURE
    )
    spec["gate"]["max_exposure"] = gate_threshold
    if (
        request.base.kind == BaseKind.UPLOADED
        and combined.weights_may_leave
        and "dp" not in spec
        and settings.TRAINING_UPLOADED_BASE_DP_TO_RELEASE
    ):
        raise jobs._invalid(
            "/dp/enabled",
            "required",
            "Weights trained from an uploaded base leave custody only when trained with DP.",
            problem="training.dp_required_uploaded_base",
        )
    # Delta below 1/n of the smallest version; each license's own sum checked.
    if "dp" in spec and "delta" not in (request.dp or {}):
        smallest = max(min(int(part.grant.version.records) for part in parts), 1)
        spec["dp"]["delta"] = min(1e-5, 0.1 / smallest)
        request = dataclasses.replace(request, dp={**(request.dp or {}), "delta": spec["dp"]["delta"]})
    for part in parts:
        jobs._license_check_delta(part.grant, request, spec)
        jobs._license_check_withheld(part.grant, request, spec)
    epochs = int(spec["hyperparameters"]["epochs"])
    try:
        bps = weights_bps([part.weight for part in parts])
    except ValueError as exc:
        raise jobs._invalid(
            "/licenses", "invalid", f"Mixing weights: {exc}.", problem="training.licenses_invalid"
        ) from exc
    per_epoch = planned_tokens([int(part.grant.version.tokens) for part in parts], bps)
    planned = [tokens * epochs for tokens in per_epoch]
    _tokens_check(parts, planned)
    epsilon = None
    for part in parts:
        epsilon = jobs._license_check_epsilon(part.grant, spec)
    mix = {
        "licenses": [
            {
                "license": part.grant.external_ref,
                "grant": part.grant.public_id,
                "dataset_version": part.grant.version.public_id,
                "weight_bps": share,
            }
            for part, share in zip(parts, bps, strict=True)
        ],
        "weights_may_leave": combined.weights_may_leave,
        "attribution": combined.attribution,
        "gate_unrun_withholds": combined.gate_unrun_withholds,
    }
    job = TrainingJob.objects.create(
        organisation=organisation,
        submitted_by=actor,
        grant=parts[0].grant,
        template=request.template,
        base=request.base,
        purpose=combined.purpose,
        request={**request.as_dict(), "mix": mix},
        spec=spec,
        dp_enabled=epsilon is not None,
        epsilon_reserved=epsilon,
        budget=BudgetHold.RESERVED if epsilon is not None else BudgetHold.NONE,
        epochs=epochs,
        tokens_planned=sum(planned),
        gate_threshold=gate_threshold,
    )
    JobGrant.objects.bulk_create(
        JobGrant(job=job, grant=part.grant, position=i, weight_bps=share, tokens_planned=tokens)
        for i, (part, share, tokens) in enumerate(zip(parts, bps, planned, strict=True))
    )
    for part in parts:
        if epsilon is not None:
            try:
                # Each version's epsilon is charged to its own budget (docs/training.md).
                custody.privacy_budget_reserve(
                    version=part.grant.version, consumer_ref=job.consumer_ref, epsilon=epsilon
                )
            except CustodyConflict as exc:
                raise Conflict(exc.detail, code="training.privacy_budget_exceeded") from exc
        try:
            custody.grant_job_reserve(grant=part.grant, consumer_ref=job.consumer_ref)
        except CustodyConflict as exc:
            raise Conflict(exc.detail, code="training.license_exhausted") from exc
    work_enqueue(
        kind=jobs.WORK_KIND,
        ref=str(job.pk),
        queue=jobs.WORK_QUEUE,
        max_attempts=settings.TRAINING_MAX_ATTEMPTS,
    )
    audit_record(
        action="training.job_submit",
        actor=actor,
        organisation=organisation,
        object_type="training_job",
        object_id=job.pk,
        details={
            "grants": [part.grant.pk for part in parts],
            "versions": [part.grant.version_id for part in parts],
            "weights_bps": bps,
            "template": job.template,
            "base": job.base.name,
            "epochs": epochs,
            "tokens_planned": planned,
            "epsilon": str(epsilon) if epsilon is not None else None,
        },
    )
    jobs.job_event(
        job,
        "queued",
        f"{job.template} on {job.base.name}, {epochs} epoch(s), mixing {len(parts)} licenses",
        notify=True,
    )
    return job


def _tokens_check(parts: list[MixPart], planned: list[int]) -> None:
    """Each license's ``max_tokens`` bounds the tokens read from its version; the platform bounds the job."""
    errors = []
    for index, (part, tokens) in enumerate(zip(parts, planned, strict=True)):
        max_tokens = part.grant.terms.get("max_tokens")
        if max_tokens is None:
            continue
        used = jobs.tokens_used(part.grant)
        if used + tokens > int(max_tokens):
            name = jobs._license_name(part.grant)
            errors.append(
                {
                    "pointer": f"/licenses/{index}/terms/max_tokens",
                    "code": "exceeds_license",
                    "license": name,
                    "term": "max_tokens",
                    "detail": f"License {name}: this job reads {tokens:,} platform tokens from its version; "
                    f"{max(int(max_tokens) - used, 0):,} of {int(max_tokens):,} are left.",
                }
            )
    if errors:
        raise _refuse(errors[0]["detail"], "training.tokens_exceeded", errors)
    records = sum(int(part.grant.version.records) for part in parts)
    size = sum(jobs._version_bytes(part.grant.version) for part in parts)
    if size > settings.TRAINING_MAX_RECORDS_BYTES or records > settings.TRAINING_MAX_RECORDS:
        raise jobs._invalid(
            "/licenses",
            "too_large",
            f"The licensed versions ({records:,} records, {size:,} bytes encrypted) are over this "
            f"platform's per-job limit ({settings.TRAINING_MAX_RECORDS:,} records, "
            f"{settings.TRAINING_MAX_RECORDS_BYTES:,} bytes).",
            problem="training.job_too_large",
        )
