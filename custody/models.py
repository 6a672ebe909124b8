"""Custody: datasets, versions, contributions, shards, findings, grants, usage, budgets.

Nothing here stores plaintext: shard blobs and quarantine parts are encrypted
(blob store), data keys are stored wrapped by a key-encryption key the key
provider holds, and report samples are encrypted under the version's key.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from common.models import Organisation, User
from common.public_ids import PublicIdField


class Dataset(models.Model):
    public_id = PublicIdField(prefix="ds")
    owner = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="datasets")
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=64)
    description = models.TextField(blank=True)
    # The desensitization policy (custody.desensitize.Policy.to_dict()).
    policy = models.JSONField(default=dict)
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "slug"], name="dataset_owner_slug_unique")]

    def __str__(self) -> str:
        return self.name


class VersionState(models.TextChoices):
    UPLOADING = "uploading", "Uploading"
    PROCESSING = "processing", "Processing"
    REVIEW = "review", "Ready for review"
    SEALED = "sealed", "Sealed"
    FAILED = "failed", "Failed"
    REJECTED = "rejected", "Rejected"
    ABANDONED = "abandoned", "Abandoned"
    TAKEN_DOWN = "taken_down", "Taken down"
    # A contribution was withdrawn: the version is closed to new jobs and its
    # successor, sealed without that contribution, carries its licenses.
    SUPERSEDED = "superseded", "Superseded"


class DatasetVersion(models.Model):
    public_id = PublicIdField(prefix="dsv")
    dataset = models.ForeignKey(Dataset, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    state = models.CharField(max_length=16, choices=VersionState.choices, default=VersionState.UPLOADING)
    stage = models.CharField(max_length=32, blank=True)
    records_expected = models.PositiveBigIntegerField(default=0)
    records_done = models.PositiveBigIntegerField(default=0)
    failure_reason = models.TextField(blank=True)
    key_version = models.PositiveIntegerField(default=1)
    wrapped_data_key = models.BinaryField(null=True, editable=False)
    wrapped_pseudonym_key = models.BinaryField(null=True, editable=False)
    # The provider's differential-privacy cap for the whole version (None: no DP required).
    epsilon_cap = models.DecimalField(max_digits=8, decimal_places=3, null=True, blank=True)
    merkle_root = models.CharField(max_length=64, blank=True)
    # Allocators for shard indexes and record ids across contributions.
    next_shard_index = models.PositiveIntegerField(default=0)
    next_record_id = models.PositiveBigIntegerField(default=0)
    records = models.PositiveBigIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)
    # A model-generated version (issue 17): how it was made (the generation job, the model's artifact
    # hash, the source version and its Merkle root, epsilon) and its leakage screen's counts; empty
    # for uploaded data (custody/services/synthetic.py).
    provenance = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    processed_at = models.DateTimeField(null=True, blank=True)
    sealed_at = models.DateTimeField(null=True, blank=True)
    sealed_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    # The crypto-shred runs in two steps: the version's key is disabled (reversible),
    # then destroyed once SHRED_DELAY_SECONDS have passed since it was disabled.
    key_disabled_at = models.DateTimeField(null=True, blank=True)
    key_destroyed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["dataset", "number"], name="version_dataset_number_unique"),
            models.CheckConstraint(
                condition=Q(key_destroyed_at__isnull=True) | Q(key_disabled_at__isnull=False),
                name="version_key_destroyed_after_disabled",
            ),
            models.CheckConstraint(
                condition=~Q(state="sealed") | ~Q(merkle_root=""), name="version_sealed_has_root"
            ),
            models.CheckConstraint(
                condition=Q(epsilon_cap__isnull=True) | Q(epsilon_cap__gt=0),
                name="version_epsilon_cap_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.dataset.name} v{self.number}"

    @property
    def key_name(self) -> str:
        return f"version-{self.pk}"


class VersionContributor(models.Model):
    """An organisation allowed to contribute to a version (the owner always is)."""

    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="contributors")
    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="+")
    invited_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["version", "organisation"], name="contributor_unique")]

    def __str__(self) -> str:
        return f"{self.organisation_id} -> {self.version_id}"


class ContributionState(models.TextChoices):
    UPLOADING = "uploading", "Uploading"
    UPLOADED = "uploaded", "Uploaded"
    PARSED = "parsed", "Parsed"
    DONE = "done", "Processed"
    FAILED = "failed", "Failed"


class Contribution(models.Model):
    public_id = PublicIdField(prefix="ctb")
    version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="contributions")
    contributor = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="contributions")
    uploaded_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    filename = models.CharField(max_length=255)
    format = models.CharField(max_length=16)
    gzip = models.BooleanField(default=False)
    text_fields = models.JSONField(default=list)
    metadata_fields = models.JSONField(default=list)
    state = models.CharField(
        max_length=16, choices=ContributionState.choices, default=ContributionState.UPLOADING
    )
    size_expected = models.PositiveBigIntegerField(null=True, blank=True)
    size_received = models.PositiveBigIntegerField(default=0)
    raw_sha256 = models.CharField(max_length=64, blank=True)
    wrapped_quarantine_key = models.BinaryField(null=True, editable=False)
    # Allocated once, at the first successful parse: where this contribution's
    # shards and record ids start in its version.
    first_shard_index = models.PositiveIntegerField(null=True, blank=True)
    first_record_id = models.PositiveBigIntegerField(null=True, blank=True)
    # Bumped by a retry, so the retried work items are new units of work.
    generation = models.PositiveIntegerField(default=0)
    # Staged batches of parsed records (encrypted under the quarantine key).
    batches = models.PositiveIntegerField(default=0)
    records = models.PositiveBigIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)
    failure_reason = models.TextField(blank=True)
    quarantine_shredded_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    # The same records in the version this one was re-sealed from (a withdrawal of another
    # contribution): lineage follows it back to every version that held them.
    carried_from = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="carried_to"
    )

    def __str__(self) -> str:
        return f"contribution {self.pk} ({self.filename})"

    @property
    def quarantine_key_name(self) -> str:
        return f"quarantine-{self.pk}"


class UploadPart(models.Model):
    """One received part of a chunked upload, encrypted under the quarantine key."""

    contribution = models.ForeignKey(Contribution, on_delete=models.CASCADE, related_name="parts")
    number = models.PositiveIntegerField()
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    blob_key = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["contribution", "number"], name="upload_part_unique")]

    def __str__(self) -> str:
        return f"part {self.number} of {self.contribution_id}"


class Shard(models.Model):
    """Encrypted desensitized records: one per ingest batch, bound to (version, index, key version)."""

    version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="shards")
    index = models.PositiveIntegerField()
    contribution = models.ForeignKey(Contribution, on_delete=models.PROTECT, related_name="shards")
    first_record = models.PositiveBigIntegerField()
    records = models.PositiveIntegerField()
    tokens = models.PositiveBigIntegerField(default=0)
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    blob_key = models.CharField(max_length=255)
    # Screening/desensitization stats for this shard (counts only, no text).
    stats = models.JSONField(default=dict)
    screening_state = models.TextField(blank=True)
    # Before/after samples for the report, encrypted under the version's data key.
    samples_blob = models.BinaryField(null=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["version", "index"], name="shard_version_index_unique")
        ]
        ordering = ["index"]

    def __str__(self) -> str:
        return f"shard {self.index} of version {self.version_id}"


class Finding(models.Model):
    """A screening finding on one record; the provider decides whether to drop it."""

    public_id = PublicIdField(prefix="fnd")
    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="findings")
    record_id = models.PositiveBigIntegerField()
    kind = models.CharField(max_length=32)
    detail = models.CharField(max_length=300)
    group = models.CharField(max_length=64, blank=True)
    score = models.FloatField(null=True, blank=True)
    drop = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["version", "record_id", "kind"], name="finding_unique")
        ]
        indexes = [models.Index(fields=["version", "kind"])]

    def __str__(self) -> str:
        return f"{self.kind} on record {self.record_id}"


class Report(models.Model):
    """The desensitization report: counts (clear) and before/after samples (encrypted)."""

    version = models.OneToOneField(DatasetVersion, on_delete=models.CASCADE, related_name="report")
    counts = models.JSONField(default=dict)
    findings_summary = models.JSONField(default=dict)
    samples_blob = models.BinaryField(null=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"report of version {self.version_id}"


class GrantPurpose(models.TextChoices):
    LICENSE = "license", "Licensed training"
    INGEST = "ingest", "Ingest"
    REVIEW = "review", "Review"
    PREVIEW = "preview", "Preview"
    REKEY = "rekey", "Re-key"
    GATE = "gate", "Release gate"
    # A version's owner valuing its own records (no license): training/services/valuation.py.
    VALUATION = "valuation", "Owner's valuation"


class GrantState(models.TextChoices):
    ACTIVE = "active", "Active"
    REVOKED = "revoked", "Revoked"


class Grant(models.Model):
    """The technical side of a license (or a platform purpose): who may read which version, how."""

    public_id = PublicIdField(prefix="gnt")
    version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="grants")
    licensee = models.ForeignKey(
        Organisation, on_delete=models.PROTECT, null=True, blank=True, related_name="grants"
    )
    purpose = models.CharField(max_length=16, choices=GrantPurpose.choices)
    # A snapshot of the license terms (marketplace never needs to be asked again).
    terms = models.JSONField(default=dict)
    external_ref = models.CharField(max_length=120, blank=True)
    state = models.CharField(max_length=16, choices=GrantState.choices, default=GrantState.ACTIVE)
    jobs_reserved = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoke_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["external_ref"], condition=~Q(external_ref=""), name="grant_external_ref_unique"
            ),
            models.CheckConstraint(
                condition=Q(purpose="license", licensee__isnull=False) | ~Q(purpose="license"),
                name="grant_license_has_licensee",
            ),
        ]

    def __str__(self) -> str:
        return f"grant {self.pk} ({self.purpose}) on version {self.version_id}"


class GrantJob(models.Model):
    """A job counted against a grant's limits (idempotent per consumer_ref)."""

    grant = models.ForeignKey(Grant, on_delete=models.PROTECT, related_name="jobs")
    consumer_ref = models.CharField(max_length=120)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["grant", "consumer_ref"], name="grant_job_unique")]

    def __str__(self) -> str:
        return f"{self.consumer_ref} on grant {self.grant_id}"


