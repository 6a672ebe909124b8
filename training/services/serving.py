"""Plug-in inference on custody models (issue 16 item 2): submit, run in the sandbox, guard, meter.

submit (``inference_submit``): the caller's model license is custody's grant whose terms name
the model (``kind: model``); the terms' per-call token limit and cap, the task and the prompts
are checked, then an ``InferenceCall`` and its work item (queue ``serving``) are written in one
transaction (202: the caller polls the call).

run (work kind ``training.inference``, ``inference_run``): custody decrypts the model's archive
(audited) into a fresh 0700 working directory, the runner's ``serve`` subcommand answers the
prompts in the sandbox (no network, no secrets), the directory is removed. Every output passes
the **extraction guard** (``guard_outputs``): the training job's canaries and a keyed index of
every 8-word window of the version's records; an output that reproduces either is withheld
(the answer says so, never the text), the rest go through the version's desensitizer. The
call's ``tokens_inferred`` usage (prompt + output platform tokens) is recorded with the call's
end in one transaction, once per call (custody's unique usage row), and settled by
marketplace's sweep. The prompts are cleared there too: what stays is who, when, how many.

A worker killed mid-call leaves the item's lease to expire; the sweep re-runs it and, the
call not being final, it runs again from the start: the usage is still recorded once.

labels (``label_names``): a classifier is trained on opaque ``LABEL_<i>`` ids (the launcher's
``opaque_labels``; its spec, receipt and stored ``config.json`` name no value). Serving names the
classes again inside custody: it reads the label field's values from the job's versions (already
desensitized at ingest), checks them against the receipt's vocabulary hash, and writes
``id2label``/``label2id`` into the sandbox's copy of the config, so the runner answers with the
names. Only when every class has at least ``LABEL_MIN_RECORDS`` records: a free-text field (a
value per record) would otherwise answer with record text. Otherwise the answers stay ``LABEL_<i>``.
"""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
import shutil
import tarfile
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Q, Sum
from django.utils import timezone

from common.audit import audit_record
from common.exceptions import FieldError
from common.models import Organisation, User, WorkItem, WorkState
from common.public_ids import is_public_id
from common.work import work_claim, work_complete, work_enqueue, work_fail, work_handler, work_heartbeat
from custody import services as custody
from custody.exceptions import Conflict as CustodyConflict
from custody.models import (
    CustodyModel,
    DatasetVersion,
    Grant,
    GrantPurpose,
    GrantState,
    UsageKind,
    UsageRecord,
)
from custody.services.models_custody import (
    ExtractionIndex,
    custody_model_get,
    custody_model_open,
    custody_model_record,
    model_extraction_index,
    model_output_desensitize,
    model_use_allowed,
)
from custody.tokens import count_tokens
from training import sandbox
from training.exceptions import Conflict, Invalid, NotFound, NotPermitted
from training.models import BaseTask, InferenceCall, InferenceState, TrainingJob
from training.receipts import receipt_sha256
from training.runner.canaries import canaries_generate
from training.services.jobs import job_grants

logger = logging.getLogger(__name__)

SERVING_KIND = "training.inference"
SERVING_QUEUE = "serving"
MAX_PROMPTS = 16
MAX_PROMPT_CHARS = 8000
WITHHELD = "The answer was withheld: it reproduced data held in custody."
TASKS = {"generate": BaseTask.CAUSAL_LM, "classify": BaseTask.CLASSIFICATION}
# Control characters a prompt may hold; any other (or a lone surrogate, or U+FFFD) is binary junk.
_ALLOWED_CONTROLS = {"\t", "\n", "\r"}
_CODE = re.compile(r"\d{3} \d{3} \d{3}")
# A class is named only when this many records carry its value (else every class stays LABEL_<i>).
LABEL_MIN_RECORDS = 5
MAX_LABEL_CHARS = 100  # as the runner's spec allows a label name


