"""Submitting valuation jobs (issue 15): an owner values its own version, a trainer a licensed one.

A valuation job is a ``TrainingJob`` with the ``valuation`` template (KNN-Shapley on MiniLM
embeddings, ``training/runner/valuation.py``): it runs in the sandbox like any job, records
never leave, and only aggregates over at least ``min_group`` records come out (docs/training.md
"Data valuation"). Two paths, one job model:

- **Owner's path.** An admin of the organisation that owns a dataset values its own version (in
  review or sealed) against its own hold-out, without a license. The job runs under the version's
  *valuation grant*, a platform grant like review's (``GrantPurpose.VALUATION``, no licensee): a
  grant because every read of custody records goes through one (``grant_stream_open`` audits it
  with its purpose), not a license because nobody else's data is read and
  nothing is sold. It bills nothing (settlement reads license grants only).
- **Trainer's path.** A trainer values a licensed version under its license (the license's state,
  templates and purposes apply; the job counts against ``max_jobs``), optionally against a
  labelled set of its own: a version the trainer's organisation owns, read under that version's
  own valuation grant.

Neither spends privacy budget: what leaves is aggregates over ``min_group`` records or more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import transaction

from common.audit import audit_record
from common.models import Membership, Organisation, Role, User
from common.permissions import role_at_least
from custody import services as custody
from custody.models import DatasetVersion, Grant, GrantPurpose, VersionState
from training.exceptions import Conflict, Invalid, NotFound, NotPermitted
from training.job_templates import DEFAULT_BASE, TEMPLATES
from training.models import BaseModel, BudgetHold, JobTemplate, TrainingJob
from training.runner.spec import SpecError, parse_spec
from training.services.jobs import (
    RUNNER_BUILTIN_NAMES,
    _license_check_state,
    _version_bytes,
    job_event,
    job_reserve_and_enqueue,
    telemetry_block,
)

TEMPLATE = JobTemplate.VALUATION.value
# Version states a valuation may read: in review (so flags can be dropped before sealing) or sealed.
VALUABLE_STATES = (VersionState.REVIEW, VersionState.SEALED)


@dataclass(frozen=True)
class ValuationRequest:
    """What a valuation asks for (API body or portal form)."""

    label_field: str
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    valuation: dict[str, Any] = field(default_factory=dict)
    purpose: str = ""
    # A labelled set the submitting organisation owns (the trainer's path); else a hold-out.
    validation_version: DatasetVersion | None = None


def _invalid(pointer: str, code: str, detail: str, *, problem: str = "training.spec_invalid") -> Invalid:
    return Invalid(detail, code=problem, errors=[{"pointer": pointer, "code": code, "detail": detail}])


def valuation_grant(version: DatasetVersion) -> Grant:
    """The platform's grant through which a version's owner values it (one per version)."""
    return custody.system_grant(version, GrantPurpose.VALUATION)


def valuation_base() -> BaseModel:
    """The bundled MiniLM every valuation embeds with."""
    return BaseModel.objects.get(name=DEFAULT_BASE[TEMPLATE], owner=None)


def valuation_spec(request: ValuationRequest) -> dict[str, Any]:
    """The runner's spec for a valuation, validated by the runner's own parser.

    :raises Invalid: a pointer at the bad field (``/hyperparameters/...``, ``/valuation/...``).
    """
    if not request.label_field:
        raise _invalid("/label_field", "required", "Name the metadata field that holds each record's label.")
    info = TEMPLATES[TEMPLATE]
    unknown = sorted(set(request.hyperparameters) - set(info.hyperparameters))
    if unknown:
        raise _invalid(
            f"/hyperparameters/{unknown[0]}",
            "unknown",
            f"A valuation takes only {', '.join(sorted(info.hyperparameters))}; not {unknown[0]}.",
        )
    base = valuation_base()
    spec: dict[str, Any] = {
        "template": TEMPLATE,
        "base": {"kind": "builtin", "name": RUNNER_BUILTIN_NAMES.get(base.name, base.name)},
        "hyperparameters": {**info.defaults(), **request.hyperparameters},
        "valuation": dict(request.valuation),
        "telemetry": telemetry_block(),
    }
    try:
        parse_spec(spec)
    except SpecError as error:
        pointer = "/" + "/".join(error.field.split(".")) if error.field not in ("spec", "base") else ""
        raise _invalid(pointer, "invalid", f"{error.field}: {error.detail}") from None
    return spec


def _require_admin(actor: User, organisation: Organisation) -> None:
    membership = Membership.objects.filter(user=actor, organisation=organisation).first()
    if membership is None or not role_at_least(membership.role, Role.ADMIN):
        raise NotPermitted(
            f"Valuing a dataset version needs the 'admin' role in {organisation.name}.",
            code="common.role_insufficient",
        )


def _own_version(organisation: Organisation, version: DatasetVersion, pointer: str) -> DatasetVersion:
    """A version the organisation owns, in review or sealed.

    :raises NotFound: another organisation's version (told apart from no version by nobody).
    :raises Conflict: not in review or sealed.
    """
    locked = DatasetVersion.objects.select_related("dataset").get(pk=version.pk)
    if locked.dataset.owner_id != organisation.pk:
        raise NotFound(
            "No such dataset version.",
            code="training.version_not_found",
            errors=[{"pointer": pointer, "code": "not_found", "detail": "No such dataset version."}],
        )
    if locked.state not in VALUABLE_STATES:
        raise Conflict(
            f"Dataset version {locked.public_id} is {locked.get_state_display().lower()}: only a version "
            "in review or sealed can be valued.",
            code="training.version_unavailable",
        )
    return locked


def _size_check(version: DatasetVersion, pointer: str) -> None:
    size = _version_bytes(version)
    if size > settings.TRAINING_MAX_RECORDS_BYTES or version.records > settings.TRAINING_MAX_RECORDS:
        raise _invalid(
            pointer,
            "too_large",
            f"The version ({version.records:,} records, {size:,} bytes encrypted) is over this platform's "
            f"per-job limit ({settings.TRAINING_MAX_RECORDS:,} records).",
            problem="training.job_too_large",
        )


@transaction.atomic
def valuation_submit_own(
    *, actor: User, organisation: Organisation, version: DatasetVersion, request: ValuationRequest
) -> TrainingJob:
    """The owner's path: an admin values its organisation's own version against its own hold-out
    (or another version it owns, marked validation).

    :raises NotPermitted: not an admin of the organisation. :raises NotFound: not its version.
    :raises Conflict: the version is not in review or sealed. :raises Invalid: a bad setting.
    """
    _require_admin(actor, organisation)
    version = _own_version(organisation, version, "/version_id")
    validation = request.validation_version
    if validation is not None:
        validation = _own_version(organisation, validation, "/validation_version_id")
        if validation.pk == version.pk:
            raise _invalid(
                "/validation_version_id",
                "same_version",
                "The validation set must be another version; leave it out to hold out a share of this one.",
            )
    _size_check(version, "/version_id")
    spec = valuation_spec(request)
    return _create(
        actor=actor,
        organisation=organisation,
        grant=valuation_grant(version),
        request=request,
        spec=spec,
        purpose=request.purpose or "valuation",
        path="owner",
    )


@transaction.atomic
def valuation_submit_licensed(
    *, actor: User, organisation: Organisation, grant: Grant, request: ValuationRequest
) -> TrainingJob:
    """The trainer's path: value a licensed version under the license, optionally against a
    labelled version the trainer owns.

    The license's state, purposes and templates apply. A license that requires DP admits a
    valuation only when its ``job_templates`` name ``valuation`` explicitly: the provider chose DP
    for what leaves, and a valuation's aggregates are bounded by group size, not by DP.

    :raises NotPermitted: not a trainer, or another organisation's license.
    :raises Conflict: the license is revoked, expired or exhausted. :raises Invalid: a refused term.
    """
    if not organisation.is_trainer:
        raise NotPermitted(f"{organisation.name} is not a trainer organisation.", code="training.not_trainer")
    spec = valuation_spec(request)
    locked = Grant.objects.select_for_update(of=("self",)).select_related("version").get(pk=grant.pk)
    if locked.licensee_id != organisation.pk:
        raise NotPermitted("This license belongs to another organisation.", code="training.license_other_org")
    _license_check_state(locked)
    terms = locked.terms
    purposes = [str(p) for p in terms.get("purposes") or []]
    purpose = request.purpose or (purposes[0] if purposes else "valuation")
    if purposes and purpose not in purposes:
        raise _invalid(
            "/purpose",
            "not_permitted",
            f"The license permits the purposes {', '.join(purposes)}, not {purpose!r}.",
            problem="training.purpose_not_permitted",
        )
    templates = [str(t) for t in terms.get("job_templates") or []]
    dp_required = bool(terms.get("dp_required")) or locked.version.epsilon_cap is not None
    if templates and TEMPLATE not in templates:
        raise _invalid(
            "/template",
            "not_permitted",
            f"The license permits the templates {', '.join(templates)}, not {TEMPLATE}.",
            problem="training.template_not_permitted",
        )
    if dp_required and TEMPLATE not in templates:
        raise _invalid(
            "/template",
            "not_permitted",
            "This license requires DP and does not name the valuation template: its provider has not "
            "agreed to outputs bounded by group size instead of DP.",
            problem="training.template_not_permitted",
        )
    validation = request.validation_version
    if validation is not None:
        validation = _own_version(organisation, validation, "/validation_version_id")
    _size_check(locked.version, "/license")
    return _create(
        actor=actor,
        organisation=organisation,
        grant=locked,
        request=request,
        spec=spec,
        purpose=purpose,
        path="license",
    )


def _create(
    *,
    actor: User,
    organisation: Organisation,
    grant: Grant,
    request: ValuationRequest,
    spec: dict[str, Any],
    purpose: str,
    path: str,
) -> TrainingJob:
    validation = request.validation_version
    job = TrainingJob.objects.create(
        organisation=organisation,
        submitted_by=actor,
        grant=grant,
        template=TEMPLATE,
        base=valuation_base(),
        purpose=purpose,
        request={
            "template": TEMPLATE,
            "path": path,
            "label_field": request.label_field,
            "hyperparameters": request.hyperparameters,
            "valuation": request.valuation,
            "purpose": purpose,
            "validation_version_id": validation.public_id if validation is not None else None,
        },
        spec=spec,
        budget=BudgetHold.NONE,
        epochs=1,
        # Nothing trains: no tokens count against the license's max_tokens.
        tokens_planned=0,
    )
    job_reserve_and_enqueue(job, [grant] if validation is None else [grant, valuation_grant(validation)])
    audit_record(
        action="training.valuation_submit",
        actor=actor,
        organisation=organisation,
        object_type="training_job",
        object_id=job.pk,
        details={
            "path": path,
            "grant": grant.pk,
            "version": grant.version_id,
            "validation_version": validation.pk if validation is not None else None,
            "valuation": spec["valuation"],
        },
    )
    source = "a labelled set of its own" if validation is not None else "a hold-out"
    job_event(job, "queued", f"valuation of version {grant.version.public_id} against {source}", notify=True)
    return job
