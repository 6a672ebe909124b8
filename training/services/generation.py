"""Jobs that start from a model held in custody: fine-tune further, and generation (issue 16 item 4,
issue 17 items 1-2).

Submit: ``job_submit_from_custody_model`` (the API's path when a body names ``custody_model`` or
the ``generate`` template). A fine-tune further is an ordinary causal_lm/classification job under
the trainer's license whose base is the custody model (``jobs.job_submit`` checks it). A
generation job runs under the model's governing license (the one it was trained under, whose
terms must name ``generate``) and reads no records for training. Another organisation's model
may be used too, under the model license the caller holds on it (custody_models.py
``custody_model_access``): a fine-tune further when its terms say ``fine_tune_allowed`` (the job's
request names the ``model_license``), a generation when they say ``generation_allowed`` -- that
job then runs under the model license itself (its slot held by custody's
``grant_job_reserve(model_use="generate")``, its generated tokens metered there as ``tokens_inferred``).

Run (``generation_attempt``, from the launcher): custody model decrypted into the sandbox's
private directory -> ``runner generate`` writes records as events, held in this process's memory
-> custody's leakage screen against the source version (custody/services/synthetic.py) -> the
kept records ingested as a new version of the requesting organisation, marked model-generated,
with its provenance -> a signed receipt naming the lineage and the new version -> succeeded.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from common.audit import audit_record
from common.models import Organisation, User
from custody.exceptions import Conflict as CustodyConflict
from custody.models import Grant
from custody.services.grants import grant_job_reserve
from custody.services.models_custody import model_license_use_record
from custody.services.synthetic import leakage_screen, synthetic_version_create, synthetic_version_get
from training.exceptions import Conflict, Invalid, NotPermitted
from training.models import BaseTask, BudgetHold, JobState, JobTemplate, TrainingJob
from training.runner.generate import parse_generation
from training.runner.spec import SpecError
from training.services.custody_models import (
    custody_model_access,
    custody_model_get,
    custody_model_unpack,
    model_license_entry,
    model_license_recheck,
)
from training.services.jobs import (
    JobRequest,
    _license_check_state,
    job_event,
    job_finish,
    job_reserve_and_enqueue,
    job_submit,
    telemetry_block,
)


def _invalid(pointer: str, code: str, detail: str, problem: str = "training.spec_invalid") -> Invalid:
    return Invalid(detail, code=problem, errors=[{"pointer": pointer, "code": code, "detail": detail}])


def job_submit_from_custody_model(
    *, actor: User, organisation: Organisation, body: dict[str, Any], license_grant: Callable[[], Grant]
) -> TrainingJob:
    """A submit that names ``custody_model`` (or the ``generate`` template): resolve and route it.

    :raises Invalid: ``base`` named as well, no model named, a mixed job, or a bad generation block.
    :raises NotFound: no such model of the organisation's.
    """
    if "custody_model" not in body:
        raise _invalid(
            "/custody_model",
            "required",
            "A generate job names the model held in custody it uses (job_...).",
            problem="training.custody_model_required",
        )
    if "base" in body or "licenses" in body:
        field = "base" if "base" in body else "licenses"
        raise _invalid(
            f"/{field}",
            "ambiguous",
            f"A job that starts from custody_model names no {field}.",
            problem="training.custody_model_ambiguous",
        )
    model = custody_model_get(organisation=organisation, model_id=str(body["custody_model"]))
    if body["template"] == JobTemplate.GENERATE:
        return generation_submit(
            actor=actor,
            organisation=organisation,
            model=model,
            generation=body.get("generation"),
            purpose=str(body.get("purpose") or ""),
        )
    if body.get("generation"):
        raise _invalid("/generation", "not_permitted", "Only the generate template takes a generation block.")
    request = JobRequest(
        template=str(body["template"]),
        base=model.base,
        hyperparameters=dict(body.get("hyperparameters") or {}),
        dp=dict(body["dp"]) if body.get("dp") else None,
        label_field=str(body.get("label_field") or ""),
        purpose=str(body.get("purpose") or ""),
        custody_model=model,
    )
    with transaction.atomic():
        job = job_submit(actor=actor, organisation=organisation, grant=license_grant(), request=request)
        if model.organisation_id != organisation.pk:  # under a model license: the receipt names it
            access = custody_model_access(organisation=organisation, model=model, use="fine_tune")
            assert access.model_license is not None
            job.request["model_license"] = model_license_entry(access.model_license)
            job.save(update_fields=["request"])
    return job


def generation_spec(generation: Any) -> dict[str, Any]:
    """The runner spec of a generation job. :raises Invalid: with a pointer into ``/generation``."""
    spec = {
        "template": JobTemplate.GENERATE.value,
        "base": {"kind": "uploaded", "path": "base"},
        "generation": generation,
        "telemetry": telemetry_block(),
    }
    try:
        parse_generation(spec)
    except SpecError as error:
        pointer = "/" + error.field.replace(".", "/")
        raise _invalid(pointer, "invalid", f"{error.field}: {error.detail}") from None
    return spec


@transaction.atomic
def generation_submit(
    *, actor: User, organisation: Organisation, model: TrainingJob, generation: Any, purpose: str = ""
) -> TrainingJob:
    """Queue a generation job with ``model`` under its governing license (or, for another
    organisation's model, under the caller's model license on it).

    :raises NotPermitted: not a trainer. :raises NotFound: another organisation's model, unlicensed.
    :raises Conflict: the model is not held in custody, or its license is revoked, expired or used up.
    :raises Invalid: the license does not name ``generate`` (a model license: its terms do not say
        ``generation_allowed``), the model is no causal LM, bad settings.
    """
    if not organisation.is_trainer:
        raise NotPermitted(f"{organisation.name} is not a trainer organisation.", code="training.not_trainer")
    access = custody_model_access(organisation=organisation, model=model, use="generate")
    if model.base.task != BaseTask.CAUSAL_LM:
        raise _invalid(
            "/custody_model",
            "wrong_task",
            f"{model.public_id} is a {model.base.get_task_display()}; generation needs a causal LM.",
            problem="training.custody_model_wrong_task",
        )
    spec = generation_spec(generation)
    if access.model_license is not None:
        return _licensee_generation_submit(
            actor=actor,
            organisation=organisation,
            model=model,
            spec=spec,
            purpose=purpose,
            grant=access.model_license,
        )
    locked = (
        Grant.objects.select_for_update(of=("self",)).select_related("version").get(pk=access.grants[0].pk)
    )
    _license_check_state(locked)
    return _generation_queue(
        actor=actor,
        organisation=organisation,
        model=model,
        grant=locked,
        purpose=purpose,
        generation=generation,
    )


def _licensee_generation_submit(
    *,
    actor: User,
    organisation: Organisation,
    model: TrainingJob,
    spec: dict[str, Any],
    purpose: str,
    grant: Grant,
) -> TrainingJob:
    """A generation job of another organisation's model, run under the caller's model license: its
    slot is held by the license's ``generation_allowed`` (a model license counts no jobs)."""
    locked = Grant.objects.select_for_update(of=("self",)).select_related("version").get(pk=grant.pk)
    purposes = [str(p) for p in locked.terms.get("purposes") or []]
    purpose = purpose or (purposes[0] if purposes else "")
    if purposes and purpose not in purposes:
        raise _invalid(
            "/purpose",
            "not_permitted",
            f"Model license {locked.external_ref} permits the purposes {', '.join(purposes)}, "
            f"not {purpose!r}.",
            problem="training.purpose_not_permitted",
        )
    return _generation_queue(
        actor=actor,
        organisation=organisation,
        model=model,
        grant=locked,
        purpose=purpose,
        generation=spec["generation"],
        model_license=locked,
    )


