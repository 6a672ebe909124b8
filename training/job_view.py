"""What the job page shows, derived from the job row in one place: the stage, the progress, the loss
chart and why it holds what it holds.

The header, the stage list, the progress bar, the history and the chart are rendered together from
this one reading of the row (``templates/training/_job_status.html``), so they never disagree: the
page polls one endpoint and swaps the whole live region.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from training.charts import LineChart, loss_chart
from training.model_card import PURPOSE_WORDS
from training.models import BaseTask, JobState, JobTemplate, TrainingJob
from training.runner.generate import DEFAULTS as GENERATION_DEFAULTS

# (key, title) in the order a job goes through them.
STAGES: tuple[tuple[str, str], ...] = (
    ("queued", "Queued"),
    ("preparing", "Preparing"),
    ("training", "Training"),
    ("gate", "Release gate"),
    ("released", "Released"),
)


@dataclass(frozen=True)
class StageItem:
    key: str
    title: str
    status: str  # done, current, failed, todo


@dataclass(frozen=True)
class Stage:
    key: str
    title: str
    detail: str
    items: tuple[StageItem, ...]
    # Percent of the planned steps, shown only while training (never a bar at 100 % during the gate).
    percent: int | None


def _reached(job: TrainingJob) -> int:
    """The index in STAGES of where the job is, or where it stopped."""
    if job.state == JobState.QUEUED:
        return 0
    if job.state == JobState.RUNNING:
        return 2 if job.training_started_at is not None or job.step > 0 else 1
    if job.state == JobState.RELEASING:
        return 3
    if job.state == JobState.SUCCEEDED:
        return 4
    if job.gate or job.failure_code == "training.gate_failed":
        return 3
    if job.training_started_at is not None:
        return 2
    return 1 if job.started_at is not None else 0


def gate_detail(job: TrainingJob) -> str:
    """What the release gate checks for this job's template, and how long it takes."""
    if job.base.task == BaseTask.CLASSIFICATION:
        return (
            "Release gate: loading and file checks of the trained classifier (the memorization checks "
            "do not apply to a model that outputs labels). This takes a few seconds."
        )
    return (
        f"Release gate: memorization replay (can the model continue any of {settings.TRAINING_GATE_PROBES} "
        "sampled records word for word?), canary exposure (does it rank "
        f"{settings.TRAINING_CANARIES} planted secrets above {settings.TRAINING_CANARY_CANDIDATES:,} "
        "look-alikes?) and loading checks of the weights. This takes tens of seconds; the model is "
        "released only if it passes."
    )


def _detail(job: TrainingJob, key: str, percent: int | None) -> str:
    if job.state == JobState.FAILED:
        return f"Failed at this stage: {job.failure_reason or 'see the history below.'}"
    if job.state == JobState.CANCELLED:
        return f"Stopped at this stage: {job.failure_reason or 'cancelled.'}"
    if key == "queued":
        return "Waiting for a training worker to take the job."
    if key == "preparing":
        return (
            "A worker took the job: it checks the license again, reads the licensed records from "
            "custody and starts the sandbox."
        )
    if key == "training":
        steps = f"step {job.step:,} of {job.total_steps:,}" if job.total_steps else f"step {job.step:,}"
        done = f" ({percent}%)" if percent is not None else ""
        return f"Training in the sandbox: {steps}{done}, epoch {job.epoch:.2f}."
    if key == "gate":
        return gate_detail(job)
    if job.artifact_encrypted:
        return "The release gate passed the model; the license keeps its weights encrypted in custody."
    return "The release gate passed the model: download it and its signed receipt below."


# A generation job (issue 17) trains nothing and has no release gate: it samples records in the
# sandbox, then custody screens them against the source and ingests what is kept as a new version.
GENERATE_STAGES: tuple[tuple[str, str], ...] = (
    ("queued", "Queued"),
    ("generating", "Generating"),
    ("screen", "Leakage screen"),
    ("released", "Version made"),
)


def _generate_reached(job: TrainingJob) -> int:
    """The index in GENERATE_STAGES of where a generation job is, or where it stopped."""
    if job.state == JobState.SUCCEEDED:
        return 3
    if job.state == JobState.QUEUED or (job.started_at is None and job.state != JobState.RUNNING):
        return 0
    # The runner's done event (training_started_at) ends the sampling; the screen follows.
    return 2 if job.training_started_at is not None else 1


