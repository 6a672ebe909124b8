"""Base models, training jobs and their events.

A job's state lives here; the Celery message that runs it is only a doorbell
(a ``common.work`` item of kind ``training.job`` whose ref is the job id).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from common.models import Organisation, User
from common.public_ids import PublicIdField
from custody.models import Grant


class JobTemplate(models.TextChoices):
    CAUSAL_LM = "causal_lm", "Causal language model (full fine-tune)"
    CAUSAL_LM_LORA = "causal_lm_lora", "Causal language model (LoRA adapters)"
    SEQ_CLASSIFICATION = "seq_classification", "Sequence classification"
    # Trains nothing: values records by KNN-Shapley on MiniLM embeddings (issue 15, docs/training.md).
    VALUATION = "valuation", "Data valuation (KNN-Shapley)"
    # Trains nothing: a custody model writes a synthetic corpus into custody (issue 17; generation.py).
    GENERATE = "generate", "Synthetic corpus generation"
    # A student trained on a teacher's soft labels and the records' hard labels (issue 16 item 3;
    # training/services/distillation.py, training/runner/distill.py).
    DISTILL_CAUSAL_LM = "distill_causal_lm", "Distillation into a causal language model"
    DISTILL_CLASSIFICATION = "distill_classification", "Distillation into a sequence classifier"


class BaseTask(models.TextChoices):
    CAUSAL_LM = "causal_lm", "Causal language model"
    CLASSIFICATION = "classification", "Classification encoder"


# Which base task each template trains.
TEMPLATE_TASK = {
    JobTemplate.CAUSAL_LM: BaseTask.CAUSAL_LM,
    JobTemplate.CAUSAL_LM_LORA: BaseTask.CAUSAL_LM,
    JobTemplate.SEQ_CLASSIFICATION: BaseTask.CLASSIFICATION,
    JobTemplate.VALUATION: BaseTask.CLASSIFICATION,
    JobTemplate.GENERATE: BaseTask.CAUSAL_LM,
    JobTemplate.DISTILL_CAUSAL_LM: BaseTask.CAUSAL_LM,
    JobTemplate.DISTILL_CLASSIFICATION: BaseTask.CLASSIFICATION,
}


class BaseKind(models.TextChoices):
    BUILTIN = "builtin", "Built in"
    UPLOADED = "uploaded", "Uploaded"


class BaseState(models.TextChoices):
    PENDING = "pending", "Validating"
    VALIDATED = "validated", "Validated"
    REJECTED = "rejected", "Rejected"


class BaseModel(models.Model):
    """A base model a job fine-tunes: built into the platform, or uploaded by a trainer."""

    public_id = PublicIdField(prefix="base")
    name = models.CharField(max_length=120)
    kind = models.CharField(max_length=16, choices=BaseKind.choices)
    task = models.CharField(max_length=32, choices=BaseTask.choices)
    # Uploaded bases belong to the organisation that uploaded them; built-ins to nobody.
    owner = models.ForeignKey(
        Organisation, on_delete=models.PROTECT, null=True, blank=True, related_name="base_models"
    )
    uploaded_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    architecture = models.CharField(max_length=120, blank=True)
    parameters = models.PositiveBigIntegerField(default=0)
    # sha256 over the files (name and hash of each), or of the built-in's definition.
    file_hash = models.CharField(max_length=64, blank=True)
    files = models.JSONField(default=list, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    blob_key = models.CharField(max_length=255, blank=True)
    state = models.CharField(max_length=16, choices=BaseState.choices, default=BaseState.PENDING)
    failure_reason = models.CharField(max_length=500, blank=True)
    description = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    validated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["name"], condition=Q(owner__isnull=True), name="base_builtin_name_unique"
            ),
            models.UniqueConstraint(fields=["owner", "name"], name="base_owner_name_unique"),
            models.CheckConstraint(
                condition=Q(kind="builtin", owner__isnull=True) | Q(kind="uploaded", owner__isnull=False),
                name="base_owner_matches_kind",
            ),
        ]
        ordering = ["kind", "name"]

    def __str__(self) -> str:
        return self.name


class JobState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    RELEASING = "releasing", "Releasing"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_STATES = (JobState.QUEUED, JobState.RUNNING, JobState.RELEASING)
FINAL_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class BudgetHold(models.TextChoices):
    NONE = "", "None"
    RESERVED = "reserved", "Reserved"
    COMMITTED = "committed", "Committed"
    RELEASED = "released", "Released"


class TrainingJob(models.Model):
    """One fine-tune of a base model on a licensed dataset version."""

    public_id = PublicIdField(prefix="job")
    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="training_jobs")
    submitted_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    grant = models.ForeignKey(Grant, on_delete=models.PROTECT, related_name="training_jobs")
    template = models.CharField(max_length=32, choices=JobTemplate.choices)
    base = models.ForeignKey(BaseModel, on_delete=models.PROTECT, related_name="jobs")
    purpose = models.CharField(max_length=64, blank=True)
    # What the trainer asked for (hyperparameters, dp, label field), and the runner spec built from it.
    request = models.JSONField(default=dict)
    spec = models.JSONField(default=dict)
    dp_enabled = models.BooleanField(default=False)
    epsilon_reserved = models.DecimalField(max_digits=8, decimal_places=3, null=True, blank=True)
    epsilon_spent = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True)
    budget = models.CharField(max_length=16, choices=BudgetHold.choices, blank=True, default="")
    epochs = models.PositiveIntegerField(default=1)
    # Platform tokens of the version times epochs (what the license counts).
    tokens_planned = models.PositiveBigIntegerField(default=0)
    tokens_trained = models.PositiveBigIntegerField(default=0)
    gate_threshold = models.FloatField(null=True, blank=True)

    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.QUEUED)
    failure_code = models.CharField(max_length=64, blank=True)
    failure_reason = models.CharField(max_length=1000, blank=True)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Set when the first progress event came out of the sandbox: training began.
    training_started_at = models.DateTimeField(null=True, blank=True)

    step = models.PositiveBigIntegerField(default=0)
    total_steps = models.PositiveBigIntegerField(null=True, blank=True)
    epoch = models.FloatField(default=0)
    loss = models.FloatField(null=True, blank=True)
    tokens_per_s = models.FloatField(null=True, blank=True)
    eta_s = models.FloatField(null=True, blank=True)
    progress_at = models.DateTimeField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    # [[step, loss], ...], thinned to at most TRAINING_LOSS_CURVE_POINTS.
    loss_curve = models.JSONField(default=list, blank=True)
    gate = models.JSONField(default=dict, blank=True)

    artifact_blob_key = models.CharField(max_length=255, blank=True)
    artifact_encrypted = models.BooleanField(default=False)
    artifact_files = models.JSONField(default=list, blank=True)
    artifact_size = models.PositiveBigIntegerField(default=0)
    receipt = models.JSONField(default=dict, blank=True)
    # The model held in custody this job starts from (fine-tune further, generation; issue 16 item 4,
    # issue 17): a succeeded job of the same organisation (training/services/custody_models.py).
    custody_model = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="derived_jobs"
    )

    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [models.Index(fields=["organisation", "-created_at"], name="job_org_created")]
        constraints = [
            models.CheckConstraint(
                condition=Q(epsilon_reserved__isnull=True) | Q(epsilon_reserved__gt=0),
                name="job_epsilon_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"Job {self.pk}"

    @property
    def consumer_ref(self) -> str:
        """How custody knows this job (grant jobs, usage, privacy budget)."""
        return f"training-job-{self.pk}"

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def version_id(self) -> int:
        return int(self.grant.version_id)

    @property
    def gate_public(self) -> dict[str, object]:
        """What the trainer reads of the release gate: pass or fail, the reason, each check's status
        (passed, failed, not_run, not_applicable, error).

        Exposures, counts and thresholds stay with the provider and operators: shown to the
        trainer, per-canary exposures were a gradient to retry along (issue 20, item 6).
        """
        gate = self.gate or {}
        if not gate:
            return {}
        checks = gate.get("checks")
        return {
            "passed": bool(gate.get("passed")),
            "reason": str(gate.get("reason") or ""),
            "checks": {str(k): str(v) for k, v in checks.items()} if isinstance(checks, dict) else {},
        }


class JobGrant(models.Model):
    """One license of a mixed-dataset job (issue 17 item 3; training/services/mixing.py).

    A mixed job reads several versions, each under its own grant, by weight. The job's ``grant``
    is its first component's (the rows here list every component, the first included); a job
    with one license has no rows here. Each component is billed the platform tokens read from
    its own version and its version's budget is charged the job's epsilon once.
    """

    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="components")
    grant = models.ForeignKey(Grant, on_delete=models.PROTECT, related_name="mixed_jobs")
    position = models.PositiveSmallIntegerField()
    # The share of the job's platform tokens this version supplies, in basis points (they sum to 10,000).
    weight_bps = models.PositiveIntegerField()
    tokens_planned = models.PositiveBigIntegerField(default=0)
    tokens_trained = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["job", "grant"], name="job_grant_unique"),
            models.UniqueConstraint(fields=["job", "position"], name="job_grant_position_unique"),
            models.CheckConstraint(
                condition=Q(weight_bps__gt=0) & Q(weight_bps__lte=10_000), name="job_grant_weight_range"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.weight_bps} bps of job {self.job_id} under grant {self.grant_id}"


class JobEvent(models.Model):
    """A line of a job's history shown to the trainer: never record text."""

    job = models.ForeignKey(TrainingJob, on_delete=models.CASCADE, related_name="events")
    kind = models.CharField(max_length=32)
    detail = models.CharField(max_length=500, blank=True)
    attempt = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "pk"]

    def __str__(self) -> str:
        return f"{self.kind} (job {self.job_id})"