# --- a succeeded job's model, recorded in custody -------------------------------------------------


def custody_model_register(*, job: TrainingJob, version: DatasetVersion, archive_sha256: str) -> CustodyModel:
    """Record a succeeded job's weights kept in custody as a custody model (the launcher calls it in
    the transaction that finishes the job). The lineage names each version with its mixing weight
    (a mixed job) and, for a distilled student, the teacher's settlement fields: what marketplace's
    model rights split a sale by (marketplace/services/model_rights.py)."""
    weights = {c.grant_id: c.weight_bps for c in job.components.all()}
    lineage: list[dict[str, Any]] = [
        {
            "version": grant.version.public_id,
            "merkle_root": grant.version.merkle_root,
            "license": grant.external_ref or grant.public_id,
            **({"weight_bps": weights[grant.pk]} if grant.pk in weights else {}),
        }
        for grant in job_grants(job)
    ]
    resolved = ((job.request or {}).get("distill") or {}).get("resolved") or {}
    if isinstance(resolved.get("settlement"), dict):
        lineage.append({"teacher": resolved.get("ref"), "settlement": resolved["settlement"]})
    final = job.metrics.get("final") if isinstance(job.metrics, dict) else None
    return custody_model_record(
        job_ref=job.public_id,
        version=version,
        trainer=job.organisation,
        artifact_name=f"training-job-{job.pk}",
        artifact_sha256=archive_sha256,
        receipt_sha256=receipt_sha256(job.receipt) if job.receipt else "",
        task=str(job.base.task),
        template=str(job.template),
        base_name=job.base.name,
        metrics=final if isinstance(final, dict) else {},
        lineage=lineage,
    )


# --- submit -------------------------------------------------------------------------------------


def _field(pointer: str, code: str, detail: str) -> FieldError:
    return {"pointer": pointer, "code": code, "detail": detail}


def model_license_grant(*, organisation: Organisation, model_ref: str) -> Grant:
    """The organisation's newest active model license on ``model_ref``.

    :raises NotFound: none (a model the caller holds no license for is not the caller's to see).
    """
    grant = (
        Grant.objects.filter(
            licensee=organisation, state=GrantState.ACTIVE, terms__kind="model", terms__model=model_ref
        )
        .select_related("version")
        .order_by("-pk")
        .first()
    )
    if grant is None or not is_public_id(model_ref, "job"):
        raise NotFound(
            f"No model you hold a license for is named {model_ref}.",
            code="training.model_not_licensed",
            errors=[_field("/model", "not_licensed", "Buy a model license on its listing first.")],
        )
    return grant


