"""The launcher: runs one attempt of a training job on a training worker.

claim (``common.work``) -> re-check the license (``grant_job_reserve``) -> open the
custody stream once -> map records to runner input, mix in secret canaries ->
``run_runner("train")`` in the sandbox, records piped, progress saved (throttled)
-> ``output_check`` -> ``run_runner("gate")`` with the license's threshold ->
store the artifact (as a download, or encrypted in custody) and sign a receipt ->
usage and privacy budget -> succeeded. Plaintext records exist only in this
process's memory and the sandbox's pipe; the private working directory holds the
spec, the canaries and the output, and is removed afterwards, also on failure.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import random
import secrets
import shutil
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from common.blobs import blob_store
from common.models import WorkItem
from common.work import work_handler
from custody import services as custody
from custody.exceptions import Conflict as CustodyConflict
from custody.models import Contribution, DatasetVersion, Grant, GrantPurpose, GrantState, UsageKind
from custody.services.valuation import valuation_flags_record
from custody.services.valuation_summary import valuation_summary_record
from custody.tokens import count_tokens
from training import sandbox
from training.model_card import CARD_NAME, model_card
from training.models import (
    BaseKind,
    BaseTask,
    JobGrant,
    JobState,
    TrainingJob,
)
from training.receipts import receipt_body, receipt_sha256, receipt_sign
from training.runner.canaries import canaries_generate, canary_records
from training.services import serving
from training.services.bases import base_unpack
from training.services.custody_models import custody_model_start, model_license_usage_record
from training.services.jobs import WORK_KIND, job_event, job_finish, job_grants, telemetry_block
from training.services.mixed_jobs import planned_tokens

logger = logging.getLogger(__name__)

EXIT_REASONS = {
    2: ("training.spec_rejected", "The runner refused the job's spec"),
    3: ("training.input_rejected", "The runner could not use the input"),
    4: ("training.gate_failed", "The release gate refused the trained model"),
}


class LaunchFailure(Exception):
    """An attempt failed for a reason the trainer can act on; retrying cannot help.

    The message is shown to the trainer: it must never quote a record.
    """

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class LaunchCancelled(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- the working directory ------------------------------------------------------------------


def work_root() -> Path:
    root = Path(settings.TRAINING_WORK_DIR)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return root


def workdirs_of(job_id: int) -> list[Path]:
    """Working directories left for a job (a dead worker's attempt leaves one)."""
    return sorted(work_root().glob(f"job-{job_id}-*"))


@contextmanager
def private_workdir(job: TrainingJob) -> Iterator[Path]:
    """A fresh 0700 directory for this attempt, removed afterwards (and any earlier attempt's)."""
    for stale in workdirs_of(job.pk):
        shutil.rmtree(stale, ignore_errors=True)
    path = work_root() / f"job-{job.pk}-a{job.attempts}-{secrets.token_hex(4)}"
    path.mkdir(mode=0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# --- records ----------------------------------------------------------------------------------


@dataclass
class Inputs:
    """The runner's records (each with its platform tokens), the gate's probes, the opaque labels."""

    records: list[dict[str, Any]]
    probes: list[dict[str, Any]]
    labels: list[str] = field(default_factory=list)
    label_vocabulary_sha256: str = ""
    platform_tokens: int = 0  # of the records streamed, canaries excluded
    # The contributions read, by the runner's source number (a record's ``source`` is its index).
    sources: list[int] = field(default_factory=list)
    # Platform tokens streamed per source (the fallback weights when the runner's counts round to 0).
    source_tokens: list[int] = field(default_factory=list)


def opaque_labels(values: list[str]) -> tuple[dict[str, str], str]:
    """Map label values to ``LABEL_<i>`` (i: rank in the sorted vocabulary); returns the map and its hash.

    Label values are metadata of custody records and leave custody only as these ids: the spec,
    the receipt and the model's ``id2label`` name no value. The hash (sha256 of the sorted
    vocabulary as JSON) lets a provider, who knows the values, check the mapping; it also confirms
    a guessed vocabulary, so it is a commitment, not a secret (docs/training.md).
    """
    vocabulary = sorted(set(values))
    digest = hashlib.sha256(json.dumps(vocabulary, ensure_ascii=False).encode()).hexdigest()
    return {value: f"LABEL_{i}" for i, value in enumerate(vocabulary)}, digest


def record_text(value: Any) -> str:
    """A custody record's text: its text fields (a mapping, in upload order) joined by newlines."""
    if isinstance(value, dict):
        return "\n".join(str(v) for v in value.values() if v)
    return str(value)


def _inputs(job: TrainingJob) -> Inputs:
    """Read the job's stream once (one audited open per attempt) and map it to runner records.

    A mixed job (issue 17 item 3) opens one stream per license and keeps of each version the
    share of platform tokens its weight gives (``_mix``).
    """
    components = list(job.components.select_related("grant__version").order_by("position"))
    grants = [c.grant for c in components] or [job.grant]
    classification = job.base.task == BaseTask.CLASSIFICATION
    label_field = str(job.request.get("label_field") or "")
    records: list[dict[str, Any]] = []
    sources: dict[int, int] = {}
    unlabelled = 0
    per_grant: list[list[dict[str, Any]]] = []
    for grant in grants:
        stream = custody.grant_stream_open(grant=grant, consumer_ref=job.consumer_ref, purpose="license")
        mine: list[dict[str, Any]] = []
        for batch in stream:
            for record in batch:
                text = record_text(record["text"])
                # The runner meters what its steps read per source; the launcher maps them back.
                source = sources.setdefault(int(record["contribution"]), len(sources))
                if not classification:
                    mine.append({"text": text, "source": source})
                    continue
                label = (record.get("meta") or {}).get(label_field)
                if label is None or label == "":
                    unlabelled += 1
                    continue
                mine.append({"text": text, "label": str(label), "source": source})
        per_grant.append(mine)
    records = _mix(job, components, per_grant) if components else per_grant[0]
    if unlabelled:
        raise LaunchFailure(
            "training.labels_missing",
            f"{unlabelled} record(s) have no value in the metadata field {label_field!r}; "
            "choose the field that labels every record.",
        )
    inputs = Inputs(
        records=records,
        probes=[],
        platform_tokens=(
            sum(r["platform_tokens"] for r in records) if components else _count_platform_tokens(records)
        ),
        sources=list(sources),
        source_tokens=[0] * len(sources),
    )
    for record in records:
        inputs.source_tokens[record["source"]] += record["platform_tokens"]
    if classification:
        _relabel(inputs, label_field)
    rng = random.Random(license_seed(job, "probes"))
    inputs.probes = [
        {"text": r["text"]} for r in rng.sample(records, min(len(records), settings.TRAINING_GATE_PROBES))
    ]
    return inputs


def _mix(
    job: TrainingJob, components: list[JobGrant], per_grant: list[list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Keep of each version the platform tokens its weight gives, records drawn in a seeded order
    (the same on every attempt), then interleave the versions' records in a seeded order.

    Each version gives ``planned_tokens`` of what it streamed (no record twice), never more than
    the job planned for it at submit (what its license was checked for).
    """
    streamed = [_count_platform_tokens(records) for records in per_grant]
    shares = planned_tokens(streamed, [c.weight_bps for c in components])
    rng = random.Random(license_seed(job, "mix"))
    mixed: list[dict[str, Any]] = []
    for component, records, share in zip(components, per_grant, shares, strict=True):
        budget = min(share, component.tokens_planned // max(job.epochs, 1))
        order = list(range(len(records)))
        rng.shuffle(order)
        taken = 0
        for index in order:
            tokens = records[index]["platform_tokens"]
            if taken + tokens <= budget:
                mixed.append(records[index])
                taken += tokens
    rng.shuffle(mixed)
    return mixed


def _count_platform_tokens(records: list[dict[str, Any]], chunk: int = 1024) -> int:
    """Give each runner record its platform tokens (custody's tokenizer); returns their sum.

    The runner bills the records its steps consume by these counts, whatever its base's tokenizer.
    """
    total = 0
    for start in range(0, len(records), chunk):
        part = records[start : start + chunk]
        for record, tokens in zip(part, count_tokens([r["text"] for r in part]), strict=True):
            record["platform_tokens"] = tokens
            total += tokens
    return total


def _relabel(inputs: Inputs, label_field: str) -> None:
    """Replace the records' label values by opaque ids. :raises LaunchFailure: fewer than 2 labels."""
    mapping, digest = opaque_labels([r["label"] for r in inputs.records])
    if len(mapping) < 2:
        raise LaunchFailure(
            "training.labels_missing",
            f"The metadata field {label_field!r} holds {len(mapping)} distinct label(s); "
            "classification needs at least 2.",
        )
    for record in inputs.records:
        record["label"] = mapping[record["label"]]
    inputs.labels = [f"LABEL_{i}" for i in range(len(mapping))]
    inputs.label_vocabulary_sha256 = digest


def license_seed(job: TrainingJob, purpose: str) -> int:
    """A secret seed fixed per (license, base): the gate draws the same canaries and probes on every
    attempt, so a retry meets the same test (issue 20, item 6). Keyed by the platform's secret."""
    message = f"{purpose}:{job.grant_id}:{job.base.file_hash}".encode()
    return int.from_bytes(
        hmac.new(settings.SECRET_KEY.encode(), message, hashlib.sha256).digest()[:16], "big"
    )


def _mix_canaries(inputs: Inputs, workdir: Path, job: TrainingJob) -> None:
    """Write the canaries document and mix each secret into the training records (causal templates)."""
    doc = canaries_generate(
        count=settings.TRAINING_CANARIES,
        candidates=settings.TRAINING_CANARY_CANDIDATES,
        seed=license_seed(job, "canaries"),
    )
    (workdir / "canaries.json").write_text(json.dumps(doc))
    if job.base.task != BaseTask.CAUSAL_LM:
        return
    rng = random.Random(secrets.randbits(64))
    for record in canary_records(doc, repeats=settings.TRAINING_CANARY_REPEATS):
        inputs.records.insert(rng.randint(0, len(inputs.records)), record)


# --- progress ------------------------------------------------------------------------------


def significant(value: float, digits: int) -> float:
    """``value`` rounded to ``digits`` significant digits (what a published metric may carry)."""
    return float(f"{value:.{digits}g}")


# What a published metric may be called: anything else the runner says stays in the sandbox.
VALIDATION_KEYS = ("loss", "perplexity", "accuracy", "f1_macro")
FINAL_KEYS = (
    "steps",
    "platform_tokens_trained",
    "train_loss",
    "validation_loss",
    "validation_perplexity",
    "validation_accuracy",
    "validation_f1_macro",
    "epsilon_metrics",
    "device",
    "precision",
    "world_size",
)


class Recorder:
    """Saves the runner's events on the job: progress throttled, the first one marks training begun.

    It is also the last check on what the trainer can read (docs/threat-model.md): loss only as
    a mean over a window of at least TRAINING_METRICS_WINDOW_RECORDS records and
    TRAINING_METRICS_WINDOW_TOKENS platform tokens, rounded, at most TRAINING_LOSS_CURVE_POINTS
    of them per attempt; none under DP until the noised final metrics, after the gate.
    """

    def __init__(self, job: TrainingJob) -> None:
        self.job = job
        self.protected = bool(settings.TRAINING_TELEMETRY_PROTECTED)
        self.withheld = self.protected and bool(job.spec.get("dp"))
        self.digits = int(settings.TRAINING_METRICS_DIGITS) if self.protected else 6
        self.points = 0
        self.last_write = 0.0
        self.last_cancel_check = 0.0
        self.curve: list[list[float]] = list(job.loss_curve or [])
        self.error: dict[str, Any] | None = None
        self.done: dict[str, Any] | None = None
        self.gate: dict[str, Any] | None = None
        self.cancel_reason = ""

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "progress":
            self._progress(event)
        elif kind == "metrics":
            self._began()
            if self.withheld or self.points >= settings.TRAINING_LOSS_CURVE_POINTS:
                return
            self.points += 1
            values = {k: self._round(event.get(k)) for k in VALIDATION_KEYS if _number(event.get(k))}
            self.job.metrics.setdefault("validation", []).append(
                {"epoch": _int_or_none(event.get("epoch")), **values}
            )
            self._save(force=True)
        elif kind == "privacy":
            self.job.metrics["privacy"] = {k: v for k, v in event.items() if k != "event" and _plain(v)}
        elif kind == "done":
            self._began()
            self.done = event
        elif kind == "gate":
            self.gate = event
        elif kind == "error":
            self.error = event

    def _began(self) -> None:
        if self.job.training_started_at is not None:
            return
        with transaction.atomic():
            self.job.training_started_at = timezone.now()
            self.job.save(update_fields=["training_started_at"])
            for grant in job_grants(self.job):
                custody.usage_record(
                    grant=grant,
                    consumer_ref=self.job.consumer_ref,
                    kind=UsageKind.JOB_STARTED,
                    quantity=1,
                )
            job_event(self.job, "training", "Training began.")

    def _round(self, value: Any) -> float:
        return significant(float(value), self.digits)

    def _window_ok(self, event: dict[str, Any]) -> bool:
        """A loss the trainer may see: a full window's mean, not withheld, under the cap."""
        if self.withheld or self.points >= settings.TRAINING_LOSS_CURVE_POINTS:
            return False
        if not self.protected:
            return True
        records, tokens = _int_or_none(event.get("window_records")), _int_or_none(event.get("window_tokens"))
        return (
            records is not None
            and tokens is not None
            and records >= settings.TRAINING_METRICS_WINDOW_RECORDS
            and tokens >= settings.TRAINING_METRICS_WINDOW_TOKENS
        )

    def _progress(self, event: dict[str, Any]) -> None:
        self._began()
        job = self.job
        job.step = int(event.get("step") or 0)
        job.total_steps = _int_or_none(event.get("total_steps"))
        job.epoch = float(event.get("epoch") or 0)
        eta = _float_or_none(event.get("eta_s"))
        job.eta_s = significant(eta, 2) if eta is not None and self.protected else eta
        loss = _float_or_none(event.get("loss"))
        if loss is not None and self._window_ok(event):
            self.points += 1
            job.loss = self._round(loss)
            rate = _float_or_none(event.get("tokens_per_s"))
            job.tokens_per_s = significant(rate, 2) if rate is not None and self.protected else rate
            self.curve.append([job.step, job.loss])
        self._save()

    def _save(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_write < settings.TRAINING_PROGRESS_WRITE_SECONDS:
            return
        self.last_write = now
        job = self.job
        job.loss_curve = self.curve
        job.progress_at = timezone.now()
        job.updated_at = job.progress_at
        job.save(
            update_fields=[
                "step",
                "total_steps",
                "epoch",
                "loss",
                "tokens_per_s",
                "eta_s",
                "loss_curve",
                "metrics",
                "progress_at",
                "updated_at",
            ]
        )

    def final_metrics(self, final: Any) -> dict[str, Any]:
        """The run's closing metrics as the trainer may read them: named keys, rounded numbers.

        Under DP the runner noised the validation ones (and counted that in epsilon_spent); a
        validation split smaller than a window reports none.
        """
        if not isinstance(final, dict):
            return {}
        metrics: dict[str, Any] = {}
        for key in FINAL_KEYS:
            value = final.get(key)
            if key in ("device", "precision"):
                if isinstance(value, str):
                    metrics[key] = value[:16]
            elif key in ("steps", "platform_tokens_trained", "world_size"):
                count = _int_or_none(value)
                if count is not None:
                    metrics[key] = count
            elif _number(value):
                metrics[key] = self._round(value)
        return metrics

    def flush(self) -> None:
        self._save(force=True)

    def should_cancel(self, *, force: bool = False) -> bool:
        """Polled by the sandbox: a cancel request, or a license revoked or expired meanwhile."""
        now = time.monotonic()
        if not force and now - self.last_cancel_check < settings.TRAINING_CANCEL_POLL_SECONDS:
            return bool(self.cancel_reason)
        self.last_cancel_check = now
        row = TrainingJob.objects.filter(pk=self.job.pk).values("cancel_requested_at").first()
        if row is None or row["cancel_requested_at"] is not None:
            self.cancel_reason = "Cancelled on request."
        else:
            grant_ids = [self.job.grant_id, *self.job.components.values_list("grant_id", flat=True)]
            rows = list(Grant.objects.filter(pk__in=grant_ids).values("state", "expires_at"))
            moment = timezone.now()
            if len(rows) < len(set(grant_ids)) or any(g["state"] == GrantState.REVOKED for g in rows):
                self.cancel_reason = "Stopped: the license was revoked."
            elif any(g["expires_at"] is not None and g["expires_at"] <= moment for g in rows):
                self.cancel_reason = "Stopped: the license expired."
        return bool(self.cancel_reason)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _plain(value: Any) -> bool:
    return isinstance(value, int | float | str | bool) or value is None


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _float_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value == value else None  # NaN stays out of the database


# --- the attempt ------------------------------------------------------------------------------


def _limits(devices: int = 1) -> sandbox.Limits:
    """The sandbox's limits; memory and processes are per training process (DDP rank)."""
    return sandbox.Limits(
        memory_bytes=settings.TRAINING_MEMORY_BYTES,
        wall_seconds=float(settings.TRAINING_WALL_SECONDS),
        gpu_index=settings.TRAINING_GPU_INDEX,
        max_processes=settings.TRAINING_MAX_PROCESSES,
        disk_bytes=settings.TRAINING_DISK_BYTES,
        devices=devices,
    )


def _failure(result: sandbox.RunResult, recorder: Recorder, what: str) -> LaunchFailure:
    code, title = EXIT_REASONS.get(result.exit_code, ("training.runner_failed", f"The {what} failed"))
    if recorder.error is not None:
        detail = f"{recorder.error.get('field', '')}: {recorder.error.get('detail', '')}".strip(": ")
        return LaunchFailure(code, f"{title}: {detail}"[:1000])
    return LaunchFailure(code, f"{title}: {result.reason or f'exit code {result.exit_code}'}"[:1000])


def _train(job: TrainingJob, workdir: Path, inputs: Inputs, recorder: Recorder) -> None:
    result = sandbox.run_runner(
        ["train", "--spec", "spec.json", "--out", "out"],
        workdir=workdir,
        limits=_limits(devices=int(job.spec.get("devices") or 1)),
        stdin_records=inputs.records,
        on_event=recorder,
        should_cancel=recorder.should_cancel,
    )
    recorder.flush()
    if recorder.cancel_reason and result.exit_code != 0:
        raise LaunchCancelled(recorder.cancel_reason)
    if result.exit_code != 0 or recorder.done is None:
        raise _failure(result, recorder, "training")
    problems = sandbox.output_check(workdir / "out", max_bytes=settings.TRAINING_OUTPUT_MAX_BYTES)
    if problems:
        raise LaunchFailure(
            "training.output_rejected", "The trained output failed its checks: " + "; ".join(problems)
        )


def _unrun_withholds(job: TrainingJob) -> bool:
    """Whether a gate check that could not run withholds the model: the license decides."""
    mix = job.request.get("mix")
    value = (
        mix.get("gate_unrun_withholds")
        if isinstance(mix, dict)
        else job.grant.terms.get("gate_unrun_withholds")
    )
    return bool(settings.TRAINING_GATE_UNRUN_WITHHOLDS if value is None else value)


def _gate(job: TrainingJob, workdir: Path, inputs: Inputs, recorder: Recorder) -> dict[str, Any]:
    command = [
        "gate",
        "--model",
        "out",
        "--spec",
        "spec.json",
        "--canaries",
        "canaries.json",
        "--probes",
        "-",
    ]
    if job.base.kind == BaseKind.UPLOADED or job.custody_model_id is not None:
        command += ["--base", "base"]
    result = sandbox.run_runner(
        command,
        workdir=workdir,
        limits=_limits(),
        stdin_records=inputs.probes,
        on_event=recorder,
        should_cancel=recorder.should_cancel,
    )
    gate = {
        k: v
        for k, v in (recorder.gate or {}).items()
        if k != "event" and (_plain(v) or k in ("exposures", "checks"))
    }
    checks = gate.get("checks")
    unrun = sorted(k for k, v in checks.items() if v == "not_run") if isinstance(checks, dict) else []
    if result.exit_code == 0 and unrun and _unrun_withholds(job):
        gate["passed"] = False
        gate["reason"] = (
            f"the {' and '.join(unrun)} check could not run on this data, and the license requires it"
        )
    job.gate = gate
    job.save(update_fields=["gate"])
    if recorder.cancel_reason and result.exit_code != 0:
        raise LaunchCancelled(recorder.cancel_reason)
    if (result.exit_code == 4 and recorder.gate is not None) or gate.get("passed") is False:
        raise LaunchFailure(
            "training.gate_failed",
            f"The release gate withheld the model: {gate.get('reason') or 'it failed a check'}. "
            "Train for fewer epochs, use a lower learning rate, or enable DP.",
        )
    if result.exit_code != 0 or recorder.gate is None:
        raise _failure(result, recorder, "release gate")
    return gate


def _artifact_files(out_dir: Path) -> list[dict[str, Any]]:
    """Each output file's name, size and sha256 (what the receipt lists)."""
    files = []
    for path in sorted(out_dir.iterdir()):
        data = path.read_bytes()
        files.append({"name": path.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()})
    return files


def _artifact_archive(out_dir: Path, card: str | None = None) -> tuple[bytes, list[dict[str, Any]]]:
    """A tar.gz of the output directory's files under ``model/``, with the model card as README.md,
    and each output file's name, size and sha256 (the card is not among them: it names the receipt)."""
    buffer = io.BytesIO()
    members = [(path.name, path.read_bytes()) for path in sorted(out_dir.iterdir())]
    if card is not None:
        members.append((CARD_NAME, card.encode()))
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name=f"model/{name}")
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), _artifact_files(out_dir)


def artifact_blob_key(job: TrainingJob) -> str:
    return f"training/artifacts/job-{job.pk}.tar.gz"


def _tokens_bound(job: TrainingJob, version: DatasetVersion, inputs: Inputs) -> int:
    """The most a job can be billed: the streamed records' platform tokens x epochs, never more
    than the sealed version's tokens x epochs."""
    if job.request.get("mix"):
        # A mixed job streamed from several versions: never more than it planned for them.
        return min(inputs.platform_tokens * job.epochs, job.tokens_planned)
    return min(inputs.platform_tokens, int(version.tokens)) * job.epochs


def tokens_billed(done: dict[str, Any], *, bound: int) -> int:
    """The runner's count of the platform tokens it trained on, checked against the upper bound.

    :raises LaunchFailure: the runner reported no usable count (a runner defect, never billed as
    the bound: a job is billed what it trained, not what it might have).
    """
    reported = done.get("tokens_trained")
    if isinstance(reported, bool) or not isinstance(reported, int) or reported < 0:
        raise LaunchFailure(
            "training.runner_failed", "The runner did not report how many platform tokens it trained."
        )
    if reported > bound:
        logger.warning(
            "runner reported %s platform tokens, over the bound %s: billing the bound", reported, bound
        )
    return min(reported, bound)


def apportion(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights`` by largest remainder (ties to the lower index):
    integers that add up to ``total`` exactly, each within one of its exact share."""
    weight = sum(weights)
    if weight == 0:
        raise ValueError("nothing to apportion by")
    exact = [total * w for w in weights]
    parts = [value // weight for value in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] % weight), i))
    for index in order[: total - sum(parts)]:
        parts[index] += 1
    return parts


def reads_by_contribution(done: dict[str, Any], inputs: Inputs, *, billed: int) -> dict[int, int]:
    """The platform tokens the job read per contribution, adding up to exactly what it is billed.

    The runner reports its steps' reads per source (their expectation under DP, like the bill);
    where the bill differs from their sum (the bound applied, or per-source rounding under DP),
    the bill is apportioned by them, or by the tokens streamed per source if they are all zero.

    :raises LaunchFailure: the runner reported no usable counts (a runner defect, as for the bill).
    """
    reported = done.get("tokens_by_source")
    if (
        not isinstance(reported, list)
        or len(reported) > len(inputs.sources)
        or any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in reported)
    ):
        raise LaunchFailure(
            "training.runner_failed",
            "The runner did not report how many platform tokens it read from each contribution.",
        )
    counts = [*reported, *[0] * (len(inputs.sources) - len(reported))]
    if not billed:
        return {}
    if sum(counts) != billed:
        counts = apportion(billed, counts if any(counts) else inputs.source_tokens)
    return {contribution: n for contribution, n in zip(inputs.sources, counts, strict=True) if n}


def _reads_by_component(
    components: list[JobGrant], reads: dict[int, int]
) -> list[tuple[JobGrant, dict[int, int]]]:
    """A mixed job's reads split by the version each contribution belongs to (empty for one license)."""
    if not components:
        return []
    version_of = dict(Contribution.objects.filter(pk__in=list(reads)).values_list("pk", "version_id"))
    return [
        (c, {pk: n for pk, n in reads.items() if version_of.get(pk) == c.grant.version_id})
        for c in components
    ]


def _release(
    job: TrainingJob, workdir: Path, recorder: Recorder, version: DatasetVersion, inputs: Inputs
) -> None:
    mix = job.request.get("mix")
    may_leave = bool(
        mix["weights_may_leave"] if isinstance(mix, dict) else job.grant.terms.get("weights_may_leave")
    )
    # Weights derived from a model held in custody stay there (training/services/custody_models.py).
    may_leave = may_leave and job.custody_model_id is None
    if may_leave and job.request.get("distill"):  # a custody teacher's student stays in custody too
        from training.services.distillation import distill_keeps_in_custody

        may_leave = not distill_keeps_in_custody(job)
    done = recorder.done or {}
    epsilon = done.get("epsilon_spent")
    job.artifact_encrypted = not may_leave
    job.artifact_files = _artifact_files(workdir / "out")
    job.epsilon_spent = Decimal(str(round(float(epsilon), 4))) if isinstance(epsilon, int | float) else None
    job.tokens_trained = tokens_billed(done, bound=_tokens_bound(job, version, inputs))
    reads = reads_by_contribution(done, inputs, billed=job.tokens_trained)
    job.metrics["final"] = recorder.final_metrics(done.get("metrics"))
    components = list(job.components.select_related("grant__version").order_by("position"))
    billed = _reads_by_component(components, reads)
    # Signed before the archive is built: the model card in it names the receipt's hash.
    job.receipt = receipt_sign(receipt_body(job, version=version, reads=reads, components=billed))
    card = model_card(job, job.receipt, receipt_sha256(job.receipt))
    archive, _files = _artifact_archive(workdir / "out", card)
    if may_leave:
        key = artifact_blob_key(job)
        blob_store().put(key, io.BytesIO(archive))
    else:
        key = custody.artifact_seal(version=version, name=f"training-job-{job.pk}", data=archive)
    with transaction.atomic():
        job.artifact_blob_key = key
        job.artifact_size = len(archive)
        job.save(
            update_fields=[
                "artifact_blob_key",
                "artifact_encrypted",
                "artifact_files",
                "artifact_size",
                "epsilon_spent",
                "tokens_trained",
                "metrics",
                "receipt",
            ]
        )
        if not billed:
            custody.usage_record(
                grant=job.grant,
                consumer_ref=job.consumer_ref,
                kind=UsageKind.TOKENS_TRAINED,
                quantity=job.tokens_trained,
                by_contribution=reads,
            )
        # A mixed job: each license is billed the tokens read from its own version.
        for component, its_reads in billed:
            component.tokens_trained = sum(its_reads.values())
            component.save(update_fields=["tokens_trained"])
            custody.usage_record(
                grant=component.grant,
                consumer_ref=job.consumer_ref,
                kind=UsageKind.TOKENS_TRAINED,
                quantity=component.tokens_trained,
                by_contribution=its_reads,
            )
        # Another organisation's model used under a model license (a teacher, a base): metered there.
        model_license_usage_record(job, tokens=job.tokens_trained)
        if not may_leave:  # issue 16: the weights stay in custody as a model its trainer may list
            serving.custody_model_register(
                job=job, version=version, archive_sha256=hashlib.sha256(archive).hexdigest()
            )
        job_finish(
            job_id=job.pk, state=JobState.SUCCEEDED, detail=f"{job.tokens_trained:,} platform tokens trained."
        )


# --- valuation (issue 15): aggregates out, flagged record ids sealed in custody --------------


def valuation_items(job: TrainingJob) -> list[dict[str, Any]]:
    """Read the job's stream once into valuation records: text, opaque label, id, contribution.

    :raises LaunchFailure: a record without a label, or fewer than two labels.
    """
    # The owner's path reads under the version's valuation grant, the trainer's under its license;
    # a labelled set of the submitter's own (training/services/valuation.py) under that version's
    # valuation grant, marked validation.
    streams = [
        (
            custody.grant_stream_open(
                grant=job.grant, consumer_ref=job.consumer_ref, purpose=job.grant.purpose
            ),
            "train",
        )
    ]
    validation_id = job.request.get("validation_version_id")
    if validation_id:
        validation = DatasetVersion.objects.get(public_id=validation_id)
        grant = custody.system_grant(validation, GrantPurpose.VALUATION)
        streams.append(
            (
                custody.grant_stream_open(grant=grant, consumer_ref=job.consumer_ref, purpose=grant.purpose),
                "validation",
            )
        )
    label_field = str(job.request.get("label_field") or "")
    items: list[dict[str, Any]] = []
    for stream, split in streams:
        for batch in stream:
            for record in batch:
                label = (record.get("meta") or {}).get(label_field)
                if label is None or label == "":
                    raise LaunchFailure(
                        "training.labels_missing",
                        f"A record has no value in the metadata field {label_field!r}; valuation needs "
                        "the field that labels every record.",
                    )
                contribution = record.get("contribution", "")
                items.append(
                    {
                        "id": f"{contribution}:{record['id']}",
                        "text": record_text(record["text"]),
                        "label": str(label),
                        "group": f"contribution-{contribution}",
                        "split": split,
                    }
                )
    mapping, _digest = opaque_labels([item["label"] for item in items])
    if len(mapping) < 2:
        raise LaunchFailure("training.labels_missing", "Valuation needs at least two distinct labels.")
    for item in items:
        item["label"] = mapping[item["label"]]
    return items


def valuation_published(raw: Any, *, min_group: int) -> dict[str, Any]:
    """The runner's aggregates as they may be published, checked again outside the sandbox: groups
    and histogram bins of at least ``min_group`` records, numbers only; anything else is dropped."""
    if not isinstance(raw, dict):
        return {}
    groups = raw["groups"] if isinstance(raw.get("groups"), dict) else {}
    published_groups = {
        str(name)[:64]: {key: group[key] for key in ("count", "sum", "mean") if _number(group.get(key))}
        for name, group in groups.items()
        if isinstance(group, dict) and (_int_or_none(group.get("count")) or 0) >= min_group
    }
    bins = raw["histogram"] if isinstance(raw.get("histogram"), list) else []
    histogram = [
        {key: b[key] for key in ("low", "high", "count") if _number(b.get(key))}
        for b in bins
        if isinstance(b, dict) and (_int_or_none(b.get("count")) or 0) >= min_group
    ]
    summary = raw["summary"] if isinstance(raw.get("summary"), dict) else {}
    return {
        "groups": published_groups,
        "histogram": histogram,
        "summary": {key: value for key, value in summary.items() if _number(value)},
        "min_group": min_group,
    }


def _valuation_flags(path: Path, items: list[dict[str, Any]]) -> list[str]:
    """The flagged ids the runner wrote, kept only where they name a record that was sent."""
    try:
        ids = json.loads(path.read_text()).get("ids")
    except (OSError, ValueError, AttributeError):
        return []
    sent = {item["id"] for item in items}
    return sorted({i for i in ids if isinstance(i, str) and i in sent}) if isinstance(ids, list) else []


def _value_attempt(job: TrainingJob, workdir: Path, version: DatasetVersion) -> None:
    """A valuation job: values in the sandbox, aggregates on the job, flags sealed in custody.

    It spends no privacy budget (only aggregates over min_group records leave) and bills no
    trained tokens; its usage is the job's start.
    """
    recorder = Recorder(job)
    items = valuation_items(job)
    (workdir / "spec.json").write_text(json.dumps(job.spec))
    result = sandbox.run_runner(
        ["train", "--spec", "spec.json", "--out", "out"],
        workdir=workdir,
        limits=_limits(),
        stdin_records=items,
        on_event=recorder,
        should_cancel=recorder.should_cancel,
    )
    recorder.flush()
    if recorder.cancel_reason and result.exit_code != 0:
        raise LaunchCancelled(recorder.cancel_reason)
    if result.exit_code != 0 or recorder.done is None:
        raise _failure(result, recorder, "valuation")
    min_group = int((job.spec.get("valuation") or {}).get("min_group") or 20)
    published = valuation_published(recorder.done.get("valuation"), min_group=min_group)
    flags = _valuation_flags(workdir / "out" / "flags.json", items)
    published["summary"]["flagged"] = len(flags)
    key = custody.artifact_seal(
        version=version, name=f"valuation-flags-job-{job.pk}", data=json.dumps({"ids": flags}).encode()
    )
    with transaction.atomic():
        if job.grant.purpose == GrantPurpose.VALUATION:
            # The owner's valuation of a version in review: the flags join the review's findings.
            valuation_flags_record(
                version=version, record_ids=[int(i.rsplit(":", 1)[1]) for i in flags], source=job.public_id
            )
            # Its aggregates, where marketplace reads them (price suggestion, value-weighted rights).
            valuation_summary_record(version=version, job_ref=job.public_id, published=published)
        job.metrics["valuation"] = published
        job.artifact_blob_key = key
        job.artifact_encrypted = True
        job.tokens_trained = 0
        job.save(update_fields=["metrics", "artifact_blob_key", "artifact_encrypted", "tokens_trained"])
        job_finish(
            job_id=job.pk,
            state=JobState.SUCCEEDED,
            detail=f"Valued {published['summary'].get('count', 0)} records; {len(flags)} flagged for review.",
        )


def _attempt(job: TrainingJob, workdir: Path) -> None:
    version = DatasetVersion.objects.get(pk=job.grant.version_id)
    if job.template == "valuation":
        _value_attempt(job, workdir, version)
        return
    if job.template == "generate":
        from training.services.generation import generation_attempt

        generation_attempt(job, workdir)
        return
    recorder = Recorder(job)
    inputs = _inputs(job)
    spec = dict(job.spec)
    if job.base.task == BaseTask.CLASSIFICATION:
        spec["labels"] = inputs.labels
        job.metrics["labels"] = {
            "count": len(inputs.labels),
            "vocabulary_sha256": inputs.label_vocabulary_sha256,
        }
    if job.base.kind == BaseKind.UPLOADED:
        base_unpack(base=job.base, into=workdir / "base")
    if job.custody_model is not None:
        job.metrics["lineage"] = custody_model_base(job, workdir)
    if job.request.get("distill"):  # the teacher's files, and what the receipt names of it
        job.metrics["teacher"] = _distill_teacher(job, workdir, inputs)
    spec["telemetry"] = telemetry_block()
    job.spec = spec
    job.save(update_fields=["spec", "metrics"])
    (workdir / "spec.json").write_text(json.dumps(spec))
    _mix_canaries(inputs, workdir, job)
    _train(job, workdir, inputs, recorder)
    inputs.records.clear()
    _cancel_point(recorder)
    _job_state(job, JobState.RELEASING, "Checking the trained model (release gate).")
    _gate(job, workdir, inputs, recorder)
    _cancel_point(recorder)
    _release(job, workdir, recorder, version, inputs)


def custody_model_base(job: TrainingJob, workdir: Path) -> list[dict[str, Any]]:
    """Decrypt the job's custody model into the sandbox's ``base`` directory; returns the lineage
    its receipt names (issue 16 item 4)."""
    # Another organisation's model: its model license is checked again first (custody_models.py).
    return custody_model_start(job, workdir / "base")


def _distill_teacher(job: TrainingJob, workdir: Path, inputs: Inputs) -> dict[str, Any]:
    """Prepare a distillation job's teacher in the working directory (training/services/distillation.py)."""
    from training.services.distillation import distill_teacher_prepare

    try:
        return distill_teacher_prepare(job, workdir, label_vocabulary_sha256=inputs.label_vocabulary_sha256)
    except ValueError as error:
        raise LaunchFailure(
            "training.teacher_labels_mismatch",
            f"The teacher cannot teach these records: {error}. Distil from a classifier trained on the "
            "same label field's values.",
        ) from None


def _cancel_point(recorder: Recorder) -> None:
    if recorder.should_cancel(force=True):
        raise LaunchCancelled(recorder.cancel_reason)


# --- the work item -------------------------------------------------------------------------------


def _job_state(job: TrainingJob, state: JobState, detail: str) -> None:
    with transaction.atomic():
        updated = TrainingJob.objects.filter(
            pk=job.pk, state__in=[JobState.QUEUED, JobState.RUNNING, JobState.RELEASING]
        ).update(state=state, updated_at=timezone.now())
        if not updated:
            raise LaunchCancelled("The job already ended.")
        job.state = state
        job_event(job, str(state), detail)


def _job_begin(job_id: int) -> TrainingJob | None:
    """Count an attempt and mark the job running; None when there is nothing to run."""
    with transaction.atomic():
        job = (
            TrainingJob.objects.select_for_update(of=("self",))
            .select_related("grant", "base", "organisation")
            .get(pk=job_id)
        )
        if job.is_final:
            return None
        if job.cancel_requested_at is not None:
            job_finish(job_id=job.pk, state=JobState.CANCELLED, reason="Cancelled on request.")
            return None
        first = job.attempts == 0
        job.attempts += 1
        job.state = JobState.RUNNING
        job.started_at = job.started_at or timezone.now()
        job.updated_at = timezone.now()
        job.step, job.epoch, job.loss, job.tokens_per_s, job.eta_s = 0, 0.0, None, None, None
        job.loss_curve, job.gate = [], {}
        job.metrics = {}
        job.save()
        if first:
            job_event(job, "started", "A training worker took the job.", notify=True)
        else:
            job_event(
                job, "restarted", f"Attempt {job.attempts}: the previous worker stopped; starting again."
            )
    return job


def job_run(*, job_id: int, final_attempt: bool) -> None:
    """Run one attempt of a job; failures the trainer can act on end the job, others retry."""
    job = _job_begin(job_id)
    if job is None:
        return
    try:
        try:
            for grant in job_grants(job):
                custody.grant_job_reserve(grant=grant, consumer_ref=job.consumer_ref)
        except CustodyConflict as exc:
            raise LaunchFailure(
                "training.license_unusable", f"The license can no longer be used: {exc.detail}"
            ) from exc
        with private_workdir(job) as workdir:
            _attempt(job, workdir)
    except LaunchFailure as failure:
        job_finish(job_id=job.pk, state=JobState.FAILED, code=failure.code, reason=failure.reason)
    except LaunchCancelled as cancelled:
        job_finish(job_id=job.pk, state=JobState.CANCELLED, reason=cancelled.reason)
    except sandbox.SandboxUnavailable:
        logger.exception("training job %s: no sandbox on this worker", job.pk)
        if final_attempt:
            job_finish(
                job_id=job.pk,
                state=JobState.FAILED,
                code="training.sandbox_unavailable",
                reason="No training worker could start a sandbox for this job. The operators were told; "
                "submit it again later.",
            )
        raise
    except Exception:
        if final_attempt:
            job_finish(
                job_id=job.pk,
                state=JobState.FAILED,
                code="training.internal_error",
                reason=f"The job stopped on an internal error after {job.attempts} attempt(s). "
                "Submit it again; the operators can see what happened.",
            )
        raise


@work_handler(WORK_KIND)
def _job_handler(item: WorkItem) -> None:
    job_run(job_id=int(item.ref), final_attempt=item.attempts >= item.max_attempts)
