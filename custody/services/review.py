"""Completing uploads, closing a version for processing, retry, review, seal, reject."""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from common.audit import audit_record
from common.blobs import blob_store
from common.exceptions import DomainError
from common.models import Role, User
from common.work import work_enqueue
from custody.crypto import ShardIdentity, blob_open, merkle_root, sha256_hex, shard_seal
from custody.exceptions import Conflict, Invalid, NotFound, ResidualRiskUnconfirmed
from custody.keys import kek_provider
from custody.models import (
    Contribution,
    ContributionState,
    DatasetVersion,
    Finding,
    GrantPurpose,
    Report,
    Shard,
    VersionState,
)
from custody.services._keys import audit_decrypt, system_grant, version_data_key
from custody.services.datasets import require_role
from custody.services.ingest import (
    RECORD_ENTITIES,
    finalize_if_ready,
    length_bucket,
    pack,
    shard_blob_key,
    shard_records,
    unpack,
    validate_upload,
)
from custody.services.residual import ResidualEstimate, residual_estimate


def _shred_parts(contribution: Contribution) -> None:
    store = blob_store()
    for part in contribution.parts.all():
        store.delete(part.blob_key)
    for index in range(contribution.batches):
        store.delete(f"quarantine/{contribution.pk}/batch-{index:06d}")


def contribution_complete(*, actor: User, contribution: Contribution) -> Contribution:
    """Finish an upload: check the parts, validate small files now, and start the ingest.

    Files up to SEALROOM_SYNC_VALIDATE_MAX_BYTES are parsed in the request, so bad
    input is a 4xx that names the line and field, and nothing stays stored.
    :raises Invalid: missing parts or invalid content. :raises Conflict: not uploading.
    """
    require_role(actor, contribution.contributor, Role.MEMBER)
    if contribution.state != ContributionState.UPLOADING:
        raise Conflict("This upload is already complete.", code="custody.upload_complete")
    numbers = list(contribution.parts.order_by("number").values_list("number", flat=True))
    if not numbers:
        _discard(contribution)
        raise Invalid("The upload is empty.", code="custody.empty_file")
    if numbers != list(range(1, len(numbers) + 1)):
        missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers))
        raise Invalid(
            f"Parts are missing: {', '.join(map(str, missing[:20]))}.",
            code="custody.parts_missing",
            errors=[{"pointer": "/parts", "code": "missing", "detail": f"Missing parts {missing[:20]}"}],
        )
    received = contribution.parts.aggregate(total=Sum("size"))["total"] or 0
    if contribution.size_expected is not None and received != contribution.size_expected:
        raise Invalid(
            f"Received {received} bytes but the upload declared {contribution.size_expected}.",
            code="custody.size_mismatch",
        )
    if received <= settings.SYNC_VALIDATE_MAX_BYTES:
        try:
            validate_upload(contribution)
        except DomainError:
            _discard(contribution)
            raise
    with transaction.atomic():
        locked = Contribution.objects.select_for_update().get(pk=contribution.pk)
        if locked.state != ContributionState.UPLOADING:
            raise Conflict("This upload is already complete.", code="custody.upload_complete")
        locked.state = ContributionState.UPLOADED
        locked.size_received = received
        locked.save(update_fields=["state", "size_received"])
        work_enqueue(kind="custody.parse", ref=f"{locked.pk}/g{locked.generation}", queue="custody")
        audit_record(
            action="custody.upload_complete",
            actor=actor,
            organisation=locked.contributor,
            object_type="contribution",
            object_id=locked.pk,
            details={"bytes": received, "parts": len(numbers)},
        )
    return locked


def contribution_abandon(*, actor: User, contribution: Contribution) -> None:
    """Give up an unfinished upload: its parts, key and row go, so the version can proceed.

    :raises Conflict: the upload was already completed.
    """
    require_role(actor, contribution.contributor, Role.MEMBER)
    if contribution.state != ContributionState.UPLOADING:
        raise Conflict("Only an unfinished upload can be abandoned.", code="custody.upload_complete")
    _discard(contribution)