class UsageKind(models.TextChoices):
    JOB_STARTED = "job_started", "Job started"
    TOKENS_TRAINED = "tokens_trained", "Platform tokens trained"
    # One plug-in inference call on a custody model (issue 16): its prompt and output tokens.
    TOKENS_INFERRED = "tokens_inferred", "Platform tokens inferred"


class UsageRecord(models.Model):
    grant = models.ForeignKey(Grant, on_delete=models.PROTECT, related_name="usage")
    consumer_ref = models.CharField(max_length=120)
    kind = models.CharField(max_length=32, choices=UsageKind.choices)
    quantity = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(default=timezone.now)
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["grant", "consumer_ref", "kind"], name="usage_unique")]
        indexes = [models.Index(fields=["settled_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.quantity} ({self.consumer_ref})"


class UsageByContribution(models.Model):
    """The platform tokens one usage record (a job's ``tokens_trained``) read from one contribution.

    Written with its usage record, in the same transaction, so a job's reads are recorded exactly
    once; the quantities of a usage record's rows add up to its quantity. Settlement splits a
    metered release by them (docs/money.md).
    """

    usage = models.ForeignKey(UsageRecord, on_delete=models.PROTECT, related_name="by_contribution")
    contribution = models.ForeignKey(Contribution, on_delete=models.PROTECT, related_name="usage")
    quantity = models.PositiveBigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["usage", "contribution"], name="usage_contribution_unique")
        ]

    def __str__(self) -> str:
        return f"{self.quantity} of contribution {self.contribution_id} ({self.usage_id})"


class BudgetState(models.TextChoices):
    RESERVED = "reserved", "Reserved"
    COMMITTED = "committed", "Committed"
    RELEASED = "released", "Released"


class PrivacyBudgetEntry(models.Model):
    version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="budget_entries")
    consumer_ref = models.CharField(max_length=120)
    epsilon = models.DecimalField(max_digits=8, decimal_places=3)
    state = models.CharField(max_length=16, choices=BudgetState.choices, default=BudgetState.RESERVED)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["version", "consumer_ref"], name="budget_entry_unique"),
            models.CheckConstraint(condition=Q(epsilon__gt=0), name="budget_epsilon_positive"),
        ]

    def __str__(self) -> str:
        return f"eps {self.epsilon} {self.state} ({self.consumer_ref})"


