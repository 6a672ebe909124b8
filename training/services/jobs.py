"""Submitting, cancelling and moving training jobs between states.

Everything a job needs is checked here, before it is queued: the spec (by the
runner's own validation), the base model, and the license terms read from the
custody grant (DESIGN.md "Licenses are enforced, not trusted"). A job that
would fail for a reason known at submit is refused with a stable code instead.
Epsilon is reserved and the grant's job counted in the submitting transaction,
under row locks, so concurrent submits cannot overshoot a budget or a limit.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, Q, Sum, When
from django.utils import timezone

from common.audit import audit_record
from common.models import Organisation, User
from common.notifications import notify_event
from common.work import work_enqueue
from custody import services as custody
from custody.exceptions import Conflict as CustodyConflict
from custody.models import DatasetVersion, Grant, GrantState, Shard, VersionState
from training.exceptions import Conflict, Invalid, NotPermitted
from training.job_templates import TEMPLATES
from training.models import (
    TEMPLATE_TASK,
    BaseKind,
    BaseModel,
    BaseState,
    BudgetHold,
    JobEvent,
    JobGrant,
    JobState,
    TrainingJob,
)
from training.runner.spec import SpecError, parse_spec
from training.services.bases import base_spec_check
from training.services.distillation import distill_license_check, distill_prepare, distill_runner_blocks

logger = logging.getLogger(__name__)

WORK_KIND = "training.job"
WORK_QUEUE = "training"
# A classification spec is validated before the labels are known (they come
# from the records, which are read only inside the launcher): two stand-ins.
_PLACEHOLDER_LABELS = ["label-a", "label-b"]


@dataclass(frozen=True)
class JobRequest:
    """What a trainer submits (API body or portal form)."""

    template: str
    base: BaseModel
    hyperparameters: dict[str, Any]
    dp: dict[str, Any] | None = None
    label_field: str = ""
    purpose: str = ""
    # Training processes (DDP ranks), at most TRAINING_MAX_DEVICES.
    devices: int = 1
    # A model held in custody to start from instead of ``base`` (``base`` is then its root base):
    # training/services/custody_models.py.
    custody_model: TrainingJob | None = None
    # Distillation templates: the teacher and the loss settings (training/services/distillation.py).
    distill: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "template": self.template,
            "base": self.base.pk,
            "hyperparameters": self.hyperparameters,
            "dp": self.dp,
            "label_field": self.label_field,
            "purpose": self.purpose,
            **({"devices": self.devices} if self.devices != 1 else {}),
            **({"custody_model": self.custody_model.public_id} if self.custody_model is not None else {}),
            **({"distill": self.distill} if self.distill is not None else {}),
        }


def _invalid(pointer: str, code: str, detail: str, *, problem: str = "training.spec_invalid") -> Invalid:
    return Invalid(detail, code=problem, errors=[{"pointer": pointer, "code": code, "detail": detail}])


# --- the spec -------------------------------------------------------------------------------


# Registry names of built-in bases the runner knows by another name.
RUNNER_BUILTIN_NAMES = {"minilm-l6": "all-minilm-l6-v2"}


def _dp_block(dp: dict[str, Any] | None) -> dict[str, Any] | None:
    """The DP block with its defaults, or None when DP is off (the runner validates the values)."""
    if not dp or dp.get("enabled") is False:
        return None
    return {"enabled": True, "delta": 1e-5, "max_grad_norm": 1.0, **dp}


def telemetry_block() -> dict[str, Any]:
    """The runner's telemetry settings (docs/threat-model.md): protected unless an operator turned
    TRAINING_TELEMETRY_PROTECTED off (the decoder test's positive control does)."""
    if not settings.TRAINING_TELEMETRY_PROTECTED:
        return {"protected": False, "window_records": 1, "window_tokens": 0, "max_points": 10_000_000}
    return {
        "protected": True,
        "window_records": settings.TRAINING_METRICS_WINDOW_RECORDS,
        "window_tokens": settings.TRAINING_METRICS_WINDOW_TOKENS,
        "max_points": settings.TRAINING_LOSS_CURVE_POINTS,
        "dp_metrics_share": settings.TRAINING_DP_METRICS_SHARE,
    }


def runner_spec(
    request: JobRequest,
    *,
    gate_max_exposure: float,
    labels: list[str] | None = None,
    base_path: str = "base",
) -> dict[str, Any]:
    """The runner's spec document for a request (``labels`` filled in by the launcher)."""
    base = request.base
    spec: dict[str, Any] = {
        "template": request.template,
        "base": (
            {"kind": "builtin", "name": RUNNER_BUILTIN_NAMES.get(base.name, base.name)}
            if base.kind == BaseKind.BUILTIN and request.custody_model is None
            else {"kind": "uploaded", "path": base_path}
        ),
        "hyperparameters": {**TEMPLATES[request.template].defaults(), **request.hyperparameters},
        "gate": {"max_exposure": gate_max_exposure},
        "telemetry": telemetry_block(),
    }
    dp = _dp_block(request.dp)
    if dp is not None:
        spec["dp"] = dp
    if request.devices != 1:
        spec["devices"] = request.devices
    if TEMPLATES[request.template].needs_label_field:
        spec["labels"] = labels or _PLACEHOLDER_LABELS
    if request.distill is not None:  # the teacher and the loss (training/services/distillation.py)
        spec.update(distill_runner_blocks(request.distill))
    return spec


def _pointer(field: str) -> str:
    """The runner's dotted field as a JSON pointer into the request body."""
    parts = field.split(".")
    if parts[0] == "base":
        return "/base"
    if parts[0] == "labels":
        return "/label_field"
    if parts[0] == "teacher":
        return "/distill/teacher"
    if parts[0] == "spec":
        return ""
    return "/" + "/".join(parts)


def spec_check(request: JobRequest, *, gate_max_exposure: float) -> dict[str, Any]:
    """Build and validate the runner spec. :raises Invalid: with a pointer at the bad field."""
    info = TEMPLATES.get(request.template)
    if info is None:
        raise _invalid("/template", "invalid_choice", f"Unknown template {request.template!r}.")
    base = request.base
    if base.state != BaseState.VALIDATED:
        raise _invalid("/base", "not_validated", f"Base model {base.name} is {base.get_state_display()}.")
    if base.task != TEMPLATE_TASK[request.template]:  # type: ignore[index]
        raise _invalid(
            "/base",
            "wrong_task",
            f"Base model {base.name} is a {base.get_task_display()}; "
            f"template {request.template} needs a {TEMPLATE_TASK[request.template].label}.",  # type: ignore[index]
        )
    if info.needs_label_field and not request.label_field:
        raise _invalid("/label_field", "required", "Name the metadata field that holds each record's label.")
    if not 1 <= request.devices <= settings.TRAINING_MAX_DEVICES:
        raise _invalid(
            "/devices",
            "out_of_range",
            f"devices must be between 1 and {settings.TRAINING_MAX_DEVICES} on this platform.",
            problem="training.devices_invalid",
        )
    spec = runner_spec(request, gate_max_exposure=gate_max_exposure)
    try:
        parse_spec(spec)
    except SpecError as error:
        raise _invalid(_pointer(error.field), "invalid", f"{error.field}: {error.detail}") from None
    base_spec_check(base=base, spec=spec)  # e.g. max_seq_len over the base's positions
    return spec


# --- the license ----------------------------------------------------------------------------


def _version_bytes(version: DatasetVersion) -> int:
    return int(Shard.objects.filter(version=version).aggregate(total=Sum("size"))["total"] or 0)


def _on_grant(grant: Grant) -> Q:
    """Jobs that read the grant's version: under it alone, or as a component of a mixed job."""
    return Q(grant=grant) | Q(pk__in=JobGrant.objects.filter(grant=grant).values("job_id"))


def _counted_jobs(grant: Grant) -> Q:
    """Jobs on the grant that count against its token and epsilon limits (not ended before training)."""
    ended_untrained = Q(state__in=[JobState.FAILED, JobState.CANCELLED], training_started_at__isnull=True)
    return _on_grant(grant) & ~ended_untrained


def tokens_used(grant: Grant) -> int:
    """Platform tokens counted against the grant: single-license jobs' whole count, mixed jobs' count
    of this grant's version only. A finished job counts what it trained (max_steps can stop it
    early); others what they plan."""
    ended_untrained = Q(state__in=[JobState.FAILED, JobState.CANCELLED], training_started_at__isnull=True)
    counted = Case(When(state=JobState.SUCCEEDED, then=F("tokens_trained")), default=F("tokens_planned"))
    single = (
        TrainingJob.objects.filter(grant=grant, components__isnull=True)
        .exclude(ended_untrained)
        .aggregate(total=Sum(counted))["total"]
    )
    part = Case(When(job__state=JobState.SUCCEEDED, then=F("tokens_trained")), default=F("tokens_planned"))
    mixed = (
        JobGrant.objects.filter(grant=grant)
        .exclude(job__state__in=[JobState.FAILED, JobState.CANCELLED], job__training_started_at__isnull=True)
        .aggregate(total=Sum(part))["total"]
    )
    return int(single or 0) + int(mixed or 0)


def _decimal(value: Any) -> Decimal | None:
    if value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _license_name(grant: Grant) -> str:
    """How messages name a license: its reference (``lic_...``), else the grant's public id."""
    return grant.external_ref or grant.public_id


def _license_check_state(grant: Grant) -> None:
    if grant.state == GrantState.REVOKED:
        raise Conflict(f"License {_license_name(grant)} was revoked.", code="training.license_revoked")
    if grant.expires_at is not None and grant.expires_at <= timezone.now():
        raise Conflict(
            f"License {_license_name(grant)} expired at {grant.expires_at:%Y-%m-%d %H:%M} UTC.",
            code="training.license_expired",
        )
    if grant.version.state != VersionState.SEALED:
        raise Conflict(
            f"The licensed dataset version is {grant.version.state}.", code="training.license_unavailable"
        )
    max_jobs = grant.terms.get("max_jobs")
    if max_jobs is not None and grant.jobs_reserved >= int(max_jobs):
        raise Conflict(
            f"License {_license_name(grant)} allows {max_jobs} jobs and all are used.",
            code="training.license_exhausted",
        )


def _license_check_terms(grant: Grant, request: JobRequest, spec: dict[str, Any]) -> str:
    """Check the request against the grant's terms; returns the job's purpose. :raises Invalid."""
    terms = grant.terms
    purposes = [str(p) for p in terms.get("purposes") or []]
    purpose = request.purpose or (purposes[0] if purposes else "")
    if purposes and purpose not in purposes:
        raise _invalid(
            "/purpose",
            "not_permitted",
            f"License {_license_name(grant)} permits the purposes {', '.join(purposes)}, not {purpose!r}.",
            problem="training.purpose_not_permitted",
        )
    templates = [str(t) for t in terms.get("job_templates") or []]
    if templates and request.template not in templates:
        raise _invalid(
            "/template",
            "not_permitted",
            f"License {_license_name(grant)} permits the templates {', '.join(templates)}, "
            f"not {request.template}.",
            problem="training.template_not_permitted",
        )
    epochs = int(spec["hyperparameters"]["epochs"])
    max_epochs = terms.get("max_epochs")
    if max_epochs is not None and epochs > int(max_epochs):
        raise _invalid(
            "/hyperparameters/epochs",
            "exceeds_license",
            f"License {_license_name(grant)} allows at most {max_epochs} epochs; {epochs} asked.",
            problem="training.epochs_exceeded",
        )
    dp_required = bool(terms.get("dp_required")) or grant.version.epsilon_cap is not None
    if dp_required and "dp" not in spec:
        raise _invalid(
            "/dp/enabled",
            "required",
            "This license (or the dataset version) accepts only differentially private jobs: enable DP "
            "and choose a target epsilon.",
            problem="training.dp_required",
        )
    if (
        request.base.kind == BaseKind.UPLOADED
        and terms.get("weights_may_leave")
        and "dp" not in spec
        and settings.TRAINING_UPLOADED_BASE_DP_TO_RELEASE
    ):
        raise _invalid(
            "/dp/enabled",
            "required",
            "Weights trained from an uploaded base leave custody only when trained with DP (a crafted "
            "base can write records into its own weights; DP bounds what any update carries). Enable "
            "DP with causal_lm_lora or seq_classification, or use a license that keeps the weights in "
            "custody.",
            problem="training.dp_required_uploaded_base",
        )
    return purpose


def _license_check_delta(grant: Grant, request: JobRequest, spec: dict[str, Any]) -> None:
    """Bound DP's delta by the records: delta < 1/n, summed over the license's DP jobs.

    A delta the trainer left out defaults to min(1e-5, 0.1/n). :raises Invalid: over the bound.
    """
    if "dp" not in spec:
        return
    records = max(int(grant.version.records), 1)
    if "delta" not in (request.dp or {}):
        spec["dp"]["delta"] = min(1e-5, 0.1 / records)
    delta = float(spec["dp"]["delta"])
    used = sum(
        float((job.spec.get("dp") or {}).get("delta") or 0)
        for job in TrainingJob.objects.filter(_counted_jobs(grant), dp_enabled=True).exclude(
            budget=BudgetHold.RELEASED
        )
    )
    if used + delta >= 1 / records:
        raise _invalid(
            "/dp/delta",
            "out_of_range",
            f"delta must keep the license's total below 1/n = {1 / records:.3g} for this version's "
            f"{records:,} records ({used:.3g} is spent or reserved, {delta:.3g} asked).",
            problem="training.privacy_delta_exceeded",
        )


# Hyperparameters that do not make a spec materially different for the release gate.
_IMMATERIAL = {"seed", "log_every", "compile", "precision"}


def spec_fingerprint(spec: dict[str, Any], base: BaseModel) -> str:
    """What the gate's decision depends on: template, base, hyperparameters but the immaterial, DP."""
    hp = {k: v for k, v in (spec.get("hyperparameters") or {}).items() if k not in _IMMATERIAL}
    dp = {k: v for k, v in (spec.get("dp") or {}).items() if k != "delta"}
    body = {"template": spec.get("template"), "base": base.file_hash or base.pk, "hp": hp, "dp": dp}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def _license_check_withheld(grant: Grant, request: JobRequest, spec: dict[str, Any]) -> None:
    """A withheld model is not retried into passing: the same spec is refused, and the license
    allows TRAINING_GATE_MAX_WITHHELD withheld jobs in all. :raises Conflict."""
    withheld = list(
        TrainingJob.objects.filter(_on_grant(grant), failure_code="training.gate_failed").select_related(
            "base"
        )
    )
    if len(withheld) >= settings.TRAINING_GATE_MAX_WITHHELD:
        raise Conflict(
            f"The release gate withheld {len(withheld)} models trained under license {_license_name(grant)}, "
            "its limit: no further jobs run under it.",
            code="training.gate_withheld_limit",
        )
    fingerprint = spec_fingerprint(spec, request.base)
    if any(spec_fingerprint(job.spec, job.base) == fingerprint for job in withheld):
        raise Conflict(
            "The release gate withheld a model trained with these settings under this license; "
            "a new job needs materially different settings (fewer epochs, a lower learning rate, DP).",
            code="training.gate_withheld_spec",
        )


def _license_check_tokens(grant: Grant, epochs: int) -> int:
    """Planned platform tokens (version tokens x epochs), within the license's cap. :raises Invalid."""
    version = grant.version
    planned = int(version.tokens) * epochs
    max_tokens = grant.terms.get("max_tokens")
    if max_tokens is not None:
        used = tokens_used(grant)
        if used + planned > int(max_tokens):
            raise _invalid(
                "/hyperparameters/epochs",
                "exceeds_license",
                f"This job trains {planned:,} platform tokens ({version.tokens:,} x {epochs} epochs); "
                f"license {_license_name(grant)} has {max(int(max_tokens) - used, 0):,} "
                f"of {int(max_tokens):,} left.",
                problem="training.tokens_exceeded",
            )
    size = _version_bytes(version)
    if size > settings.TRAINING_MAX_RECORDS_BYTES or version.records > settings.TRAINING_MAX_RECORDS:
        raise _invalid(
            "/grant",
            "too_large",
            f"The licensed version ({version.records:,} records, {size:,} bytes encrypted) is over this "
            f"platform's per-job limit ({settings.TRAINING_MAX_RECORDS:,} records, "
            f"{settings.TRAINING_MAX_RECORDS_BYTES:,} bytes).",
            problem="training.job_too_large",
        )
    return planned


def _license_check_epsilon(grant: Grant, spec: dict[str, Any]) -> Decimal | None:
    """The epsilon to reserve, within the license's cap. :raises Conflict: the cap would be exceeded."""
    if "dp" not in spec:
        return None
    epsilon = Decimal(str(spec["dp"]["target_epsilon"])).quantize(Decimal("0.001"))
    if epsilon <= 0:
        raise _invalid("/dp/target_epsilon", "invalid", "target_epsilon must be at least 0.001.")
    cap = _decimal(grant.terms.get("epsilon_cap"))
    if cap is not None:
        used = Decimal(
            TrainingJob.objects.filter(_counted_jobs(grant))
            .exclude(budget=BudgetHold.RELEASED)
            .aggregate(total=Sum("epsilon_reserved"))["total"]
            or 0
        )
        if used + epsilon > cap:
            raise Conflict(
                f"License {_license_name(grant)} allows epsilon {cap} in all; {used} is spent or reserved, "
                f"{epsilon} asked.",
                code="training.privacy_budget_exceeded",
            )
    return epsilon


# --- submit -----------------------------------------------------------------------------------


def job_reserve_and_enqueue(job: TrainingJob, grants: list[Grant]) -> None:
    """Hold one job of each grant for ``job`` (inside the submitting transaction), then queue it
    for the launcher. :raises Conflict: a grant has no job left (``training.license_exhausted``)."""
    try:
        for grant in grants:
            custody.grant_job_reserve(grant=grant, consumer_ref=job.consumer_ref)
    except CustodyConflict as exc:
        raise Conflict(exc.detail, code="training.license_exhausted") from exc
    work_enqueue(
        kind=WORK_KIND, ref=str(job.pk), queue=WORK_QUEUE, max_attempts=settings.TRAINING_MAX_ATTEMPTS
    )


def job_event(job: TrainingJob, kind: str, detail: str = "", *, notify: bool = False) -> None:
    """Record a job event (and notify the organisation); ``detail`` must hold no record text."""
    JobEvent.objects.create(job=job, kind=kind, detail=detail[:500], attempt=job.attempts)
    if notify:
        notify_event(
            organisation=job.organisation,
            kind=f"job.{kind}",
            subject=f"Training job {job.public_id} {kind}",
            payload={
                "job": job.public_id,
                "state": job.state,
                "template": job.template,
                "base": job.base.name,
                "license": job.grant.external_ref,
                "grant": job.grant.public_id,
                "detail": detail[:500],
            },
            object_type="training_job",
            object_id=job.public_id,
        )


@transaction.atomic
def job_submit(*, actor: User, organisation: Organisation, grant: Grant, request: JobRequest) -> TrainingJob:
    """Check a job against its spec and license, reserve what it needs, and queue it.

    :raises NotPermitted: the organisation is not a trainer.
    :raises Invalid: the spec or a license term refuses it (field errors point at the body).
    :raises Conflict: the license is revoked, expired, exhausted, or out of privacy budget.
    """
    if not organisation.is_trainer:
        raise NotPermitted(f"{organisation.name} is not a trainer organisation.", code="training.not_trainer")
    if request.template == "valuation":
        return _valuation_submit(actor=actor, organisation=organisation, grant=grant, request=request)
    if request.template == "generate" and request.custody_model is None:
        raise _invalid(
            "/custody_model",
            "required",
            "A generate job names the model held in custody it uses (custody_model: job_...).",
            problem="training.custody_model_required",
        )
    if request.custody_model is not None:
        from training.services.custody_models import custody_model_check

        custody_model_check(organisation=organisation, model=request.custody_model, use="fine_tune")
    request = distill_prepare(organisation=organisation, request=request)
    threshold = grant.terms.get("gate_max_exposure")
    gate_threshold = float(threshold) if threshold is not None else settings.TRAINING_GATE_MAX_EXPOSURE
    spec = spec_check(request, gate_max_exposure=gate_threshold)
    locked = Grant.objects.select_for_update(of=("self",)).select_related("version").get(pk=grant.pk)
    if locked.licensee_id != organisation.pk:
        raise NotPermitted("This license belongs to another organisation.", code="training.license_other_org")
    _license_check_state(locked)
    purpose = _license_check_terms(locked, request, spec)
    distill_license_check(grant=locked, request=request, spec=spec)
    _license_check_delta(locked, request, spec)
    _license_check_withheld(locked, request, spec)
    epochs = int(spec["hyperparameters"]["epochs"])
    planned = _license_check_tokens(locked, epochs)
    epsilon = _license_check_epsilon(locked, spec)
    job = TrainingJob.objects.create(
        organisation=organisation,
        submitted_by=actor,
        grant=locked,
        template=request.template,
        base=request.base,
        purpose=purpose,
        request=request.as_dict(),
        spec=spec,
        dp_enabled=epsilon is not None,
        epsilon_reserved=epsilon,
        budget=BudgetHold.RESERVED if epsilon is not None else BudgetHold.NONE,
        epochs=epochs,
        tokens_planned=planned,
        gate_threshold=gate_threshold,
        custody_model=request.custody_model,
    )
    if epsilon is not None:
        try:
            custody.privacy_budget_reserve(
                version=locked.version, consumer_ref=job.consumer_ref, epsilon=epsilon
            )
        except CustodyConflict as exc:
            raise Conflict(exc.detail, code="training.privacy_budget_exceeded") from exc
    job_reserve_and_enqueue(job, [locked])
    audit_record(
        action="training.job_submit",
        actor=actor,
        organisation=organisation,
        object_type="training_job",
        object_id=job.pk,
        details={
            "grant": locked.pk,
            "version": locked.version_id,
            "template": job.template,
            "base": job.base.name,
            "epochs": epochs,
            "tokens_planned": planned,
            "epsilon": str(epsilon) if epsilon is not None else None,
        },
    )
    job_event(job, "queued", f"{job.template} on {job.base.name}, {epochs} epoch(s)", notify=True)
    return job


def _valuation_submit(
    *, actor: User, organisation: Organisation, grant: Grant, request: JobRequest
) -> TrainingJob:
    """A valuation through the jobs endpoint: the trainer's path with the defaults (its own block
    and validation set: POST /training/valuations, training/services/valuation.py)."""
    from training.services.valuation import ValuationRequest, valuation_submit_licensed

    if _dp_block(request.dp) is not None:
        raise _invalid("/dp/enabled", "not_permitted", "A valuation takes no DP: only aggregates leave.")
    return valuation_submit_licensed(
        actor=actor,
        organisation=organisation,
        grant=grant,
        request=ValuationRequest(
            label_field=request.label_field, hyperparameters=request.hyperparameters, purpose=request.purpose
        ),
    )


# --- state changes ----------------------------------------------------------------------------


def budget_settle(job: TrainingJob) -> None:
    """Commit the reserved epsilon if anything left the sandbox, else release it (idempotent)."""
    if job.budget != BudgetHold.RESERVED:
        return
    # A mixed job reserved its epsilon on each version it reads (issue 17 item 3): settle each.
    for version in DatasetVersion.objects.filter(pk__in=job_version_ids(job)).order_by("pk"):
        if job.training_started_at is not None:
            custody.privacy_budget_commit(version=version, consumer_ref=job.consumer_ref)
        else:
            custody.privacy_budget_release(version=version, consumer_ref=job.consumer_ref)
    job.budget = BudgetHold.COMMITTED if job.training_started_at is not None else BudgetHold.RELEASED
    job.save(update_fields=["budget"])


def job_grants(job: TrainingJob) -> list[Grant]:
    """The grants a job reads under: its components' for a mixed job, else its one grant."""
    components = list(JobGrant.objects.filter(job=job).select_related("grant__version").order_by("position"))
    return [c.grant for c in components] if components else [job.grant]


def job_version_ids(job: TrainingJob) -> list[int]:
    """The versions a job reads (one, or one per component of a mixed job)."""
    ids = list(
        JobGrant.objects.filter(job=job).order_by("position").values_list("grant__version_id", flat=True)
    )
    return ids or [job.grant.version_id]


@transaction.atomic
def job_finish(
    *, job_id: int, state: JobState, reason: str = "", code: str = "", detail: str = ""
) -> TrainingJob:
    """Move an active job to a final state, settle its budget, record and notify (idempotent)."""
    job = (
        TrainingJob.objects.select_for_update(of=("self",))
        .select_related("grant", "base", "organisation")
        .get(pk=job_id)
    )
    if job.is_final:
        return job
    job.state = state
    job.failure_reason = reason[:1000]
    job.failure_code = code[:64]
    job.finished_at = timezone.now()
    job.updated_at = job.finished_at
    job.eta_s = None
    job.save(update_fields=["state", "failure_reason", "failure_code", "finished_at", "updated_at", "eta_s"])
    budget_settle(job)
    if job.started_at is None:
        # No worker ever took it, so no record was streamed: the slot on the license goes back.
        # A job that opened the stream keeps its slot (and its row in the provider's access log).
        for grant in job_grants(job):
            with contextlib.suppress(CustodyConflict):
                custody.grant_job_release(grant=grant, consumer_ref=job.consumer_ref)
    audit_record(
        action=f"training.job_{state}",
        organisation=job.organisation,
        object_type="training_job",
        object_id=job.pk,
        details={"code": code, "attempts": job.attempts, "budget": job.budget},
    )
    job_event(job, str(state), detail or reason, notify=True)
    return job


@transaction.atomic
def job_cancel(*, actor: User, job: TrainingJob) -> TrainingJob:
    """Cancel a job: at once when queued; a running job stops at the launcher's next check.

    :raises Conflict: the job already finished.
    """
    locked = TrainingJob.objects.select_for_update().get(pk=job.pk)
    if locked.state == JobState.CANCELLED:
        return locked
    if locked.is_final:
        raise Conflict(f"Job {locked.public_id} already {locked.state}.", code="training.job_finished")
    audit_record(
        action="training.job_cancel",
        actor=actor,
        organisation=locked.organisation,
        object_type="training_job",
        object_id=locked.pk,
        details={"state": locked.state},
    )
    if locked.state == JobState.QUEUED:
        return job_finish(
            job_id=locked.pk, state=JobState.CANCELLED, reason=f"Cancelled by {actor.get_username()}."
        )
    if locked.cancel_requested_at is None:
        locked.cancel_requested_at = timezone.now()
        locked.save(update_fields=["cancel_requested_at"])
        job_event(locked, "cancel_requested", f"Cancel requested by {actor.get_username()}.")
    return locked


def job_reconcile_lost() -> list[int]:
    """Fail active jobs whose work item gave up (a worker died on every attempt); returns their ids."""
    from common.models import WorkItem, WorkState

    failed_refs = WorkItem.objects.filter(kind=WORK_KIND, state=WorkState.FAILED).values_list(
        "ref", flat=True
    )
    ids = [int(r) for r in failed_refs if r.isdigit()]
    lost = list(
        TrainingJob.objects.filter(
            pk__in=ids, state__in=[JobState.QUEUED, JobState.RUNNING, JobState.RELEASING]
        ).values_list("pk", flat=True)
    )
    for job_id in lost:
        job_finish(
            job_id=job_id,
            state=JobState.FAILED,
            code="training.worker_lost",
            reason=(
                f"The training worker stopped {settings.TRAINING_MAX_ATTEMPTS} times while running this job "
                "(it was restarted each time). Submit it again; if it keeps failing, lower batch_size or "
                "max_seq_len, which lowers its memory use."
            ),
        )
    return lost


# --- licenses revoked, versions taken down ------------------------------------------------------


def jobs_license_revoked(*, grant_id: int, reason: str) -> list[int]:
    """Cancel the queued jobs of a revoked license; running ones stop at the launcher's next check."""
    queued = list(
        TrainingJob.objects.filter(
            Q(grant_id=grant_id) | Q(pk__in=JobGrant.objects.filter(grant_id=grant_id).values("job_id")),
            state=JobState.QUEUED,
        ).values_list("pk", flat=True)
    )
    for job_id in queued:
        job_finish(
            job_id=job_id,
            state=JobState.CANCELLED,
            code="training.license_revoked",
            reason=f"The license was revoked: {reason}"[:1000],
        )
    return queued


@transaction.atomic
def artifacts_withheld_destroy(*, version_id: int, reason: str) -> list[int]:
    """Destroy the artifacts kept in custody for jobs on a version that was taken down.

    Downloaded artifacts cannot be recalled; their receipts name the version.
    """
    jobs = list(
        TrainingJob.objects.select_for_update(of=("self",))
        .filter(
            Q(grant__version_id=version_id)
            | Q(pk__in=JobGrant.objects.filter(grant__version_id=version_id).values("job_id")),
            artifact_encrypted=True,
        )
        .exclude(artifact_blob_key="")
        .select_related("grant__version", "organisation", "base")
    )
    for job in jobs:
        custody.artifact_destroy(version=job.grant.version, name=f"training-job-{job.pk}")
        job.artifact_blob_key = ""
        job.save(update_fields=["artifact_blob_key"])
        audit_record(
            action="training.artifact_destroy",
            organisation=job.organisation,
            object_type="training_job",
            object_id=job.pk,
            details={"version": version_id, "reason": reason[:300]},
        )
        job_event(job, "artifact_destroyed", f"The dataset version was taken down: {reason}", notify=True)
    return [job.pk for job in jobs]