def _discard(contribution: Contribution) -> None:
    """Remove a rejected upload entirely: blobs, parts, key and row (nothing half stored)."""
    _shred_parts(contribution)
    kek_provider().kek_destroy(name=contribution.quarantine_key_name)
    with transaction.atomic():
        audit_record(
            action="custody.upload_discarded",
            organisation=contribution.contributor,
            object_type="contribution",
            object_id=contribution.pk,
            details={"version": contribution.version_id, "filename": contribution.filename},
        )
        contribution.parts.all().delete()
        contribution.delete()


@transaction.atomic
def version_process(*, actor: User, version: DatasetVersion) -> DatasetVersion:
    """Close a version to uploads; it moves to review when every contribution is processed.

    :raises Conflict: not open, no contributions, or an upload still in progress.
    """
    require_role(actor, version.dataset.owner, Role.MEMBER)
    locked = DatasetVersion.objects.select_for_update().get(pk=version.pk)
    if locked.state != VersionState.UPLOADING:
        raise Conflict(f"Version {locked.number} is {locked.state}, not open.", code="custody.version_closed")
    contributions = locked.contributions.all()
    if not contributions.exists():
        raise Conflict("Upload at least one file first.", code="custody.no_contributions")
    if contributions.filter(state=ContributionState.UPLOADING).exists():
        raise Conflict(
            "An upload is still in progress; complete or abandon it.", code="custody.upload_in_progress"
        )
    locked.state = VersionState.PROCESSING
    locked.stage = locked.stage or "parse"
    locked.save(update_fields=["state", "stage"])
    audit_record(
        action="custody.version_process",
        actor=actor,
        organisation=locked.dataset.owner,
        object_type="dataset_version",
        object_id=locked.pk,
    )
    finalize_if_ready(version_id=locked.pk)
    return locked


@transaction.atomic
def version_retry(*, actor: User, version: DatasetVersion) -> DatasetVersion:
    """Retry a failed ingest: failed contributions start over under a new generation.

    Shards of a failed contribution are replaced, never duplicated.
    :raises Conflict: the version did not fail, or its quarantine copy is gone.
    """
    require_role(actor, version.dataset.owner, Role.MEMBER)
    locked = DatasetVersion.objects.select_for_update().get(pk=version.pk)
    if locked.state != VersionState.FAILED:
        raise Conflict("Only a failed version can be retried.", code="custody.not_failed")
    failed = list(locked.contributions.select_for_update().filter(state=ContributionState.FAILED))
    for contribution in failed:
        if contribution.quarantine_shredded_at is not None:
            raise Conflict(
                "The raw upload was already shredded; upload it again.", code="custody.quarantine_gone"
            )
        contribution.state = ContributionState.UPLOADED
        contribution.failure_reason = ""
        contribution.generation += 1
        contribution.save(update_fields=["state", "failure_reason", "generation"])
        work_enqueue(
            kind="custody.parse", ref=f"{contribution.pk}/g{contribution.generation}", queue="custody"
        )
    locked.state = VersionState.PROCESSING
    locked.failure_reason = ""
    locked.save(update_fields=["state", "failure_reason"])
    audit_record(
        action="custody.version_retry",
        actor=actor,
        organisation=locked.dataset.owner,
        object_type="dataset_version",
        object_id=locked.pk,
        details={"contributions": [c.pk for c in failed]},
    )
    return locked


@dataclass(frozen=True)
class SamplePage:
    """A page of before/after samples, with what the filters can choose from."""

    samples: list[dict[str, Any]]
    total: int
    languages: list[str]
    entity_types: list[str]


def _report_entries(version: DatasetVersion) -> list[dict[str, Any]]:
    """Decrypt the report's samples and residual examples (the caller audits)."""
    report = getattr(version, "report", None)
    if report is None or report.samples_blob is None:
        return []
    return unpack(
        blob_open(
            key=version_data_key(version),
            aad=f"sealroom/report/v1|version={version.pk}".encode(),
            blob=bytes(report.samples_blob),
            what="Report samples",
        )
    )


def _sample_view(entry: dict[str, Any]) -> dict[str, Any]:
    # Reports written before samples carried their spans and language get empty ones.
    return {
        "record_id": entry["record_id"],
        "field": entry["field"],
        "language": entry.get("language", ""),
        "entities": list(entry.get("entities", [])),
        "before": entry["before"],
        "after": entry["after"],
        "before_spans": [list(s) for s in entry.get("before_spans", [])],
        "after_spans": [list(s) for s in entry.get("after_spans", [])],
    }