class WithdrawalState(models.TextChoices):
    PENDING = "pending", "Re-sealing"
    DONE = "done", "Done"


class ContributionWithdrawal(models.Model):
    """A contributor's withdrawal of one contribution from a sealed version (at most one each).

    Asking closes the version to new jobs at once; the ``custody.withdraw`` work item then
    re-seals the other contributions as ``to_version`` (new key, new Merkle root) and moves the
    version's licenses there (``custody.services.withdrawal``).
    """

    public_id = PublicIdField(prefix="wdr")
    contribution = models.OneToOneField(Contribution, on_delete=models.PROTECT, related_name="withdrawal")
    from_version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="withdrawals")
    to_version = models.OneToOneField(
        DatasetVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="withdrawn_from"
    )
    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="+")
    requested_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    # "contributor" (an admin of the contributing organisation) or "operator".
    requested_as = models.CharField(max_length=16)
    reason = models.CharField(max_length=300)
    state = models.CharField(max_length=16, choices=WithdrawalState.choices, default=WithdrawalState.PENDING)
    grants_moved = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["from_version"], name="withdrawal_one_per_version"),
            models.CheckConstraint(
                condition=~Q(state="done") | Q(to_version__isnull=False, done_at__isnull=False),
                name="withdrawal_done_has_successor",
            ),
        ]

    def __str__(self) -> str:
        return f"withdrawal of contribution {self.contribution_id} from version {self.from_version_id}"