def _prompt_errors(prompts: Any) -> list[FieldError]:
    if not isinstance(prompts, list) or not 1 <= len(prompts) <= MAX_PROMPTS:
        return [_field("/prompts", "invalid", f"A list of 1..{MAX_PROMPTS} strings.")]
    errors = []
    for i, prompt in enumerate(prompts):
        pointer = f"/prompts/{i}"
        if not isinstance(prompt, str):
            errors.append(_field(pointer, "invalid", "A string."))
        elif not prompt.strip():
            errors.append(_field(pointer, "empty", "An empty prompt."))
        elif len(prompt) > MAX_PROMPT_CHARS:
            errors.append(_field(pointer, "too_long", f"At most {MAX_PROMPT_CHARS} characters."))
        elif any(
            (unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn") and ch not in _ALLOWED_CONTROLS)
            or ch == "\ufffd"
            for ch in prompt
        ):
            errors.append(_field(pointer, "binary", "Text only: no control characters or undecodable bytes."))
    return errors


@dataclass(frozen=True)
class InferenceRequest:
    model_ref: str
    task: str
    prompts: Any
    max_new_tokens: Any = 32
    idempotency_key: str = ""


def _terms_limits(grant: Grant) -> tuple[int, int | None]:
    inference = grant.terms.get("inference") or {}
    cap = inference.get("cap_tokens")
    return int(inference.get("max_tokens_per_call") or 0), (int(cap) if cap is not None else None)


def tokens_inferred(grant: Grant) -> int:
    """Platform tokens already metered under a model license."""
    used = UsageRecord.objects.filter(grant=grant, kind=UsageKind.TOKENS_INFERRED).aggregate(
        t=Sum("quantity")
    )
    return int(used["t"] or 0)


def _checked(grant: Grant, model: CustodyModel, request: InferenceRequest) -> tuple[list[str], int, int]:
    """(prompts, max new tokens, prompt tokens). :raises Invalid / NotPermitted / Conflict:"""
    if not model_use_allowed(grant.terms, "inference"):
        raise NotPermitted(
            "Your model license does not allow inference.",
            code="training.inference_not_allowed",
            errors=[_field("/terms/inference/allowed", "not_allowed", "The terms do not allow inference.")],
        )
    if TASKS.get(request.task) != model.task:
        raise Invalid(
            f"Model {model.job_ref} is a {model.task} model: use the other endpoint.",
            code="training.task_mismatch",
            errors=[_field("/model", "task_mismatch", f"A {model.task} model.")],
        )
    errors = _prompt_errors(request.prompts)
    per_call, cap = _terms_limits(grant)
    new = request.max_new_tokens if request.task == "generate" else 0
    if request.task == "generate" and (
        isinstance(new, bool) or not isinstance(new, int) or not 1 <= new <= per_call
    ):
        errors.append(
            _field("/max_new_tokens", "out_of_range", f"An integer 1..{per_call} (the terms' limit).")
        )
    if errors:
        raise Invalid(errors[0]["detail"], code="training.inference_invalid", errors=errors)
    prompts: list[str] = list(request.prompts)
    prompt_tokens = count_tokens(prompts)
    bound = sum(prompt_tokens) + int(new) * len(prompts)
    if bound > per_call:
        raise Invalid(
            f"This call may use {bound} platform tokens; the terms allow {per_call} per call.",
            code="training.too_many_tokens",
            errors=[_field("/prompts", "too_many_tokens", f"At most {per_call} tokens with max_new_tokens.")],
        )
    if cap is not None and tokens_inferred(grant) + bound > cap:
        raise Conflict(
            f"Your license's {cap} inference tokens would be exceeded by this call.",
            code="training.inference_cap_reached",
            errors=[_field("/terms/inference/cap_tokens", "cap_reached", "Buy a new license to go on.")],
        )
    return prompts, int(new), sum(prompt_tokens)


@transaction.atomic
def inference_submit(
    *, actor: User | None, organisation: Organisation, request: InferenceRequest
) -> InferenceCall:
    """Check and queue one call (idempotent per ``idempotency_key``).

    :raises NotFound: no such model, or no license for it.
    :raises NotPermitted: the license does not allow inference.
    :raises Invalid: bad prompts or token counts (pointers name them).
    :raises Conflict: the license's cap is reached or the license is unusable.
    """
    if request.idempotency_key:
        existing = InferenceCall.objects.filter(
            organisation=organisation, idempotency_key=request.idempotency_key
        ).first()
        if existing is not None:
            return existing
    grant = model_license_grant(organisation=organisation, model_ref=request.model_ref)
    try:
        custody.grant_check(grant)
    except CustodyConflict as exc:
        raise Conflict(
            f"Your model license cannot be used: {exc.detail}", code="training.license_unusable"
        ) from exc
    model = custody_model_get(job_ref=request.model_ref)
    prompts, new, prompt_tokens = _checked(grant, model, request)
    call = InferenceCall.objects.create(
        organisation=organisation,
        requested_by=actor,
        grant=grant,
        model_ref=model.job_ref,
        task=request.task,
        prompts=prompts,
        max_new_tokens=new,
        prompt_tokens=prompt_tokens,
        idempotency_key=request.idempotency_key,
    )
    audit_record(
        action="training.inference_submit",
        actor=actor,
        organisation=organisation,
        object_type="inference_call",
        object_id=call.public_id,
        details={"model": model.job_ref, "prompts": len(prompts), "prompt_tokens": prompt_tokens},
    )
    work_enqueue(kind=SERVING_KIND, ref=str(call.pk), queue=SERVING_QUEUE)
    return call


def inference_get(*, organisation: Organisation, public_id: str) -> InferenceCall:
    """The organisation's call. :raises NotFound:"""
    call = InferenceCall.objects.filter(organisation=organisation, public_id=public_id).first()
    if call is None:
        raise NotFound("No such inference call.", code="training.inference_not_found")
    return call


# --- run ------------------------------------------------------------------------------------------


@contextmanager
def _serving_dir(call: InferenceCall) -> Iterator[Path]:
    from training.launcher import work_root

    path = work_root() / f"serve-{call.pk}-{secrets.token_hex(4)}"
    path.mkdir(mode=0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _unpack(archive: bytes, into: Path) -> None:
    """The archive's ``model/`` files into ``into/model`` (plain files only)."""
    target = into / "model"
    target.mkdir(mode=0o700)
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix("model/")
            if not member.isfile() or "/" in name or name in ("", ".", "..") or name == "README.md":
                continue
            handle = tar.extractfile(member)
            if handle is not None:
                (target / name).write_bytes(handle.read())


def _limits() -> sandbox.Limits:
    return sandbox.Limits(
        memory_bytes=settings.TRAINING_MEMORY_BYTES,
        wall_seconds=float(settings.TRAINING_WALL_SECONDS),
        gpu_index=settings.TRAINING_GPU_INDEX,
        max_processes=settings.TRAINING_MAX_PROCESSES,
        disk_bytes=settings.TRAINING_DISK_BYTES,
    )


def run_model(calls: list[InferenceCall], model: CustodyModel) -> list[list[dict[str, Any]]]:
    """The runner's raw outputs for each call's prompts, all calls in one sandbox run (they share
    the model, the task and ``max_new_tokens``); the weights exist only in the sandbox's directory.

    :raises InferenceFailed: the runner refused the model or failed.
    """
    lead = calls[0]
    prompts = [prompt for call in calls for prompt in call.prompts]
    archive = custody_model_open(model=model, consumer_ref=lead.public_id, organisation=lead.organisation)
    outputs: dict[int, dict[str, Any]] = {}
    failure: dict[str, Any] = {}

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "output" and isinstance(event.get("id"), int):
            outputs[int(event["id"])] = event
        elif event.get("event") == "error":
            failure.update(event)

    names = label_names(model) if lead.task == "classify" else None
    with _serving_dir(lead) as workdir:
        _unpack(archive, workdir)
        del archive
        if names is not None:
            config_name_labels(workdir / "model" / "config.json", names)
        argv = [
            "serve",
            "--model",
            "model",
            "--task",
            lead.task,
            "--max-new-tokens",
            str(lead.max_new_tokens or 1),
        ]
        result = sandbox.run_runner(
            argv,
            workdir=workdir,
            limits=_limits(),
            stdin_records=[{"text": prompt} for prompt in prompts],
            on_event=on_event,
        )
    if result.exit_code != 0 or len(outputs) != len(prompts):
        detail = failure.get("detail") or result.reason or f"exit code {result.exit_code}"
        raise InferenceFailed(f"The model could not answer: {str(detail)[:300]}")
    answers, offset = [], 0
    for call in calls:
        answers.append([outputs[offset + i] for i in range(len(call.prompts))])
        offset += len(call.prompts)
    return answers


# --- classification: the classes' names, inside custody ---------------------------------------------

# The names of each classifier, per worker process (one audited read of its versions); None: unnamed.
_LABEL_NAMES: dict[str, list[str] | None] = {}


def _label_counts(job: TrainingJob, label_field: str, consumer_ref: str) -> Counter[str]:
    """How many records of the job's versions carry each value of ``label_field`` (read under the
    platform's gate grant, audited, as the guard's index is)."""
    counts: Counter[str] = Counter()
    for grant in job_grants(job):
        version = grant.version
        stream = custody.grant_stream_open(
            grant=custody.system_grant(version, GrantPurpose.GATE),
            consumer_ref=consumer_ref,
            purpose=GrantPurpose.GATE,
        )
        for batch in stream:
            for record in batch:
                value = (record.get("meta") or {}).get(label_field)
                if value is not None and value != "":
                    counts[str(value)] += 1
    return counts


def label_names(model: CustodyModel) -> list[str] | None:
    """A custody classifier's class names in ``LABEL_<i>`` order, or None where they cannot be
    named safely: not a classifier trained here, a vocabulary that does not match the one the job
    trained on (its receipt's hash), or a class with fewer than ``LABEL_MIN_RECORDS`` records."""
    if model.job_ref in _LABEL_NAMES:
        return _LABEL_NAMES[model.job_ref]
    from training.launcher import opaque_labels

    names: list[str] | None = None
    job = TrainingJob.objects.select_related("base", "grant__version").filter(public_id=model.job_ref).first()
    label_field = str((job.request or {}).get("label_field") or "") if job else ""
    labels = (job.metrics or {}).get("labels") if job and isinstance(job.metrics, dict) else None
    expected = labels.get("vocabulary_sha256") if isinstance(labels, dict) else None
    if job is not None and model.task == BaseTask.CLASSIFICATION and label_field and expected:
        counts = _label_counts(job, label_field, consumer_ref=f"labels:{model.job_ref}")
        _mapping, digest = opaque_labels(list(counts))
        if (
            digest == expected
            and counts
            and min(counts.values()) >= LABEL_MIN_RECORDS
            and max(len(name) for name in counts) <= MAX_LABEL_CHARS
        ):
            names = sorted(counts)  # LABEL_<i> is the i-th value of the sorted vocabulary
    _LABEL_NAMES[model.job_ref] = names
    return names


def config_name_labels(path: Path, names: list[str]) -> bool:
    """Write ``id2label``/``label2id`` with ``names`` into a classifier's ``config.json`` (the
    sandbox's copy); False, and the file untouched, when its head has another number of classes."""
    try:
        config = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return False  # the runner refuses the model with its own error
    if not isinstance(config, dict):
        return False
    # transformers leaves its two-label default out of a saved config.
    classes = len(config.get("id2label") or {}) or 2
    if classes != len(names):
        return False
    config["id2label"] = {str(i): name for i, name in enumerate(names)}
    config["label2id"] = {name: i for i, name in enumerate(names)}
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False))
    return True