def report_samples_page(
    *,
    actor: User,
    version: DatasetVersion,
    language: str | None = None,
    entity_type: str | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> SamplePage:
    """Before/after samples for the contributing provider, filtered and paged; the view is audited.

    :raises NotFound, NotPermitted: not the owner's member.
    """
    require_role(actor, version.dataset.owner, Role.MEMBER)
    entries = [_sample_view(e) for e in _report_entries(version) if e.get("kind", "sample") == "sample"]
    languages = sorted({e["language"] for e in entries if e["language"]})
    entity_types = sorted({t for e in entries for t in e["entities"]})
    chosen = [
        e
        for e in entries
        if (not language or e["language"] == language) and (not entity_type or entity_type in e["entities"])
    ]
    shown = chosen[max(offset, 0) :] if limit is None else chosen[max(offset, 0) : max(offset, 0) + limit]
    if shown:
        grant = system_grant(version, GrantPurpose.REVIEW)
        audit_decrypt(grant=grant, version=version, what="report_samples", count=len(shown), actor=actor)
    return SamplePage(shown, len(chosen), languages, entity_types)


def report_samples(*, actor: User, version: DatasetVersion) -> list[dict[str, Any]]:
    """Every before/after sample for the contributing provider; the view is audited (purpose review)."""
    return report_samples_page(actor=actor, version=version).samples


def residual_examples(
    *, actor: User, version: DatasetVersion, entity_type: str | None = None
) -> list[dict[str, Any]]:
    """Records where the strict detector still found something, for the provider only; audited.

    Each is ``{record_id, field, language, entities, text, hits: [[start, end, type]]}``.
    :raises NotFound, NotPermitted: not the owner's member.
    """
    require_role(actor, version.dataset.owner, Role.MEMBER)
    examples = [
        {
            "record_id": e["record_id"],
            "field": e["field"],
            "language": e.get("language", ""),
            "entities": list(e.get("entities", [])),
            "text": e["text"],
            "hits": [list(h) for h in e.get("hits", [])],
        }
        for e in _report_entries(version)
        if e.get("kind") == "residual" and (not entity_type or entity_type in e.get("entities", []))
    ]
    if examples:
        grant = system_grant(version, GrantPurpose.REVIEW)
        audit_decrypt(
            grant=grant, version=version, what="residual_examples", count=len(examples), actor=actor
        )
    return examples


def version_residual_estimate(*, version: DatasetVersion) -> ResidualEstimate | None:
    """Return the report's residual-risk estimate (counts only); None without a report or a scan."""
    report: Report | None = getattr(version, "report", None)
    if report is None:
        return None
    return residual_estimate(report.counts or {}, version.records)


@transaction.atomic
def findings_mark(*, actor: User, version: DatasetVersion, finding_ids: Iterable[int], drop: bool) -> int:
    """Choose which flagged records to drop at sealing. :raises Conflict: not in review."""
    require_role(actor, version.dataset.owner, Role.MEMBER)
    version = DatasetVersion.objects.select_for_update().get(pk=version.pk)
    if version.state != VersionState.REVIEW:
        raise Conflict("Findings can only be changed during review.", code="custody.not_in_review")
    ids = list(finding_ids)
    found = Finding.objects.filter(version=version, pk__in=ids)
    if found.count() != len(set(ids)):
        raise NotFound("Some findings do not belong to this version.", code="custody.finding_not_found")
    return found.update(drop=drop)


def version_seal(
    *, actor: User, version: DatasetVersion, confirm_residual_risk: bool = False
) -> DatasetVersion:
    """Apply the drops, compute the Merkle root, freeze the version and shred the quarantine.

    A version whose residual-risk estimate is above RESIDUAL_RISK_CONFIRM_ABOVE is
    sealed only with ``confirm_residual_risk``.
    :raises Conflict: not in review. :raises ResidualRiskUnconfirmed: the estimate is
    high and sealing was not confirmed. :raises IntegrityFailure: a shard was tampered with.
    """
    require_role(actor, version.dataset.owner, Role.MEMBER)
    version = DatasetVersion.objects.select_related("dataset", "report").get(pk=version.pk)
    if version.state != VersionState.REVIEW:
        raise Conflict("Only a version in review can be sealed.", code="custody.not_in_review")
    estimate = version_residual_estimate(version=version)
    if estimate is not None and estimate.needs_confirmation and not confirm_residual_risk:
        raise ResidualRiskUnconfirmed(
            f"The strict detector found something left in {estimate.any.rate:.1%} of the "
            f"{estimate.sampled} sampled records (above {estimate.threshold:.1%}). Review the examples "
            "in the report, then confirm to seal anyway (confirm_residual_risk: true).",
            code="custody.residual_risk_unconfirmed",
        )
    drops = set(Finding.objects.filter(version=version, drop=True).values_list("record_id", flat=True))
    dropped = _apply_drops(version, drops, actor) if drops else None
    with transaction.atomic():
        locked = DatasetVersion.objects.select_for_update().get(pk=version.pk)
        if locked.state != VersionState.REVIEW:
            raise Conflict("Only a version in review can be sealed.", code="custody.not_in_review")
        shards = list(locked.shards.order_by("index"))
        root = merkle_root([s.sha256 for s in shards])
        totals = locked.shards.aggregate(r=Sum("records"), t=Sum("tokens"))
        locked.merkle_root = root
        locked.records = totals["r"] or 0
        locked.tokens = totals["t"] or 0
        locked.state = VersionState.SEALED
        locked.stage = "sealed"
        locked.sealed_at = timezone.now()
        locked.sealed_by = actor
        locked.save(
            update_fields=["merkle_root", "records", "tokens", "state", "stage", "sealed_at", "sealed_by"]
        )
        if dropped is not None and hasattr(locked, "report"):
            # The report's counts become the sealed version's: listings, their
            # API and Croissant read them, and must not count dropped records.
            locked.report.counts = _counts_without(locked.report.counts or {}, dropped)
            locked.report.save(update_fields=["counts"])
        audit_record(
            action="custody.version_seal",
            actor=actor,
            organisation=locked.dataset.owner,
            object_type="dataset_version",
            object_id=locked.pk,
            details={
                "merkle_root": root,
                "shards": len(shards),
                "records": locked.records,
                "dropped": len(drops),
                "residual": None
                if estimate is None
                else {
                    "sampled": estimate.sampled,
                    "rate": round(estimate.any.rate, 6),
                    "confirmed": bool(confirm_residual_risk and estimate.needs_confirmation),
                },
            },
        )
    quarantine_shred(version=locked)
    return locked


def _apply_drops(version: DatasetVersion, drops: set[int], actor: User) -> dict[str, Any]:
    """Rewrite each shard that holds dropped records (same index, re-encrypted).

    Returns the report counts of the dropped records (languages, lengths, entities).
    """
    from custody.tokens import count_tokens

    data_key = version_data_key(version)
    grant = system_grant(version, GrantPurpose.REVIEW)
    dropped: dict[str, Any] = {
        "languages": Counter(),
        "lengths": Counter(),
        "entities": Counter(),
        "by_field": defaultdict(Counter),
        "by_language": defaultdict(Counter),
    }
    for shard in version.shards.order_by("index"):
        last = shard.first_record + shard.records
        if not any(shard.first_record <= d < last for d in drops):
            continue
        everything = shard_records(version, shard, data_key)
        records = [r for r in everything if r["id"] not in drops]
        entities = (shard.stats or {}).get(RECORD_ENTITIES) or {}
        for record in everything:
            if record["id"] in drops:
                _count_dropped(dropped, record, entities.get(str(record["id"])) or {})
        audit_decrypt(
            grant=grant, version=version, what=f"seal_drop_shard_{shard.index}", count=shard.records
        )
        identity = ShardIdentity(version_id=version.pk, index=shard.index, key_version=version.key_version)
        blob = shard_seal(data_key=data_key, identity=identity, plaintext=pack(records))
        key = shard_blob_key(version, shard.index, version.key_version) + "-sealed"
        blob_store().put(key, io.BytesIO(blob))
        tokens = sum(count_tokens(["\n".join(r["text"].values()) for r in records]))
        old_key = shard.blob_key
        Shard.objects.filter(pk=shard.pk).update(
            records=len(records), tokens=tokens, size=len(blob), sha256=sha256_hex(blob), blob_key=key
        )
        blob_store().delete(old_key)
    return dropped


def _count_dropped(
    dropped: dict[str, Any], record: dict[str, Any], entities: dict[str, dict[str, int]]
) -> None:
    language = record.get("lang") or "other"
    dropped["languages"][language] += 1
    dropped["lengths"][length_bucket(len("\n".join(record["text"].values())))] += 1
    for field, counts in entities.items():
        for entity_type, n in counts.items():
            dropped["entities"][entity_type] += n
            dropped["by_field"][field][entity_type] += n
            dropped["by_language"][language][entity_type] += n


def _counts_without(counts: dict[str, Any], dropped: dict[str, Any]) -> dict[str, Any]:
    """The report's counts less those of the dropped records (never below zero)."""

    def less(have: dict[str, int], minus: dict[str, int]) -> dict[str, int]:
        left = {k: v - minus.get(k, 0) for k, v in have.items()}
        return {k: v for k, v in left.items() if v > 0}

    out = dict(counts)
    for key in ("languages", "lengths", "entities"):
        out[key] = less(counts.get(key) or {}, dropped[key])
    for key in ("by_field", "by_language"):
        nested = counts.get(key) or {}
        out[key] = {
            sub: rest for sub, have in nested.items() if (rest := less(have, dropped[key].get(sub, {})))
        }
    return out


def version_reject(*, actor: User, version: DatasetVersion, reason: str = "") -> DatasetVersion:
    """Reject a version in review (or a failed one): nothing of it is kept usable."""
    require_role(actor, version.dataset.owner, Role.MEMBER)
    with transaction.atomic():
        locked = DatasetVersion.objects.select_for_update().get(pk=version.pk)
        if locked.state not in (VersionState.REVIEW, VersionState.FAILED, VersionState.UPLOADING):
            raise Conflict(f"A {locked.state} version cannot be rejected.", code="custody.cannot_reject")
        locked.state = (
            VersionState.REJECTED if locked.state != VersionState.UPLOADING else VersionState.ABANDONED
        )
        locked.failure_reason = reason[:2000]
        locked.save(update_fields=["state", "failure_reason"])
        audit_record(
            action=f"custody.version_{locked.state}",
            actor=actor,
            organisation=locked.dataset.owner,
            object_type="dataset_version",
            object_id=locked.pk,
            details={"reason": reason[:300]},
        )
    quarantine_shred(version=locked)
    return locked


def quarantine_shred(*, version: DatasetVersion) -> int:
    """Crypto-shred every quarantine copy of the version: destroy keys, delete blobs."""
    shredded = 0
    for contribution_id in version.contributions.filter(quarantine_shredded_at__isnull=True).values_list(
        "pk", flat=True
    ):
        with transaction.atomic():
            # Locked, so a concurrent rewrap of this key cannot write it back.
            contribution = Contribution.objects.select_for_update().get(pk=contribution_id)
            if contribution.quarantine_shredded_at is not None:
                continue
            kek_provider().kek_destroy(name=contribution.quarantine_key_name)
            _shred_parts(contribution)
            contribution.quarantine_shredded_at = timezone.now()
            contribution.save(update_fields=["quarantine_shredded_at"])
            audit_record(
                action="custody.quarantine_shred",
                organisation=contribution.contributor,
                object_type="contribution",
                object_id=contribution.pk,
                details={"version": version.pk},
            )
        shredded += 1
    return shredded


def quarantine_retention_sweep() -> int:
    """Shred quarantine copies older than the retention period, unless still being processed.

    A version still open for uploads when its copies expire is abandoned: its
    raw data is gone, so it could never be processed.
    """
    cutoff = timezone.now() - timedelta(days=settings.QUARANTINE_RETENTION_DAYS)
    stale = (
        Contribution.objects.filter(quarantine_shredded_at__isnull=True, created_at__lt=cutoff)
        .exclude(version__state=VersionState.PROCESSING)
        .select_related("version")
    )
    versions = {c.version for c in stale}
    shredded = 0
    for version in versions:
        with transaction.atomic():
            locked = DatasetVersion.objects.select_for_update().get(pk=version.pk)
            if locked.state in (VersionState.UPLOADING, VersionState.FAILED):
                locked.state = VersionState.ABANDONED
                locked.save(update_fields=["state"])
                audit_record(
                    action="custody.version_abandoned",
                    organisation=locked.dataset.owner,
                    object_type="dataset_version",
                    object_id=locked.pk,
                    details={"reason": "quarantine retention expired"},
                )
        shredded += quarantine_shred(version=version)
    return shredded
