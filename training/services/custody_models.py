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
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path
from typing import Any

from django.utils import timezone

from common.audit import audit_record
from common.models import Organisation
from custody import services as custody
from custody.models import Grant, GrantState
from training.exceptions import Conflict, Invalid, NotFound
from training.models import JobState, JobTemplate, TrainingJob
from training.receipts import canonical, receipt_sha256
from training.runner.bases import ALLOWED_NAMES

# The words of the terms vocabulary (marketplace/terms.py JOB_TEMPLATES) that govern a custody model.
USES = ("fine_tune", "generate", "distill_causal_lm", "distill_classification")
USE_POINTER = "/terms/permission/job_templates"
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

    Another organisation's model answers as an unknown one (DESIGN.md "Roles and permissions").
    :raises NotFound: ``training.custody_model_not_found`` with ``pointer``.
    """
    model = (
        TrainingJob.objects.select_related("grant__version", "base", "organisation")
        .filter(public_id=str(model_id))
        .first()
    )
    if model is None or model.organisation_id != organisation.pk:
        raise _not_found(pointer)
    return model


def _governing_grants(model: TrainingJob) -> list[Grant]:
    components = list(model.components.select_related("grant__version").order_by("position"))
    return [c.grant for c in components] or [model.grant]


def custody_model_check(
    *, organisation: Organisation, model: TrainingJob, use: str, pointer: str = "/custody_model"
) -> list[Grant]:
    """Check that ``organisation`` may start a ``use`` job from ``model``; returns its governing grants.

    :raises NotFound: another organisation's model (``training.custody_model_not_found``).
    :raises Conflict: the job did not succeed or its weights are not held in custody
        (``training.custody_model_not_held``), or a governing license is revoked or expired
        (``training.custody_model_license_inactive``).
    :raises Invalid: a governing license's ``job_templates`` do not name ``use``
        (``training.custody_model_use_not_permitted``, pointer ``/terms/permission/job_templates``).
    """
    if use not in USES:
        raise ValueError(f"unknown custody model use {use!r}")
    if model.organisation_id != organisation.pk:
        raise _not_found(pointer)
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
    grants = _governing_grants(model)
    now = timezone.now()
    for grant in grants:
        name = grant.external_ref or grant.public_id
        if grant.state == GrantState.REVOKED or (grant.expires_at is not None and grant.expires_at <= now):
            what = (
                "was revoked"
                if grant.state == GrantState.REVOKED
                else f"expired at {grant.expires_at:%Y-%m-%d %H:%M} UTC"
            )
            detail = f"License {name}, under which {model.public_id} was trained, {what}."
            raise Conflict(
                detail,
                code="training.custody_model_license_inactive",
                errors=[{"pointer": pointer, "code": "license_inactive", "detail": detail}],
            )
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
    return grants


def custody_model_lineage(model: TrainingJob, *, artifact_sha256: str) -> dict[str, Any]:
    """What a receipt names of the model a job started from (its own chain nested under it)."""
    receipt = model.receipt if isinstance(model.receipt, dict) else {}
    inner = receipt.get("receipt")
    body: dict[str, Any] = inner if isinstance(inner, dict) else {}
    return {
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