class InferenceFailed(Exception):
    """The runner could not answer (the caller is told; retrying cannot help)."""


# The guard's index of each model, per worker process: built once (one audited read of the version).
_INDEXES: dict[str, tuple[ExtractionIndex, list[str]]] = {}


def _canary_secrets(model: CustodyModel) -> list[str]:
    from training.launcher import license_seed

    job = TrainingJob.objects.select_related("base").filter(public_id=model.job_ref).first()
    if job is None:
        return []
    document = canaries_generate(
        count=settings.TRAINING_CANARIES,
        candidates=settings.TRAINING_CANARY_CANDIDATES,
        seed=license_seed(job, "canaries"),
    )
    return [str(c["secret"]) for c in document["canaries"]]


def guard_index(model: CustodyModel) -> tuple[ExtractionIndex, list[str]]:
    """The model's extraction index and canary codes (cached in this process)."""
    cached = _INDEXES.get(model.job_ref)
    if cached is None:
        canaries = _canary_secrets(model)
        index = model_extraction_index(model=model, consumer_ref=f"guard:{model.job_ref}", secrets=canaries)
        codes = [m.group(0) for secret in canaries for m in _CODE.finditer(secret)]
        cached = _INDEXES[model.job_ref] = (index, codes)
    return cached


def guard_outputs(model: CustodyModel, prompts: list[str], texts: list[str]) -> list[dict[str, Any]]:
    """Each text guarded: withheld when it reproduces a canary or a record, else desensitized."""
    index, codes = guard_index(model)
    verdicts = [
        any(code in " ".join(text.split()) for code in codes) or index.reproduces(prompt, text)
        for prompt, text in zip(prompts, texts, strict=True)
    ]
    passed = [text for text, withheld in zip(texts, verdicts, strict=True) if not withheld]
    clean = iter(model_output_desensitize(model=model, texts=passed))
    return [
        {"text": "", "withheld": True, "detail": WITHHELD}
        if withheld
        else {"text": next(clean), "withheld": False}
        for withheld in verdicts
    ]