def _generate_detail(job: TrainingJob, key: str) -> str:
    generation = (job.metrics or {}).get("generation") or {}
    if key == "queued":
        return "Waiting for a training worker to take the job."
    if key == "generating":
        records = int(((job.spec or {}).get("generation") or {}).get("records") or 0)
        return (
            "A worker took the job: it checks the license again, decrypts the model into the sandbox "
            f"and samples {records:,} records from the prompts."
        )
    if key == "screen":
        return (
            "Custody compares the generated records with the source version's records (exact and near "
            "copies, planted canary secrets) and drops those too close before ingesting the rest."
        )
    return (
        f"Kept {int(generation.get('kept') or 0):,} of {int(generation.get('generated') or 0):,} generated "
        f"records as synthetic version {generation.get('synthetic_version', '')}; "
        f"{int(generation.get('dropped') or 0):,} dropped as too close to the source."
    )


def _generation_asked(job: TrainingJob) -> dict[str, Any]:
    """A generation job's settings as the runner reads them (its defaults where the request left one out)."""
    if job.template != JobTemplate.GENERATE:
        return {}
    asked = dict(GENERATION_DEFAULTS)
    asked.update((job.spec or {}).get("generation") or {})
    return asked


def job_stage(job: TrainingJob) -> Stage:
    """Where the job is, as the page and its stage list show it."""
    if job.template == JobTemplate.GENERATE:
        return _stage_of(job, GENERATE_STAGES, _generate_reached(job), _generate_detail)
    return _stage_of(job, STAGES, _reached(job), None)


def _stage_of(
    job: TrainingJob,
    stages: tuple[tuple[str, str], ...],
    reached: int,
    describe: Callable[[TrainingJob, str], str] | None,
) -> Stage:
    stopped = job.state in (JobState.FAILED, JobState.CANCELLED)
    items = []
    for index, (key, title) in enumerate(stages):
        if index < reached or (index == reached and job.state == JobState.SUCCEEDED):
            status = "done"
        elif index == reached:
            status = "failed" if stopped else "current"
        else:
            status = "todo"
        items.append(StageItem(key, title, status))
    key, title = stages[reached]
    percent = None
    if key == "training" and not stopped and job.total_steps:
        percent = min(100, job.step * 100 // job.total_steps)
    if describe is not None and not stopped:
        return Stage(key, title, describe(job, key), tuple(items), percent)
    return Stage(key, title, _detail(job, key, percent), tuple(items), percent)


def _window(job: TrainingJob) -> tuple[int, int]:
    telemetry = (job.spec or {}).get("telemetry") or {}
    records = telemetry.get("window_records", settings.TRAINING_METRICS_WINDOW_RECORDS)
    tokens = telemetry.get("window_tokens", settings.TRAINING_METRICS_WINDOW_TOKENS)
    return int(records), int(tokens)


def loss_note(job: TrainingJob, chart: LineChart, stage: Stage) -> str:
    """Why the chart holds what it holds (the loss leaves a job only as windowed means)."""
    if job.dp_enabled:
        return (
            "Under differential privacy no training loss leaves the sandbox; the validation loss "
            "(with calibrated noise) appears after the release gate."
        )
    records, tokens = _window(job)
    if records <= 1 and tokens <= 0:
        return f"Loss is reported at every logged step; this job logged {chart.count}."
    rule = (
        f"Loss is reported every ≥{records} records (and ≥{tokens:,} platform tokens), "
        "as the mean over that window"
    )
    if chart.count:
        windows = "window" if chart.count == 1 else "windows"
        return f"{rule}; this job logged {chart.count} {windows}."
    if stage.key in ("queued", "preparing") or (stage.key == "training" and not job.is_final):
        return f"{rule}; the first point appears after the first full window."
    return f"{rule}; this job's training set did not fill one window, so it logged none."


def job_view(job: TrainingJob) -> dict[str, Any]:
    """The template context for the live part of the job page."""
    stage = job_stage(job)
    chart = loss_chart(job.loss_curve or [], total_steps=job.total_steps)
    metrics = job.metrics or {}
    return {
        "is_generation": job.template == JobTemplate.GENERATE,
        "generation": metrics.get("generation") or {},
        "generation_asked": _generation_asked(job),
        "purpose_words": PURPOSE_WORDS.get(job.purpose, job.purpose),
        "stage": stage,
        "percent": stage.percent,
        "chart": chart,
        "loss_note": loss_note(job, chart, stage),
        "validation": metrics.get("validation", []),
        "final_metrics": metrics.get("final", {}),
        "events": list(job.events.all()),
    }
