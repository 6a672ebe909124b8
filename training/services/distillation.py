"""Distillation jobs (issue 16 item 3): the teacher a student learns from, checked at submit.

A ``distill_causal_lm`` or ``distill_classification`` job names its student as ``base`` and its
teacher in the body's ``distill`` block, with the loss's ``alpha`` and ``temperature``:

    "distill": {"teacher": "base_..." | "job_...", "alpha": 0.5, "temperature": 2.0}

The teacher is a base model (built in, or the organisation's upload) or a model held in custody
(a succeeded job's sealed weights: training/services/custody_models.py). At submit
(``distill_prepare``): the teacher exists for the organisation, does the template's task, is no
smaller than the student and shares its vocabulary; a custody model's governing license names
the template in its ``job_templates`` -- or, for another organisation's model, the organisation
holds an active model license on it whose terms say ``distillation_allowed`` (the resolved
teacher then names that ``model_license``). The student's own license must name the template too
(``distill_license_check``). In the launcher (``distill_teacher_prepare``) the teacher's files go
into the sandbox's private working directory (``teacher/``), never anywhere else, and the
receipt's ``teacher`` entry names its artifact hash and license (and the model license used, if
any). The student's request keeps what a later settlement needs to pay the teacher's holders
(``teacher_settlement``); a licensee's teacher tokens are metered on its model license when the
student finishes (``custody_models.model_license_usage_record``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.db.models import Q

from common.models import Organisation
from custody.models import Grant
from training.exceptions import Invalid, NotFound
from training.models import TEMPLATE_TASK, BaseKind, BaseModel, BaseState, TrainingJob
from training.runner.distill_spec import DISTILL_TEMPLATES, TEACHER_BASES

if TYPE_CHECKING:
    from training.services.jobs import JobRequest

TEACHER_DIR = "teacher"
TERM_POINTER = "/terms/permission/job_templates"
# The share of a student's later revenue (sales, inference) owed to a custody teacher's rights
# holders, in basis points, when the teacher's license terms name none (``distill_share_bps``).
DEFAULT_TEACHER_SHARE_BPS = 2_000
# Registry names of built-in bases the runner knows by another name (as jobs.RUNNER_BUILTIN_NAMES).
_RUNNER_NAMES = {"minilm-l6": "all-minilm-l6-v2"}
# Built-in bases that share the platform tokenizer's vocabulary (causal ones rename only specials).
_PLATFORM_VOCABULARY = "platform-wordpiece"


def _invalid(pointer: str, code: str, detail: str, problem: str) -> Invalid:
    return Invalid(detail, code=problem, errors=[{"pointer": pointer, "code": code, "detail": detail}])


def _number(block: dict[str, Any], name: str, default: float) -> float:
    value = block.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(f"/distill/{name}", "invalid", f"{name} must be a number.", "training.spec_invalid")
    return float(value)


def vocabulary_id(base: BaseModel) -> str:
    """What a base's tokens mean: the platform vocabulary for built-ins, else its tokenizer.json's hash."""
    if base.kind == BaseKind.BUILTIN:
        return _PLATFORM_VOCABULARY
    for entry in base.files or []:
        if isinstance(entry, dict) and entry.get("name") == "tokenizer.json":
            return f"sha256:{entry.get('sha256')}"
    return f"base:{base.public_id}"


def _teacher_base(organisation: Organisation, ref: str, template: str) -> BaseModel:
    base = BaseModel.objects.filter(Q(owner__isnull=True) | Q(owner=organisation), public_id=ref).first()
    if base is None:
        raise NotFound(
            "No such teacher model.",
            code="training.teacher_not_found",
            errors=[{"pointer": "/distill/teacher", "code": "not_found", "detail": "No such teacher model."}],
        )
    if base.state != BaseState.VALIDATED:
        raise _invalid(
            "/distill/teacher",
            "not_validated",
            f"Teacher {base.name} is {base.get_state_display()}.",
            "training.teacher_invalid",
        )
    if (
        base.kind == BaseKind.BUILTIN
        and _RUNNER_NAMES.get(base.name, base.name) not in TEACHER_BASES[template]
    ):
        raise _invalid(
            "/distill/teacher",
            "wrong_task",
            f"Built-in base {base.name} cannot teach {template}.",
            "training.teacher_invalid",
        )
    return base


def _teacher_entry(organisation: Organisation, ref: str, template: str) -> tuple[dict[str, Any], BaseModel]:
    """The resolved teacher (what the job's request keeps) and the base whose family it belongs to."""
    if ref.startswith("job_"):
        from training.services.custody_models import (
            custody_model_access,
            custody_model_get,
            model_license_entry,
        )

        model = custody_model_get(organisation=organisation, model_id=ref, pointer="/distill/teacher")
        access = custody_model_access(
            organisation=organisation, model=model, use=template, pointer="/distill/teacher"
        )
        grants = access.grants
        if model.template not in (DISTILL_TEMPLATES[template], template):
            raise _invalid(
                "/distill/teacher",
                "wrong_task",
                f"Model {model.public_id} was trained by {model.template}; {template} needs a "
                f"{DISTILL_TEMPLATES[template]} model.",
                "training.teacher_invalid",
            )
        entry = {
            "kind": "custody_model",
            "ref": model.public_id,
            "runner": {"kind": "uploaded", "path": TEACHER_DIR},
            "settlement": teacher_settlement(model, grants),
        }
        if access.model_license is not None:  # another organisation's model, used under a model license
            entry["model_license"] = model_license_entry(access.model_license)
            entry["settlement"]["model_license"] = entry["model_license"]
        return entry, model.base
    base = _teacher_base(organisation, ref, template)
    runner = (
        {"kind": "builtin", "name": _RUNNER_NAMES.get(base.name, base.name)}
        if base.kind == BaseKind.BUILTIN
        else {"kind": "uploaded", "path": TEACHER_DIR}
    )
    return {"kind": str(base.kind), "ref": base.public_id, "runner": runner}, base


def teacher_settlement(model: TrainingJob, grants: list[Grant]) -> dict[str, Any]:
    """What a sale or inference of the student must pay the teacher's rights holders: the teacher
    model, its governing licenses (whose allocations name the holders) and their share in bps.

    The share is the first governing license's ``distill_share_bps`` term, else the default.
    """
    share = DEFAULT_TEACHER_SHARE_BPS
    for grant in grants:
        named = grant.terms.get("distill_share_bps")
        if isinstance(named, int) and not isinstance(named, bool) and 0 <= named <= 10_000:
            share = named
            break
    return {
        "teacher_model": model.public_id,
        "licenses": [{"ref": g.external_ref, "grant": g.public_id} for g in grants],
        "dataset_versions": [g.version.public_id for g in grants],
        "share_bps": share,
    }


def distill_prepare(*, organisation: Organisation, request: JobRequest) -> JobRequest:
    """Check a request's ``distill`` block and resolve its teacher; returns the request to submit.

    :raises Invalid: a pointer at /distill, /distill/teacher, /distill/alpha, /distill/temperature
        or /base (codes ``training.distill_invalid``, ``training.teacher_invalid``,
        ``training.teacher_vocabulary_mismatch``, ``training.custody_model_use_not_permitted``).
    :raises NotFound: the teacher does not exist for this organisation.
    """
    template = request.template
    block = request.distill
    if template not in DISTILL_TEMPLATES:
        if block is not None:
            raise _invalid(
                "/distill",
                "not_allowed",
                f"Only {' and '.join(DISTILL_TEMPLATES)} take a distill block, not {template}.",
                "training.distill_invalid",
            )
        return request
    if not isinstance(block, dict):
        raise _invalid(
            "/distill",
            "required",
            f"{template} needs a distill block: the teacher (a base_... or job_... id), alpha and "
            "temperature.",
            "training.distill_invalid",
        )
    unknown = sorted(set(block) - {"teacher", "alpha", "temperature"})
    if unknown:
        raise _invalid(
            f"/distill/{unknown[0]}",
            "unknown",
            f"{unknown[0]} is not a known field.",
            "training.distill_invalid",
        )
    ref = block.get("teacher")
    if not isinstance(ref, str) or not ref.startswith(("base_", "job_")):
        raise _invalid(
            "/distill/teacher",
            "required",
            "Name the teacher: a base model's id (base_...) or a model held in custody (job_...).",
            "training.distill_invalid",
        )
    entry, family = _teacher_entry(organisation, ref, template)
    student = request.base
    if family.task != TEMPLATE_TASK[template]:  # type: ignore[index]
        raise _invalid(
            "/distill/teacher",
            "wrong_task",
            f"The teacher is a {family.get_task_display()}; {template} needs a "
            f"{TEMPLATE_TASK[template].label}.",  # type: ignore[index]
            "training.teacher_invalid",
        )
    if vocabulary_id(family) != vocabulary_id(student):
        raise _invalid(
            "/distill/teacher",
            "vocabulary_mismatch",
            f"The teacher's tokenizer ({family.name}) is not the student's ({student.name}): distillation "
            "compares their predictions token by token, so both must share one vocabulary. Choose a "
            'student of the teacher\'s family (docs/training.md, "Distillation").',
            "training.teacher_vocabulary_mismatch",
        )
    if student.parameters and family.parameters and student.parameters > family.parameters:
        raise _invalid(
            "/base",
            "larger_than_teacher",
            f"The student ({student.name}, {student.parameters:,} parameters) is larger than its teacher "
            f"({family.name}, {family.parameters:,}): distil into a smaller base.",
            "training.distill_invalid",
        )
    resolved = {
        "teacher": ref,
        "alpha": _number(block, "alpha", 0.5),
        "temperature": _number(block, "temperature", 2.0),
        "resolved": entry,
    }
    return dataclasses.replace(request, distill=resolved)


def distill_runner_blocks(distill: dict[str, Any]) -> dict[str, Any]:
    """The runner spec's ``teacher`` and ``distill`` blocks for a resolved distill request.

    :raises Invalid: the block was not resolved by ``distill_prepare`` (a mixed-license job).
    """
    resolved = distill.get("resolved")
    if not isinstance(resolved, dict):
        raise _invalid(
            "/distill",
            "not_allowed",
            "A distillation job runs under one license: name license, not licenses.",
            "training.distill_invalid",
        )
    return {
        "teacher": dict(resolved["runner"]),
        "distill": {"alpha": distill["alpha"], "temperature": distill["temperature"]},
    }


def distill_license_check(*, grant: Grant, request: JobRequest, spec: dict[str, Any]) -> None:
    """The student's license must name the distillation template itself (a license whose
    ``job_templates`` list is empty allows the plain templates, never distillation), and a
    teacher the trainer uploaded lets weights leave only under DP (as an uploaded base).

    :raises Invalid: ``training.template_not_permitted`` or ``training.dp_required_uploaded_base``.
    """
    if request.template not in DISTILL_TEMPLATES or request.distill is None:
        return
    named = [str(t) for t in grant.terms.get("job_templates") or []]
    name = grant.external_ref or grant.public_id
    if request.template not in named:
        raise _invalid(
            "/template",
            "not_permitted",
            f"License {name} does not name {request.template} in its job templates "
            f"({', '.join(named) or 'none'}): distillation runs only where the terms name it "
            f"({TERM_POINTER}).",
            "training.template_not_permitted",
        )
    resolved = request.distill.get("resolved") or {}
    if (
        resolved.get("kind") == BaseKind.UPLOADED
        and grant.terms.get("weights_may_leave")
        and "dp" not in spec
    ):
        from django.conf import settings

        if settings.TRAINING_UPLOADED_BASE_DP_TO_RELEASE:
            raise _invalid(
                "/dp/enabled",
                "required",
                "A student taught by an uploaded teacher leaves custody only when trained with DP (a "
                "crafted teacher can steer records into the student through its predictions; DP bounds "
                "what any record carries). Enable DP with distill_classification, or use a license "
                "that keeps the weights in custody.",
                "training.dp_required_uploaded_base",
            )


def distill_keeps_in_custody(job: TrainingJob) -> bool:
    """A student of a model held in custody stays in custody too (its predictions carry the teacher's),
    whoever holds the teacher -- its own organisation or a licensee -- and whatever the student's
    own license says about weights."""
    resolved = (job.request.get("distill") or {}).get("resolved") or {}
    return resolved.get("kind") == "custody_model"


def distill_teacher_prepare(
    job: TrainingJob, workdir: Path, *, label_vocabulary_sha256: str
) -> dict[str, Any]:
    """Put the teacher's files in the sandbox's working directory (an upload or a custody model;
    a built-in needs none) and return the receipt's ``teacher`` entry: its kind, id, artifact
    hash and license (None for a base, which no license governs).

    :raises ValueError: a custody teacher's label vocabulary differs from the student's records'
        (the launcher turns it into ``training.teacher_labels_mismatch``).
    """
    distill = job.request.get("distill") or {}
    resolved = distill.get("resolved") or {}
    kind, ref = resolved.get("kind"), str(resolved.get("ref") or "")
    entry: dict[str, Any] = {
        "kind": kind,
        "ref": ref,
        "alpha": distill.get("alpha"),
        "temperature": distill.get("temperature"),
        "license": None,
    }
    if kind == "custody_model":
        from training.services.custody_models import (
            custody_model_lineage,
            custody_model_unpack,
            model_license_recheck,
        )

        model = TrainingJob.objects.select_related("grant__version", "base", "organisation").get(
            public_id=ref
        )
        model_license = model_license_recheck(job)  # a lapsed model license stops it here
        labels = (model.metrics or {}).get("labels") or {}
        if label_vocabulary_sha256 and labels.get("vocabulary_sha256") != label_vocabulary_sha256:
            raise ValueError("the teacher was trained on another label vocabulary")
        sha = custody_model_unpack(model=model, into=workdir / TEACHER_DIR, consumer_ref=job.consumer_ref)
        lineage = custody_model_lineage(model, artifact_sha256=sha, model_license=model_license)
        entry.update(
            artifact_sha256=sha,
            receipt_sha256=lineage["receipt_sha256"],
            license=lineage["licenses"],
            lineage=lineage["lineage"],
            settlement=resolved.get("settlement"),
        )
        if model_license is not None:
            entry["model_license"] = lineage["model_license"]
        return entry
    base = BaseModel.objects.get(public_id=ref)
    if base.kind == BaseKind.UPLOADED:
        from training.services.bases import base_unpack

        base_unpack(base=base, into=workdir / TEACHER_DIR)
    entry.update(name=base.name, artifact_sha256=base.file_hash)
    return entry