class InferenceState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class InferenceCall(models.Model):
    """One plug-in inference call on a custody model (issue 16; training/services/serving.py).

    The prompts are kept only while the call waits or runs (a retried worker needs them) and
    cleared in the transaction that finishes it, with its ``tokens_inferred`` usage; what stays
    is the audit facts (who, when, how many tokens) and the guarded outputs for the caller.
    """

    public_id = PublicIdField(prefix="inf")
    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="inference_calls")
    requested_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    grant = models.ForeignKey(Grant, on_delete=models.PROTECT, related_name="inference_calls")
    # The custody model's public id (its training job, job_…).
    model_ref = models.CharField(max_length=64)
    # "generate" or "classify".
    task = models.CharField(max_length=16)
    state = models.CharField(max_length=16, choices=InferenceState.choices, default=InferenceState.QUEUED)
    prompts = models.JSONField(default=list)
    max_new_tokens = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    outputs = models.JSONField(default=list)
    withheld = models.PositiveIntegerField(default=0)
    idempotency_key = models.CharField(max_length=240, blank=True, default="")
    error_code = models.CharField(max_length=64, blank=True)
    error_detail = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="inference_unique_idempotency_key",
            ),
        ]
        indexes = [models.Index(fields=["model_ref", "state"])]

    def __str__(self) -> str:
        return f"inference {self.public_id} on {self.model_ref}"