class ValuationSummary(models.Model):
    """The published aggregates of an owner's valuation of a version (issue 15), kept in custody so
    that marketplace reads them (a price suggestion, a value-weighted rights proposal) without
    importing training. Only what already left the sandbox is here: per-contribution groups of at
    least ``min_group`` records and the summary; per-record values never leave custody's sandbox.
    Written once per valuation job (custody/services/valuation_summary.py), never edited.
    """

    version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="valuation_summaries")
    # The valuation job's public id (job_…): which job computed it.
    job_ref = models.CharField(max_length=64, unique=True)
    # Contribution key (str) -> {"count", "sum", "mean"}; "other" pools contributions below min_group.
    groups = models.JSONField(default=dict)
    # count, sum, mean, std, negative_share, flagged (numbers only).
    summary = models.JSONField(default=dict)
    min_group = models.PositiveIntegerField()
    # The version's platform tokens when it was valued (the denominator of value per million tokens).
    tokens = models.PositiveBigIntegerField()
    valued_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"valuation {self.job_ref} of version {self.version_id}"


class ValuationFlag(models.Model):
    """A record of a **sealed** version that an owner's valuation flagged as possible poison
    (issue 15 item 3). A sealed version is never changed, so the flag waits here; the version's
    next versions show it as a ``possible_poison`` finding on each record carried over (matched
    inside custody by a keyed fingerprint, custody/services/valuation.py), droppable at sealing.
    Holds a record id and the valuation's job id, never a text or a fingerprint.
    """

    version = models.ForeignKey(DatasetVersion, on_delete=models.CASCADE, related_name="valuation_flags")
    record_id = models.PositiveBigIntegerField()
    # The flagging valuation's job public id (job_…); a flag copied to a withdrawal's successor keeps it.
    source = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["version", "record_id"], name="valuation_flag_unique"),
        ]

    def __str__(self) -> str:
        return f"valuation flag on record {self.record_id} of version {self.version_id}"


class CustodyModel(models.Model):
    """A trained model whose weights stay in custody (issue 16): the facts marketplace lists it by.

    Training records one when a job whose license keeps the weights in custody succeeds
    (custody/services/models_custody.py); marketplace reads it to list the model without
    importing training, as it reads ``ValuationSummary``. The weights themselves are the job's
    sealed artifact (custody/services/artifacts.py), named ``artifact_name`` under ``version``.
    Written once per job, never edited.
    """

    # The training job's public id (job_…): the model's name in the API.
    job_ref = models.CharField(max_length=64, unique=True)
    version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="custody_models")
    # The organisation that trained it (the model's builder: a rights holder of its listing).
    trainer = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="custody_models")
    artifact_name = models.CharField(max_length=120)
    artifact_sha256 = models.CharField(max_length=64)
    receipt_sha256 = models.CharField(max_length=64)
    # "causal_lm" or "classification" (the base's task).
    task = models.CharField(max_length=32)
    template = models.CharField(max_length=32)
    base_name = models.CharField(max_length=120)
    # The validation metrics that left the sandbox (numbers only).
    metrics = models.JSONField(default=dict)
    # [{"version": dsv_…, "merkle_root": …, "license": lic_…}] for each version it was trained on.
    lineage = models.JSONField(default=list)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"custody model {self.job_ref}"
