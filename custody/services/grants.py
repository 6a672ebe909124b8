"""The seam (DESIGN.md "Custody's public services"): grants, streams, usage, privacy budget.

``grant_stream_open`` is the only code path that decrypts custody records for
anyone but the ingest itself; every open is audited with its grant and purpose,
and the grant is re-checked before every batch, so a revoked grant stops an
open stream at the next batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from common.audit import audit_record
from common.models import Organisation
from custody import signals
from custody.exceptions import Conflict, Invalid
from custody.models import (
    BudgetState,
    Contribution,
    DatasetVersion,
    Grant,
    GrantJob,
    GrantPurpose,
    GrantState,
    PrivacyBudgetEntry,
    UsageByContribution,
    UsageKind,
    UsageRecord,
    VersionState,
)
from custody.services._keys import version_data_key
from custody.services.ingest import shard_records

TERM_KEYS = {
    "purposes": list,
    "job_templates": list,
    "max_jobs": int,
    "max_tokens": int,
    "max_epochs": int,
    "epsilon_cap": (int, float, str),
    "dp_required": bool,
    "weights_may_leave": bool,
    "expires_at": str,
}


def _terms_validated(
    version: DatasetVersion, terms: dict[str, Any]
) -> tuple[dict[str, Any], datetime | None]:
    errors = []
    for key, value in terms.items():
        expected = TERM_KEYS.get(key)
        if expected is not None and not isinstance(value, expected):  # type: ignore[arg-type]
            errors.append({"pointer": f"/terms/{key}", "code": "invalid", "detail": f"Wrong type for {key}."})
    expires_at = None
    if "expires_at" in terms and not errors:
        expires_at = parse_datetime(terms["expires_at"])
        if expires_at is None or expires_at.tzinfo is None:
            errors.append(
                {"pointer": "/terms/expires_at", "code": "invalid", "detail": "Use ISO 8601 with a zone."}
            )
    cap = terms.get("epsilon_cap")
    if cap is not None and not errors:
        try:
            cap_value = Decimal(str(cap))
        except InvalidOperation:
            cap_value = Decimal(0)
        if cap_value <= 0 or (version.epsilon_cap is not None and cap_value > version.epsilon_cap):
            errors.append(
                {
                    "pointer": "/terms/epsilon_cap",
                    "code": "out_of_range",
                    "detail": f"Must be positive and at most the version's cap ({version.epsilon_cap}).",
                }
            )
    if errors:
        raise Invalid(errors[0]["detail"], code="custody.terms_invalid", errors=errors)  # type: ignore[arg-type]
    snapshot = dict(terms)
    if version.epsilon_cap is not None:
        # A version with a cap accepts only DP jobs, whatever the license says.
        snapshot["dp_required"] = True
    return snapshot, expires_at


@transaction.atomic
def grant_issue(
    *, version: DatasetVersion, licensee_org: Organisation, terms: dict[str, Any], external_ref: str
) -> Grant:
    """Issue (idempotently per ``external_ref``) the grant behind a license.

    :raises Conflict: the version is not sealed, or the ref belongs to another grant.
    :raises Invalid: malformed terms, or an epsilon cap above the version's.
    """
    if not external_ref:
        raise Invalid("A grant needs an external reference.", code="custody.grant_ref_missing")
    existing = Grant.objects.filter(external_ref=external_ref).first()
    if existing is not None:
        if existing.version_id != version.pk or existing.licensee_id != licensee_org.pk:
            raise Conflict("That reference already names another grant.", code="custody.grant_ref_taken")
        return existing
    locked = DatasetVersion.objects.select_for_update().get(pk=version.pk)
    if locked.state != VersionState.SEALED:
        raise Conflict(
            f"Version {locked.public_id} is {locked.state}, not sealed.", code="custody.version_not_sealed"
        )
    snapshot, expires_at = _terms_validated(locked, terms)
    grant = Grant.objects.create(
        version=locked,
        licensee=licensee_org,
        purpose=GrantPurpose.LICENSE,
        terms=snapshot,
        external_ref=external_ref,
        expires_at=expires_at,
    )
    audit_record(
        action="custody.grant_issue",
        organisation=licensee_org,
        object_type="grant",
        object_id=grant.pk,
        details={"version": locked.pk, "external_ref": external_ref, "terms": snapshot},
    )
    return grant


@transaction.atomic
def grant_revoke(*, grant: Grant, reason: str) -> Grant:
    """Revoke a grant (idempotent); open streams stop at their next batch."""
    locked = Grant.objects.select_for_update().get(pk=grant.pk)
    if locked.state == GrantState.REVOKED:
        return locked
    locked.state = GrantState.REVOKED
    locked.revoked_at = timezone.now()
    locked.revoke_reason = reason[:300]
    locked.save(update_fields=["state", "revoked_at", "revoke_reason"])
    audit_record(
        action="custody.grant_revoke",
        organisation=locked.licensee,
        object_type="grant",
        object_id=locked.pk,
        details={"reason": reason[:300]},
    )
    signals.send_after_commit(signals.grant_revoked, grant_id=locked.pk, reason=reason)
    return locked


def grant_check(grant: Grant) -> None:
    """:raises Conflict: revoked, expired, or its version is no longer available."""
    if grant.state == GrantState.REVOKED:
        raise Conflict(f"Grant {grant.public_id} was revoked.", code="custody.grant_revoked")
    if grant.expires_at is not None and grant.expires_at <= timezone.now():
        raise Conflict(f"Grant {grant.public_id} has expired.", code="custody.grant_expired")
    row = DatasetVersion.objects.filter(pk=grant.version_id).values_list("state", "public_id").first()
    state, version_public_id = row if row is not None else (None, "")
    if state not in (VersionState.SEALED, VersionState.REVIEW, VersionState.PROCESSING):
        raise Conflict(f"Version {version_public_id} is {state}.", code="custody.version_unavailable")


@transaction.atomic
def grant_job_reserve(*, grant: Grant, consumer_ref: str, model_use: str | None = None) -> GrantJob:
    """Count a job against the grant's limits, once per ``consumer_ref``.

    A model license (issue 16) meters tokens, not jobs (its ``max_jobs`` is 0, so no job reads
    data under it): a job that uses the licensed model itself (``model_use``, e.g. ``generate``)
    is allowed by that use's term instead (``models_custody.model_use_allowed``).

    :raises Conflict: the grant is unusable, has no jobs left, or its terms do not allow
        ``model_use``.
    """
    locked = Grant.objects.select_for_update().get(pk=grant.pk)
    existing = GrantJob.objects.filter(grant=locked, consumer_ref=consumer_ref).first()
    if existing is not None:
        return existing
    grant_check(locked)
    details: dict[str, Any] = {"consumer_ref": consumer_ref}
    if model_use is not None:
        from custody.services.models_custody import model_use_allowed

        if not model_use_allowed(locked.terms, model_use):
            raise Conflict(
                f"Model license {locked.public_id} does not allow {model_use}.",
                code="custody.model_use_not_licensed",
            )
        details["model_use"] = model_use
    else:
        max_jobs = locked.terms.get("max_jobs")
        if max_jobs is not None and locked.jobs_reserved >= int(max_jobs):
            raise Conflict(
                f"Grant {locked.public_id} has no jobs left ({max_jobs} allowed).",
                code="custody.grant_jobs_exhausted",
            )
    job = GrantJob.objects.create(grant=locked, consumer_ref=consumer_ref)
    locked.jobs_reserved += 1
    locked.save(update_fields=["jobs_reserved"])
    audit_record(
        action="custody.grant_job_reserve",
        organisation=locked.licensee,
        object_type="grant",
        object_id=locked.pk,
        details={**details, "jobs_reserved": locked.jobs_reserved},
    )
    return job


@transaction.atomic
def grant_job_release(*, grant: Grant, consumer_ref: str) -> bool:
    """Give back a job's slot on the grant: it ended before training began (idempotent).

    Returns whether a slot was given back.
    :raises Conflict: the job has started (its ``job_started`` usage is recorded).
    """
    locked = Grant.objects.select_for_update().get(pk=grant.pk)
    job = GrantJob.objects.filter(grant=locked, consumer_ref=consumer_ref).first()
    if job is None:
        return False
    if UsageRecord.objects.filter(
        grant=locked, consumer_ref=consumer_ref, kind=UsageKind.JOB_STARTED
    ).exists():
        raise Conflict(
            f"Job {consumer_ref} has started: its slot stays used.", code="custody.grant_job_started"
        )
    job.delete()
    locked.jobs_reserved -= 1
    locked.save(update_fields=["jobs_reserved"])
    audit_record(
        action="custody.grant_job_release",
        organisation=locked.licensee,
        object_type="grant",
        object_id=locked.pk,
        details={"consumer_ref": consumer_ref, "jobs_reserved": locked.jobs_reserved},
    )
    return True


@dataclass
class GrantStream:
    """Decrypted records batch by batch; the grant is re-checked before each batch.

    Each record names the contribution it came from (``contribution``, an id), so that a
    consumer can meter what it reads per contribution (``usage_record``'s ``by_contribution``).
    """

    grant: Grant
    consumer_ref: str
    purpose: str
    records: int = 0
    batches: int = 0
    _shards: list[Any] = field(default_factory=list)

    def __iter__(self) -> Iterator[list[dict[str, Any]]]:
        version = DatasetVersion.objects.get(pk=self.grant.version_id)
        data_key = version_data_key(version)
        for shard in self._shards:
            current = Grant.objects.get(pk=self.grant.pk)
            grant_check(current)
            if current.version_id != version.pk:
                # A contribution was withdrawn and the grant moved to the successor version.
                raise Conflict(
                    f"Version {version.public_id} was superseded while it was read.",
                    code="custody.version_unavailable",
                )
            batch = [
                {
                    "id": r["id"],
                    "text": r["text"],
                    "meta": r["meta"],
                    "lang": r["lang"],
                    "contribution": shard.contribution_id,
                }
                for r in shard_records(version, shard, data_key)
            ]
            self.records += len(batch)
            self.batches += 1
            yield batch


def grant_stream_open(*, grant: Grant, consumer_ref: str, purpose: str) -> GrantStream:
    """Open the version's records for a consumer under a grant; the open is audited.

    :raises Conflict: the grant is unusable or the purpose is not the grant's.
    """
    fresh = Grant.objects.select_related("version__dataset").get(pk=grant.pk)
    grant_check(fresh)
    if purpose != fresh.purpose:
        raise Conflict(
            f"Grant {fresh.public_id} is for {fresh.purpose}, not {purpose}.",
            code="custody.grant_wrong_purpose",
        )
    shards = list(fresh.version.shards.order_by("index"))
    with transaction.atomic():
        audit_record(
            action="custody.stream_open",
            organisation=fresh.licensee or fresh.version.dataset.owner,
            object_type="grant",
            object_id=fresh.pk,
            details={
                "version": fresh.version_id,
                "purpose": purpose,
                "consumer_ref": consumer_ref,
                "shards": len(shards),
            },
        )
    return GrantStream(grant=fresh, consumer_ref=consumer_ref, purpose=purpose, _shards=shards)


def _reads_validated(
    grant: Grant, kind: str, quantity: int, by_contribution: Mapping[int, int]
) -> dict[int, int]:
    """The per-contribution reads, checked: tokens only, the version's contributions, summing exactly.

    :raises Invalid: anything else (the pointer names the offending contribution).
    """
    if kind != UsageKind.TOKENS_TRAINED:
        raise Invalid(
            f"Only {UsageKind.TOKENS_TRAINED} usage is metered per contribution, not {kind}.",
            code="custody.usage_reads_invalid",
        )
    known = set(Contribution.objects.filter(version_id=grant.version_id).values_list("pk", flat=True))
    errors = []
    for contribution_id, tokens in sorted(by_contribution.items()):
        if contribution_id not in known:
            detail = f"Contribution {contribution_id} is not part of version {grant.version_id}."
        elif isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            detail = "Tokens read must be a non-negative integer."
        else:
            continue
        errors.append({"pointer": f"/by_contribution/{contribution_id}", "code": "invalid", "detail": detail})
    if not errors and sum(by_contribution.values()) != quantity:
        errors.append(
            {
                "pointer": "/by_contribution",
                "code": "sum_mismatch",
                "detail": f"The reads add up to {sum(by_contribution.values())}, not {quantity}.",
            }
        )
    if errors:
        raise Invalid(errors[0]["detail"], code="custody.usage_reads_invalid", errors=errors)  # type: ignore[arg-type]
    return {int(k): int(v) for k, v in by_contribution.items() if v}


def usage_record(
    *,
    grant: Grant,
    consumer_ref: str,
    kind: str,
    quantity: int,
    by_contribution: Mapping[int, int] | None = None,
) -> UsageRecord:
    """Record usage once per (grant, consumer, kind); a retried job never counts twice.

    ``by_contribution`` ({contribution id: platform tokens}, ``tokens_trained`` only) says what the
    job read from each contribution; it is recorded with the usage, in its transaction, so once
    too, and must add up to ``quantity``. A repeat returns the first record, reads unchanged.

    :raises Invalid: unknown kind, negative quantity, or reads that are not the version's or do
        not add up.
    """
    if kind not in UsageKind.values:
        raise Invalid(f"Unknown usage kind {kind!r}.", code="custody.usage_kind_invalid")
    if quantity < 0:
        raise Invalid("Usage cannot be negative.", code="custody.usage_negative")
    existing = UsageRecord.objects.filter(grant=grant, consumer_ref=consumer_ref, kind=kind).first()
    if existing is not None:
        return existing
    reads = _reads_validated(grant, kind, quantity, by_contribution) if by_contribution is not None else {}
    try:
        with transaction.atomic():
            usage = UsageRecord.objects.create(
                grant=grant, consumer_ref=consumer_ref, kind=kind, quantity=quantity
            )
            UsageByContribution.objects.bulk_create(
                UsageByContribution(usage=usage, contribution_id=contribution_id, quantity=tokens)
                for contribution_id, tokens in sorted(reads.items())
            )
            details: dict[str, Any] = {"consumer_ref": consumer_ref, "kind": kind, "quantity": quantity}
            if by_contribution is not None:
                details["by_contribution"] = {str(k): v for k, v in sorted(reads.items())}
            audit_record(
                action="custody.usage_record",
                organisation=grant.licensee,
                object_type="grant",
                object_id=grant.pk,
                details=details,
            )
            signals.send_after_commit(signals.usage_recorded, usage_id=usage.pk, grant_id=grant.pk)
    except IntegrityError:
        # A concurrent retry recorded it first: the unique constraint keeps it single.
        return UsageRecord.objects.get(grant=grant, consumer_ref=consumer_ref, kind=kind)
    return usage


def usage_mark_settled(*, usage: UsageRecord) -> None:
    """Mark a usage record settled (marketplace, inside its settlement's transaction); idempotent."""
    UsageRecord.objects.filter(pk=usage.pk, settled_at__isnull=True).update(settled_at=timezone.now())


# --- privacy budget ---------------------------------------------------------------------


def _spent(version: DatasetVersion) -> Decimal:
    total = (
        PrivacyBudgetEntry.objects.filter(version=version)
        .exclude(state=BudgetState.RELEASED)
        .aggregate(total=Sum("epsilon"))["total"]
    )
    return Decimal(total or 0)


@transaction.atomic
def privacy_budget_reserve(
    *, version: DatasetVersion, consumer_ref: str, epsilon: Decimal
) -> PrivacyBudgetEntry:
    """Reserve epsilon against the version's cap (idempotent per consumer).

    :raises Conflict: the cap would be exceeded. :raises Invalid: epsilon not positive.
    """
    epsilon = Decimal(str(epsilon))
    if epsilon <= 0:
        raise Invalid("Epsilon must be positive.", code="custody.epsilon_invalid")
    locked = DatasetVersion.objects.select_for_update().get(pk=version.pk)
    existing = PrivacyBudgetEntry.objects.filter(version=locked, consumer_ref=consumer_ref).first()
    if existing is not None:
        return existing
    if locked.epsilon_cap is not None and _spent(locked) + epsilon > locked.epsilon_cap:
        remaining = locked.epsilon_cap - _spent(locked)
        raise Conflict(
            f"Version {locked.public_id} has epsilon {remaining} left of {locked.epsilon_cap}; "
            f"{epsilon} asked.",
            code="custody.privacy_budget_exhausted",
        )
    entry = PrivacyBudgetEntry.objects.create(version=locked, consumer_ref=consumer_ref, epsilon=epsilon)
    audit_record(
        action="custody.budget_reserve",
        organisation=locked.dataset.owner,
        object_type="dataset_version",
        object_id=locked.pk,
        details={"consumer_ref": consumer_ref, "epsilon": str(epsilon)},
    )
    return entry


def _budget_move(version: DatasetVersion, consumer_ref: str, to: BudgetState) -> PrivacyBudgetEntry:
    with transaction.atomic():
        entry = PrivacyBudgetEntry.objects.select_for_update().get(version=version, consumer_ref=consumer_ref)
        if entry.state == to:
            return entry
        if entry.state != BudgetState.RESERVED:
            raise Conflict(
                f"Budget for {consumer_ref} is already {entry.state}.", code="custody.budget_already_final"
            )
        entry.state = to
        entry.updated_at = timezone.now()
        entry.save(update_fields=["state", "updated_at"])
        audit_record(
            action=f"custody.budget_{to}",
            organisation=version.dataset.owner,
            object_type="dataset_version",
            object_id=version.pk,
            details={"consumer_ref": consumer_ref, "epsilon": str(entry.epsilon)},
        )
        return entry


def privacy_budget_commit(*, version: DatasetVersion, consumer_ref: str) -> PrivacyBudgetEntry:
    """Spend the reservation: anything (even a metric) left the sandbox."""
    return _budget_move(version, consumer_ref, BudgetState.COMMITTED)


def privacy_budget_release(*, version: DatasetVersion, consumer_ref: str) -> PrivacyBudgetEntry:
    """Give the reservation back: the job failed before training. :raises Conflict: committed."""
    return _budget_move(version, consumer_ref, BudgetState.RELEASED)