def _finish(call: InferenceCall, *, outputs: list[dict[str, Any]], output_tokens: int) -> None:
    with transaction.atomic():
        locked = InferenceCall.objects.select_for_update().get(pk=call.pk)
        if locked.state in (InferenceState.SUCCEEDED, InferenceState.FAILED):
            return
        quantity = locked.prompt_tokens + output_tokens
        custody.usage_record(
            grant=locked.grant,
            consumer_ref=locked.public_id,
            kind=UsageKind.TOKENS_INFERRED,
            quantity=quantity,
        )
        locked.state = InferenceState.SUCCEEDED
        locked.outputs = outputs
        locked.withheld = sum(1 for o in outputs if o.get("withheld"))
        locked.output_tokens = output_tokens
        locked.prompts = []
        locked.finished_at = timezone.now()
        locked.save()
        audit_record(
            action="training.inference_call",
            organisation=locked.organisation,
            object_type="inference_call",
            object_id=locked.public_id,
            details={
                "model": locked.model_ref,
                "prompt_tokens": locked.prompt_tokens,
                "output_tokens": output_tokens,
                "withheld": locked.withheld,
            },
        )


def _fail(call: InferenceCall, code: str, detail: str) -> None:
    InferenceCall.objects.filter(
        pk=call.pk, state__in=[InferenceState.QUEUED, InferenceState.RUNNING]
    ).update(
        state=InferenceState.FAILED,
        error_code=code,
        error_detail=detail[:500],
        prompts=[],
        finished_at=timezone.now(),
    )