def _generation_queue(
    *,
    actor: User,
    organisation: Organisation,
    model: TrainingJob,
    grant: Grant,
    purpose: str,
    generation: Any,
    model_license: Grant | None = None,
) -> TrainingJob:
    """Create the generation job under ``grant`` (locked by the caller), hold its slot and queue it:
    on the governing license's jobs, or, under a ``model_license``, on the model license itself."""
    spec = generation_spec(generation)
    request: dict[str, Any] = {
        "template": JobTemplate.GENERATE.value,
        "custody_model": model.public_id,
        "generation": generation,
    }
    if model_license is not None:
        request["model_license"] = model_license_entry(model_license)
    job = TrainingJob.objects.create(
        organisation=organisation,
        submitted_by=actor,
        grant=grant,
        template=JobTemplate.GENERATE,
        base=model.base,
        purpose=purpose,
        request=request,
        spec=spec,
        budget=BudgetHold.NONE,
        custody_model=model,
    )
    if model_license is not None:
        try:
            grant_job_reserve(grant=model_license, consumer_ref=job.consumer_ref, model_use="generate")
        except CustodyConflict as exc:
            raise Conflict(exc.detail, code="training.license_unusable") from exc
    job_reserve_and_enqueue(job, [] if model_license is not None else [grant])
    details = {
        "grant": grant.pk,
        "version": grant.version_id,
        "template": job.template,
        "custody_model": model.public_id,
        "records": spec["generation"]["records"],
    }
    if model_license is not None:
        details["model_license"] = model_license.external_ref
    audit_record(
        action="training.job_submit",
        actor=actor,
        organisation=organisation,
        object_type="training_job",
        object_id=job.pk,
        details=details,
    )
    job_event(
        job, "queued", f"generate {spec['generation']['records']} records with {model.public_id}", notify=True
    )
    return job


# --- the attempt (the launcher calls this for template generate) --------------------------------


