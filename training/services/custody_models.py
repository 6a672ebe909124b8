"""A model held in custody as a later job's starting point (issue 16 item 4, issue 17 items 1-2).

A *custody model* is the weights artifact of a succeeded job whose license kept the weights in
custody; the API names it by that job's public id (``job_...``). A later job of the same
organisation may start from it (fine-tune further, generate a synthetic corpus, distil) when the
license it was trained under -- its *governing* license -- is still active and its terms'
``job_templates`` name the use. At submit: ``custody_model_get`` then ``custody_model_check``. In
the launcher: ``custody_model_unpack`` decrypts the archive in memory and writes the model files
into the sandbox's private working directory only (the runner loads them as an uploaded base),
and ``custody_model_lineage`` is what the new job's receipt names: the source model's artifact
hash, its receipt hash, its licenses and Merkle roots, and the source's own lineage, so the chain
stays in every receipt.

Another organisation may use the model too when it holds an active **model license** on it
(bought from the model's listing, marketplace/services/model_listings.py): the grant's terms
(``kind: model``) must allow the use -- ``distillation_allowed``, ``generation_allowed``,
``fine_tune_allowed`` -- read through custody's one rule, ``model_use_allowed``
(``custody_model_access``). An organisation that holds no model license on it gets 404, as for
any other organisation's object; a lapsed one 409; a use the terms do not allow 422 pointing at
the term. Whatever such a job makes stays in custody (the launcher keeps anything derived from
a custody model there), its receipt's lineage names the model license
(``custody_model_lineage``'s ``model_license``), and its use is metered on the model license
(``model_license_usage_record``).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.utils import timezone

from common.audit import audit_record
from common.models import Organisation
from custody import services as custody
from custody.exceptions import Conflict as CustodyConflict
from custody.models import Grant, GrantState
from custody.services.models_custody import (
    model_license_find,
    model_license_tokens_left,
    model_license_use_record,
    model_use_allowed,
    model_use_pointer,
)
from training.exceptions import Conflict, Invalid, NotFound
from training.models import JobState, JobTemplate, TrainingJob
from training.receipts import canonical, receipt_sha256
from training.runner.bases import ALLOWED_NAMES

# The words of the terms vocabulary (marketplace/terms.py JOB_TEMPLATES) that govern a custody model.
USES = ("fine_tune", "generate", "distill_causal_lm", "distill_classification")
USE_POINTER = "/terms/permission/job_templates"
# The word of a model license's terms (custody MODEL_USES) that allows each use.
MODEL_USE = {
    "fine_tune": "fine_tune",
    "generate": "generate",
    "distill_causal_lm": "distill",
    "distill_classification": "distill",
}
# The most model files (and bytes) an archive may unpack: the uploaded-base limits' order.
_MAX_MEMBERS = 64


def _not_found(pointer: str, detail: str = "No such model held in custody.") -> NotFound:
    return NotFound(
        detail,
        code="training.custody_model_not_found",
        errors=[{"pointer": pointer, "code": "not_found", "detail": detail}],
    )


def custody_model_get(
    *, organisation: Organisation, model_id: str, pointer: str = "/custody_model"
) -> TrainingJob:
    """The job whose weights are the custody model ``model_id`` (``job_...``), for ``organisation``.

    Another organisation's model answers as an unknown one (DESIGN.md "Roles and permissions"),
    unless ``organisation`` holds (or held) a model license on it: its licensee knows it exists.
    :raises NotFound: ``training.custody_model_not_found`` with ``pointer``.
    """
    model = (
        TrainingJob.objects.select_related("grant__version", "base", "organisation")
        .filter(public_id=str(model_id))
        .first()
    )
    if model is None:
        raise _not_found(pointer)
    if model.organisation_id != organisation.pk and (
        model_license_find(organisation=organisation, model_ref=model.public_id) is None
    ):
        raise _not_found(pointer)
    return model


def _governing_grants(model: TrainingJob) -> list[Grant]:
    components = list(model.components.select_related("grant__version").order_by("position"))
    return [c.grant for c in components] or [model.grant]


def custody_model_check(
    *, organisation: Organisation, model: TrainingJob, use: str, pointer: str = "/custody_model"
) -> list[Grant]:
    """Check that ``organisation`` may start a ``use`` job from ``model``; returns its governing grants
    (``custody_model_access``, for callers that need no model license)."""
    return custody_model_access(organisation=organisation, model=model, use=use, pointer=pointer).grants


@dataclass(frozen=True)
class ModelAccess:
    """Why an organisation may use a custody model: the licenses it was trained under (its data's
    holders), and the model license the user holds on it (None for the model's own organisation)."""

    grants: list[Grant]
    model_license: Grant | None = None


def _check_held(model: TrainingJob, pointer: str) -> None:
    held = (
        model.state == JobState.SUCCEEDED
        and model.template not in (JobTemplate.VALUATION, JobTemplate.GENERATE)
        and model.artifact_encrypted
        and bool(model.artifact_blob_key)
    )
    if not held:
        detail = (
            f"Job {model.public_id} holds no model in custody: only a succeeded training job whose "
            "license keeps the weights in custody does (a downloadable model is yours to use already)."
        )
        raise Conflict(
            detail,
            code="training.custody_model_not_held",
            errors=[{"pointer": pointer, "code": "not_held", "detail": detail}],
        )


def _inactive(subject: str, grant: Grant, pointer: str) -> Conflict:
    reason = (
        "was revoked"
        if grant.state == GrantState.REVOKED
        else f"expired at {grant.expires_at:%Y-%m-%d %H:%M} UTC"
    )
    detail = f"{subject}, {reason}."
    return Conflict(
        detail,
        code="training.custody_model_license_inactive",
        errors=[{"pointer": pointer, "code": "license_inactive", "detail": detail}],
    )


def _lapsed(grant: Grant) -> bool:
    return grant.state == GrantState.REVOKED or (
        grant.expires_at is not None and grant.expires_at <= timezone.now()
    )


def model_license_check(*, model: TrainingJob, grant: Grant | None, use: str, pointer: str) -> Grant:
    """A licensee's model license on ``model`` allows ``use`` now (at submit, and again at start).

    :raises NotFound: no model license (``training.custody_model_not_found``).
    :raises Conflict: revoked or expired (``training.custody_model_license_inactive``), or its
        tokens are used up (``training.model_license_exhausted``).
    :raises Invalid: the terms do not allow the use (``training.model_use_not_licensed``, pointer
        at the term: ``/terms/distillation_allowed``, ``/terms/generation_allowed``,
        ``/terms/fine_tune_allowed``).
    """
    if grant is None:
        raise _not_found(pointer)
    name = grant.external_ref or grant.public_id
    if _lapsed(grant):
        raise _inactive(f"Your model license {name} on {model.public_id}", grant, pointer)
    word = MODEL_USE[use]
    if not model_use_allowed(grant.terms, word):
        term = model_use_pointer(word)
        detail = (
            f"Your model license {name} on {model.public_id} does not allow {use}: its terms' "
            f"{term.rsplit('/', 1)[-1]} is false."
        )
        raise Invalid(
            detail,
            code="training.model_use_not_licensed",
            errors=[{"pointer": term, "code": "not_licensed", "detail": detail}],
        )
    if word in ("distill", "generate") and model_license_tokens_left(grant) == 0:
        detail = (
            f"Your model license {name} on {model.public_id} has no tokens left: buy more on its listing."
        )
        raise Conflict(
            detail,
            code="training.model_license_exhausted",
            errors=[{"pointer": "/terms/inference/cap_tokens", "code": "exhausted", "detail": detail}],
        )
    return grant


def custody_model_access(
    *, organisation: Organisation, model: TrainingJob, use: str, pointer: str = "/custody_model"
) -> ModelAccess:
    """Check that ``organisation`` may start a ``use`` job from ``model``: its own model under the
    licenses it was trained under, or another organisation's under a model license.

    :raises NotFound: another organisation's model, no model license held
        (``training.custody_model_not_found``).
    :raises Conflict: the job did not succeed or its weights are not held in custody
        (``training.custody_model_not_held``), or a governing license is revoked or expired
        (``training.custody_model_license_inactive``).
    :raises Invalid: a governing license's ``job_templates`` do not name ``use``
        (``training.custody_model_use_not_permitted``, pointer ``/terms/permission/job_templates``).
    """
    if use not in USES:
        raise ValueError(f"unknown custody model use {use!r}")
    if model.organisation_id != organisation.pk:
        licensed = model_license_find(organisation=organisation, model_ref=model.public_id)
        if licensed is None:
            raise _not_found(pointer)
        _check_held(model, pointer)
        return ModelAccess(
            grants=_governing_grants(model),
            model_license=model_license_check(model=model, grant=licensed, use=use, pointer=pointer),
        )
    _check_held(model, pointer)
    grants = _governing_grants(model)
    for grant in grants:
        name = grant.external_ref or grant.public_id
        if _lapsed(grant):
            raise _inactive(f"License {name}, under which {model.public_id} was trained", grant, pointer)
        named = [str(t) for t in grant.terms.get("job_templates") or []]
        if use not in named:
            detail = (
                f"License {name}, under which {model.public_id} was trained, does not name {use!r} in its "
                f"job templates ({', '.join(named) or 'none'})."
            )
            raise Invalid(
                detail,
                code="training.custody_model_use_not_permitted",
                errors=[{"pointer": USE_POINTER, "code": "not_permitted", "detail": detail}],
            )
    return ModelAccess(grants=grants)


def model_license_entry(grant: Grant) -> dict[str, Any]:
    """What a job's request and receipt name of the model license it used: its public ids and the
    hash of the terms snapshot it was used under."""
    return {
        "ref": grant.external_ref,
        "grant": grant.public_id,
        "terms_sha256": hashlib.sha256(canonical(grant.terms)).hexdigest(),
    }


def custody_model_lineage(
    model: TrainingJob, *, artifact_sha256: str, model_license: Grant | None = None
) -> dict[str, Any]:
    """What a receipt names of the model a job started from (its own chain nested under it), and
    the model license another organisation used it under (``model_license``, absent for the
    model's own organisation)."""
    receipt = model.receipt if isinstance(model.receipt, dict) else {}
    inner = receipt.get("receipt")
    body: dict[str, Any] = inner if isinstance(inner, dict) else {}
    extra = {"model_license": model_license_entry(model_license)} if model_license is not None else {}
    return {
        **extra,
        "job": model.public_id,
        "template": model.template,
        "artifact_sha256": artifact_sha256,
        "receipt_sha256": receipt_sha256(receipt) if body else None,
        "base_model": {"name": model.base.name, "kind": model.base.kind, "sha256": model.base.file_hash},
        "licenses": [
            {
                "ref": grant.external_ref,
                "grant": grant.public_id,
                "dataset_version": grant.version.public_id,
                "merkle_root": grant.version.merkle_root,
                "terms_sha256": hashlib.sha256(canonical(grant.terms)).hexdigest(),
            }
            for grant in _governing_grants(model)
        ],
        "epsilon_spent": float(model.epsilon_spent) if model.epsilon_spent is not None else None,
        "lineage": list(body.get("lineage") or []),
    }


def custody_model_unpack(*, model: TrainingJob, into: Path, consumer_ref: str) -> str:
    """Decrypt ``model``'s archive in memory and write its model files into ``into`` (a directory
    in the sandbox's private working directory); returns the archive's sha256 (the artifact hash).

    Only the file names an uploaded base may hold are written (no card, no link, no directory).
    :raises KeyUnavailable: the source version's key is disabled or destroyed (a takedown).
    :raises IntegrityFailure: the sealed blob was altered.
    """
    version = model.grant.version
    archive = custody.artifact_open(version=version, name=f"training-job-{model.pk}")
    audit_record(
        action="training.custody_model_open",
        organisation=model.organisation,
        object_type="training_job",
        object_id=model.pk,
        details={"purpose": "job_base", "consumer_ref": consumer_ref, "version": version.pk},
    )
    into.mkdir(mode=0o700)
    written = 0
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar:
            name = member.name.removeprefix("model/")
            if (
                not member.isfile()
                or "/" in name
                or not (name in ALLOWED_NAMES or name.endswith(".safetensors"))
            ):
                continue
            source = tar.extractfile(member)
            if source is None:
                continue
            written += 1
            if written > _MAX_MEMBERS:
                break
            (into / name).write_bytes(source.read())
    return hashlib.sha256(archive).hexdigest()


# --- at start and at the end of a licensee's job (the launcher calls these) --------------------


def job_model_license(job: TrainingJob) -> tuple[TrainingJob, Grant, str] | None:
    """The licensed model a job uses, the model license it uses it under, and the use (``distill``,
    ``generate``, ``fine_tune``); None when the job uses no other organisation's model."""
    if job.template == JobTemplate.GENERATE and job.grant.terms.get("kind") == "model":
        assert job.custody_model is not None
        return job.custody_model, job.grant, "generate"
    resolved = (job.request.get("distill") or {}).get("resolved") or {}
    if resolved.get("kind") == "custody_model":
        named = resolved.get("model_license") or {}
        if not named:
            return None
        teacher = TrainingJob.objects.select_related("grant__version", "base").get(public_id=resolved["ref"])
        return teacher, Grant.objects.select_related("version").get(public_id=named["grant"]), "distill"
    model = job.custody_model
    if model is None or model.organisation_id == job.organisation_id:
        return None
    named = job.request.get("model_license") or {}
    grant = (
        Grant.objects.select_related("version").filter(public_id=named.get("grant")).first()
        if named
        else model_license_find(organisation=job.organisation, model_ref=model.public_id)
    )
    if grant is None:
        from training.launcher import LaunchFailure

        raise LaunchFailure("training.license_unusable", f"No model license on {model.public_id} is held.")
    return model, grant, "fine_tune"


def model_license_recheck(job: TrainingJob) -> Grant | None:
    """Check again, as the job starts, that its model license still allows its use (a revoked or
    expired one stops it before any weight is decrypted); returns it (None: no model license used).

    :raises LaunchFailure: ``training.license_unusable``.
    """
    used = job_model_license(job)
    if used is None:
        return None
    model, grant, use = used
    grant.refresh_from_db()
    use_name = {"distill": job.template, "generate": "generate", "fine_tune": "fine_tune"}[use]
    try:
        model_license_check(model=model, grant=grant, use=use_name, pointer="/custody_model")
    except (Conflict, Invalid, NotFound, CustodyConflict) as exc:
        from training.launcher import LaunchFailure

        raise LaunchFailure(
            "training.license_unusable", f"The model license can no longer be used: {exc.detail}"
        ) from exc
    return grant


def custody_model_start(job: TrainingJob, into: Path) -> list[dict[str, Any]]:
    """A fine-tune further's base: re-check a model license, decrypt the custody model into ``into``
    (the sandbox's private ``base`` directory); returns the lineage its receipt names."""
    model = job.custody_model
    assert model is not None
    model_license = model_license_recheck(job)
    sha = custody_model_unpack(model=model, into=into, consumer_ref=job.consumer_ref)
    return [custody_model_lineage(model, artifact_sha256=sha, model_license=model_license)]


def model_license_usage_record(job: TrainingJob, *, tokens: int) -> None:
    """Meter a finished job's use of another organisation's model on its model license (inside the
    transaction that finishes the job; once per job): custody's ``model_license_use_record``."""
    used = job_model_license(job)
    if used is None:
        return
    _model, grant, use = used
    model_license_use_record(grant=grant, consumer_ref=job.consumer_ref, use=use, tokens=tokens)