def _answer(calls: list[InferenceCall], model: CustodyModel, answers: list[list[dict[str, Any]]]) -> None:
    """Guard, meter and finish each call of a batch. The guard and the desensitizer run once over
    the whole batch (the desensitizer's cost is mostly per run, not per text); each call still
    finishes in its own transaction, its usage recorded once."""
    if calls[0].task != "generate":
        for call, raw in zip(calls, answers, strict=True):
            outputs = [{"label": str(o.get("label")), "score": o.get("score")} for o in raw]
            _finish(call, outputs=outputs, output_tokens=0)
        return
    texts = [[str(o.get("text", "")) for o in raw] for raw in answers]
    flat = [text for each in texts for text in each]
    guarded = iter(guard_outputs(model, [p for call in calls for p in call.prompts], flat))
    tokens = iter(count_tokens(flat))
    for call, each in zip(calls, texts, strict=True):
        outputs = [next(guarded) for _ in each]
        _finish(call, outputs=outputs, output_tokens=sum(next(tokens) for _ in each))


def inference_run(*, call_id: int, final_attempt: bool = False, batch: list[int] | None = None) -> None:
    """Run one call, with the calls of ``batch`` (ids) in the same sandbox run; safe to run again
    (a final call is left alone; each call's usage is recorded once)."""
    ids = [call_id, *(batch or [])]
    calls = list(
        InferenceCall.objects.select_related("grant", "organisation").filter(pk__in=ids).order_by("pk")
    )
    calls = [c for c in calls if c.state not in (InferenceState.SUCCEEDED, InferenceState.FAILED)]
    if not calls:
        return
    InferenceCall.objects.filter(pk__in=[c.pk for c in calls], state=InferenceState.QUEUED).update(
        state=InferenceState.RUNNING
    )
    usable = []
    for call in calls:
        try:
            custody.grant_check(call.grant)
            usable.append(call)
        except CustodyConflict as exc:
            _fail(call, "training.license_unusable", f"The model license cannot be used: {exc.detail}")
    if not usable:
        return
    try:
        model = custody_model_get(job_ref=usable[0].model_ref)
        answers = run_model(usable, model)
    except (CustodyConflict, NotFound) as exc:
        for call in usable:
            _fail(call, "training.model_unavailable", f"The model cannot be served: {exc}")
        return
    except InferenceFailed as exc:
        for call in usable:
            _fail(call, "training.inference_failed", str(exc))
        return
    except Exception:
        if final_attempt:
            for call in usable:
                _fail(call, "training.internal_error", "The call stopped on an internal error.")
        raise
    _answer(usable, model, answers)