class _Records:
    """The runner's events: records kept in memory, everything else to the launcher's recorder."""

    def __init__(self, recorder: Callable[[dict[str, Any]], None], limit: int) -> None:
        self.recorder = recorder
        self.limit = limit
        self.texts: list[str] = []
        self.malformed = 0

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("event") != "record":
            self.recorder(event)
            return
        text = event.get("text")
        if isinstance(text, str) and len(self.texts) < self.limit and len(text) <= 20_000:
            self.texts.append(text)
        else:
            self.malformed += 1


def source_canaries(model: TrainingJob) -> list[str]:
    """The secrets the source model was trained with (the launcher draws them per license and base)."""
    from training.launcher import license_seed
    from training.runner.canaries import canaries_generate

    doc = canaries_generate(
        count=settings.TRAINING_CANARIES,
        candidates=settings.TRAINING_CANARY_CANDIDATES,
        seed=license_seed(model, "canaries"),
    )
    return [str(canary["secret"]) for canary in doc["canaries"]]


def generation_attempt(job: TrainingJob, workdir: Path) -> None:
    """One attempt of a generation job (see the module docstring). :raises LaunchFailure:"""
    from training import sandbox
    from training.launcher import LaunchCancelled, LaunchFailure, Recorder, _failure, _limits
    from training.services.custody_models import custody_model_lineage

    model = job.custody_model
    assert model is not None
    existing = synthetic_version_get(job_ref=job.public_id)
    if existing is not None:  # a retry after the version was made: finish, make nothing twice
        _generation_finish(job, existing, job.metrics.get("lineage") or [])
        return
    model_license = model_license_recheck(job)  # a lapsed model license stops it before any decrypt
    sha = custody_model_unpack(model=model, into=workdir / "base", consumer_ref=job.consumer_ref)
    lineage = [custody_model_lineage(model, artifact_sha256=sha, model_license=model_license)]
    (workdir / "spec.json").write_text(json.dumps(job.spec))
    recorder = Recorder(job)
    records = _Records(recorder, limit=int(job.spec["generation"]["records"]))
    result = sandbox.run_runner(
        ["generate", "--spec", "spec.json"],
        workdir=workdir,
        limits=_limits(),
        on_event=records,
        should_cancel=recorder.should_cancel,
    )
    recorder.flush()
    if recorder.cancel_reason and result.exit_code != 0:
        raise LaunchCancelled(recorder.cancel_reason)
    if result.exit_code != 0 or recorder.done is None:
        raise _failure(result, recorder, "generation")
    kept, report = leakage_screen(
        source=model.grant.version,
        records=records.texts,
        canaries=source_canaries(model),
        consumer_ref=job.consumer_ref,
    )
    records.texts.clear()
    if not kept:
        raise LaunchFailure(
            "training.generation_all_dropped",
            f"All {report.generated} generated records were too close to the source data and were dropped.",
        )
    provenance = {
        "job": job.public_id,
        "generated_by": {"template": JobTemplate.GENERATE.value, "custody_model": model.public_id},
        "model_artifact_sha256": sha,
        "model_receipt_sha256": lineage[0]["receipt_sha256"],
        "epsilon_spent": lineage[0]["epsilon_spent"],
        "dp": bool(model.dp_enabled),
        # The trainer's share of the synthetic version's default allocation, as the source terms
        # state it (marketplace/services/synthetic_rights.py; its default when absent).
        "model_share_bps": model.grant.terms.get("model_share_bps"),
    }
    assert job.submitted_by is not None
    with transaction.atomic():
        version = synthetic_version_create(
            actor=job.submitted_by,
            organisation=job.organisation,
            source=model.grant.version,
            records=kept,
            report=report,
            provenance=provenance,
        )
        job.metrics["generation"] = {
            **report.as_dict(),
            "tokens_generated": int(recorder.done.get("tokens_generated") or 0),
            "seconds": float(recorder.done.get("seconds") or 0),
            "synthetic_version": version.public_id,
        }
        job.metrics["lineage"] = lineage
        job.save(update_fields=["metrics"])
        if model_license is not None:  # the model's own forward passes, metered on the model license
            model_license_use_record(
                grant=model_license,
                consumer_ref=job.consumer_ref,
                use="generate",
                tokens=int(job.metrics["generation"]["tokens_generated"]),
            )
        _generation_finish(job, version, lineage)


def _generation_finish(job: TrainingJob, version: Any, lineage: list[dict[str, Any]]) -> None:
    from training.receipts import receipt_body, receipt_sign

    body = receipt_body(job, version=job.grant.version)
    body["lineage"] = lineage
    body["synthetic_version"] = {
        "dataset_version": version.public_id,
        "leakage": (version.provenance or {}).get("leakage"),
    }
    job.receipt = receipt_sign(body)
    job.tokens_trained = 0
    job.save(update_fields=["receipt", "tokens_trained"])
    dropped = ((version.provenance or {}).get("leakage") or {}).get("dropped", 0)
    job_finish(
        job_id=job.pk,
        state=JobState.SUCCEEDED,
        detail=f"Synthetic version {version.public_id} ingesting; {dropped} record(s) dropped as leaks.",
    )