# --- the work item: one call, and the queued calls it can batch with ---------------------------------


def _followers(item: WorkItem) -> list[WorkItem]:
    """Unfinished calls of the same model, task and length whose work items this worker can claim
    too: queued ones, and those a dead worker left running (state ``running``, the item requeued or
    its lease expired), so that recovering a killed batch is one sandbox run again, not one each."""
    call = InferenceCall.objects.filter(pk=int(item.ref)).first()
    if call is None or settings.SERVING_BATCH_CALLS <= 1:
        return []
    wanted = settings.SERVING_BATCH_CALLS - 1
    candidates = (
        InferenceCall.objects.filter(
            model_ref=call.model_ref,
            task=call.task,
            max_new_tokens=call.max_new_tokens,
            state__in=[InferenceState.QUEUED, InferenceState.RUNNING],
        )
        .exclude(pk=call.pk)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    claimable = Q(state=WorkState.QUEUED) | Q(state=WorkState.RUNNING, lease_expires_at__lt=timezone.now())
    # Calls running under a live lease (another worker's batch) are passed over, not waited for.
    items = WorkItem.objects.filter(
        claimable, kind=SERVING_KIND, ref__in=[str(pk) for pk in candidates[: 4 * wanted]]
    )
    claimed = []
    for other in items.order_by("pk"):
        taken = work_claim(item_id=other.pk, owner=item.lease_owner)
        if taken is not None:
            claimed.append(taken)
            if len(claimed) == wanted:
                break
    return claimed


@contextmanager
def _leases_kept(items: list[WorkItem], owner: str) -> Iterator[None]:
    """Renew the followers' leases from one thread while the batch runs (the leader's own lease is
    renewed by ``work_run``). A worker killed here lets them lapse: the sweep re-queues each."""
    stop = threading.Event()
    interval = max(settings.WORK_LEASE_SECONDS / 3, 0.5)

    def beat() -> None:
        try:
            while not stop.wait(interval):
                for other in items:
                    work_heartbeat(item_id=other.pk, owner=owner)
        finally:
            connections.close_all()

    thread = threading.Thread(target=beat, name="serving-batch-leases", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval + 5)


@work_handler(SERVING_KIND)
def _inference_handler(item: WorkItem) -> None:
    followers = _followers(item)
    owner = item.lease_owner
    try:
        with _leases_kept(followers, owner):
            inference_run(
                call_id=int(item.ref),
                final_attempt=item.attempts >= item.max_attempts,
                batch=[int(other.ref) for other in followers],
            )
    except Exception:
        for other in followers:
            work_fail(item_id=other.pk, owner=owner, error="its batch failed", retryable=True)
        raise
    for other in followers:
        work_complete(item_id=other.pk, owner=owner)
