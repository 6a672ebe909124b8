"""Withdrawal of one contribution from a sealed version (issue 15 item 4; docs/operations.md "Withdrawal").

- :func:`contribution_withdraw` (an admin of the contributing organisation, a
  co-contributor of a pooled version included, or an operator): in one
  transaction the version becomes ``superseded`` (closed: ``grant_check``
  refuses it, so no new job starts and open streams stop at their next batch),
  a :class:`~custody.models.ContributionWithdrawal` row records the request, it
  is audited, and a ``custody.withdraw`` work item is enqueued. Asking again
  returns the same row.
- The work item (:func:`withdrawal_run`, leased and retried by ``common.work``,
  so a killed worker's item is picked up again) runs three steps, each safe to
  repeat: create the successor version with fresh keys and a copy of each other
  contribution (``carried_from`` keeps the lineage); re-encrypt each of their
  shards under the successor's key (a shard already written is skipped); then,
  in one transaction, seal the successor (new Merkle root), move the old
  version's active license grants to it (their terms are a snapshot, so they
  carry over unchanged), copy the privacy budget spent on the old version
  (the remaining records were in every earlier release), and ring
  ``contribution_withdrawn`` after commit for marketplace (licenses, listings)
  and training (holders of released artifacts are notified).

Nothing of the withdrawn contribution is copied: its shards stay only under
the old version's key, which an operator may crypto-shred (``superseded`` is
shreddable) once nothing else needs it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Max, Q, Sum
from django.utils import timezone

from common.audit import audit_reason, audit_record
from common.blobs import blob_store
from common.models import Organisation, Role, User
from common.notifications import notify_event
from common.work import PermanentWorkError, work_enqueue, work_handler
from custody import signals
from custody.crypto import ShardIdentity, blob_open, blob_seal, merkle_root, sha256_hex, shard_seal
from custody.exceptions import Conflict, NotFound
from custody.models import (
    Contribution,
    ContributionState,
    ContributionWithdrawal,
    DatasetVersion,
    Grant,
    GrantJob,
    GrantPurpose,
    GrantState,
    PrivacyBudgetEntry,
    Report,
    Shard,
    UsageByContribution,
    VersionContributor,
    VersionState,
    WithdrawalState,
)
from custody.services._keys import audit_decrypt, system_grant, version_data_key, version_keys_create
from custody.services.artifacts import artifact_blob_key, artifact_open, artifact_seal
from custody.services.datasets import require_role
from custody.services.ingest import _merge, pack, samples_aad, shard_blob_key, shard_records
from custody.services.review import _counts_without
from custody.services.valuation import valuation_flags_carry_to_successor

WITHDRAW_WORK = "custody.withdraw"


def _requested_as(actor: User | None, contribution: Contribution) -> str:
    """Who asks. :raises NotFound: not a member of the contributor. :raises NotPermitted: not its admin."""
    if actor is None or actor.is_operator:
        return "operator"
    require_role(actor, contribution.contributor, Role.ADMIN)
    return "contributor"


def contribution_withdraw(
    *, actor: User | None, contribution: Contribution, reason: str
) -> ContributionWithdrawal:
    """Withdraw a contribution from its sealed version; the re-seal runs as a work item.

    Idempotent: a contribution already withdrawn returns its withdrawal.
    ``actor=None`` is the command line. :raises NotFound: not a member of the
    contributing organisation. :raises NotPermitted: role below admin.
    :raises Invalid: no reason. :raises Conflict: the version is not sealed
    (superseded: withdraw from its successor), the contribution holds no
    records, or it is the only one that does (take the version down instead).
    """
    requested_as = _requested_as(actor, contribution)
    existing = ContributionWithdrawal.objects.filter(contribution=contribution).first()
    if existing is not None:
        return existing
    reason = audit_reason(reason, code="custody.reason_required")
    with transaction.atomic():
        version = DatasetVersion.objects.select_for_update(of=("self",)).get(pk=contribution.version_id)
        existing = ContributionWithdrawal.objects.filter(contribution=contribution).first()
        if existing is not None:
            return existing
        _check_withdrawable(version, contribution)
        version.state = VersionState.SUPERSEDED
        version.stage = "withdrawing"
        version.save(update_fields=["state", "stage"])
        withdrawal = ContributionWithdrawal.objects.create(
            contribution=contribution,
            from_version=version,
            organisation=contribution.contributor,
            requested_by=actor,
            requested_as=requested_as,
            reason=reason,
        )
        audit_record(
            action="custody.contribution_withdraw",
            actor=actor,
            actor_name="" if actor is not None else "command line",
            organisation=contribution.contributor,
            object_type="contribution",
            object_id=contribution.pk,
            details={
                "withdrawal": withdrawal.public_id,
                "version": version.pk,
                "owner": version.dataset.owner_id,
                "reason": reason,
                "requested_as": requested_as,
            },
        )
        work_enqueue(kind=WITHDRAW_WORK, ref=str(withdrawal.pk), queue="custody")
    return withdrawal


def _check_withdrawable(version: DatasetVersion, contribution: Contribution) -> None:
    if version.state == VersionState.SUPERSEDED:
        raise Conflict(
            f"Version {version.number} was superseded by another contributor's withdrawal: withdraw "
            "this contribution from the version that replaces it, once that is sealed.",
            code="custody.version_superseded",
        )
    if version.state != VersionState.SEALED:
        raise Conflict(
            f"Version {version.number} is {version.get_state_display().lower()}: only a sealed version's "
            "contributions are withdrawn (before sealing, abandon the upload or reject the version).",
            code="custody.version_not_sealed",
        )
    if not Shard.objects.filter(version=version, contribution=contribution, records__gt=0).exists():
        raise Conflict(
            "This contribution holds no records in the sealed version (its upload failed, or every "
            "record was dropped at sealing): there is nothing to withdraw.",
            code="custody.nothing_to_withdraw",
        )
    others = Shard.objects.filter(version=version, records__gt=0).exclude(contribution=contribution).exists()
    if not others:
        raise Conflict(
            "This is the only contribution with records in the version: take the version down instead.",
            code="custody.withdraw_last_contribution",
        )


# --- the work item ------------------------------------------------------------------------------


def withdrawal_run(*, withdrawal_id: int) -> ContributionWithdrawal:
    """Create, fill and seal the successor version; move the licenses. Safe to run again at any point."""
    withdrawal = ContributionWithdrawal.objects.select_related("from_version__dataset").get(pk=withdrawal_id)
    if withdrawal.state == WithdrawalState.DONE:
        return withdrawal
    successor = _successor(withdrawal.pk)
    _reseal_shards(withdrawal, successor)
    _reseal_artifacts(withdrawal, successor)
    return _finish(withdrawal.pk)


@transaction.atomic
def _successor(withdrawal_id: int) -> DatasetVersion:
    """The successor version with its keys, contributors and carried contributions (created once)."""
    withdrawal = ContributionWithdrawal.objects.select_for_update().get(pk=withdrawal_id)
    if withdrawal.to_version_id is not None:
        return DatasetVersion.objects.get(pk=withdrawal.to_version_id)
    old = DatasetVersion.objects.select_related("dataset__owner").get(pk=withdrawal.from_version_id)
    dataset = type(old.dataset).objects.select_for_update().get(pk=old.dataset_id)
    number = (dataset.versions.aggregate(n=Max("number"))["n"] or 0) + 1
    new = DatasetVersion.objects.create(
        dataset=dataset,
        number=number,
        state=VersionState.PROCESSING,
        stage="withdraw_reseal",
        epsilon_cap=old.epsilon_cap,
        next_record_id=old.next_record_id,
        created_by=withdrawal.requested_by,
    )
    version_keys_create(new)
    new.save(update_fields=["wrapped_data_key", "wrapped_pseudonym_key"])
    kept = old.contributions.filter(state=ContributionState.DONE).exclude(pk=withdrawal.contribution_id)
    organisations = {old.dataset.owner_id, *kept.values_list("contributor_id", flat=True)}
    for organisation_id in sorted(organisations):
        VersionContributor.objects.create(
            version=new, organisation_id=organisation_id, invited_by=withdrawal.requested_by
        )
    now = timezone.now()
    for c in kept.order_by("pk"):
        Contribution.objects.create(
            version=new,
            contributor_id=c.contributor_id,
            uploaded_by_id=c.uploaded_by_id,
            filename=c.filename,
            format=c.format,
            gzip=c.gzip,
            text_fields=c.text_fields,
            metadata_fields=c.metadata_fields,
            state=ContributionState.DONE,
            size_expected=c.size_expected,
            size_received=c.size_received,
            raw_sha256=c.raw_sha256,
            first_record_id=c.first_record_id,
            # The raw upload was shredded when the old version was sealed; none is carried.
            quarantine_shredded_at=c.quarantine_shredded_at or now,
            carried_from=c,
        )
    withdrawal.to_version = new
    withdrawal.save(update_fields=["to_version"])
    audit_record(
        action="custody.version_create",
        actor=withdrawal.requested_by,
        organisation=dataset.owner,
        object_type="dataset_version",
        object_id=new.pk,
        details={"dataset": dataset.pk, "number": number, "withdrawal": withdrawal.public_id, "from": old.pk},
    )
    return new


def _kept_shards(withdrawal: ContributionWithdrawal) -> list[Shard]:
    return list(
        Shard.objects.filter(version_id=withdrawal.from_version_id)
        .exclude(contribution_id=withdrawal.contribution_id)
        .order_by("index")
    )


def _reseal_shards(withdrawal: ContributionWithdrawal, new: DatasetVersion) -> None:
    """Re-encrypt each kept shard under the successor's key (index renumbered, record ids kept)."""
    old = DatasetVersion.objects.get(pk=withdrawal.from_version_id)
    carried = dict(new.contributions.values_list("carried_from_id", "pk"))
    done = set(Shard.objects.filter(version=new).values_list("index", flat=True))
    old_key, new_key = version_data_key(old), version_data_key(new)
    grant = system_grant(old, GrantPurpose.REKEY)
    for index, shard in enumerate(_kept_shards(withdrawal)):
        if index in done:
            continue
        records = shard_records(old, shard, old_key)
        audit_decrypt(
            grant=grant, version=old, what=f"withdraw_reseal_shard_{shard.index}", count=len(records)
        )
        identity = ShardIdentity(version_id=new.pk, index=index, key_version=new.key_version)
        blob = shard_seal(data_key=new_key, identity=identity, plaintext=pack(records))
        key = shard_blob_key(new, index, new.key_version)
        blob_store().put(key, io.BytesIO(blob))
        samples = None
        if shard.samples_blob is not None:
            plain = blob_open(
                key=old_key, aad=samples_aad(old, shard.index), blob=bytes(shard.samples_blob), what="samples"
            )
            samples = blob_seal(key=new_key, aad=samples_aad(new, index), plaintext=plain)
        Shard.objects.update_or_create(
            version=new,
            index=index,
            defaults={
                "contribution_id": carried[shard.contribution_id],
                "first_record": shard.first_record,
                "records": shard.records,
                "tokens": shard.tokens,
                "size": len(blob),
                "sha256": sha256_hex(blob),
                "blob_key": key,
                "stats": shard.stats,
                "screening_state": shard.screening_state,
                "samples_blob": samples,
            },
        )


def _reseal_artifacts(withdrawal: ContributionWithdrawal, new: DatasetVersion) -> int:
    """Re-seal the weights kept in custody for jobs on the licenses that move (their key follows the grant).

    The old copy stays until the old version's key is shredded; a copy already made is left alone.
    """
    old = DatasetVersion.objects.get(pk=withdrawal.from_version_id)
    refs = GrantJob.objects.filter(
        grant__version=old, grant__state=GrantState.ACTIVE, grant__purpose=GrantPurpose.LICENSE
    ).values_list("consumer_ref", flat=True)
    moved = 0
    for name in sorted(set(refs)):
        if not blob_store().exists(artifact_blob_key(old, name)) or blob_store().exists(
            artifact_blob_key(new, name)
        ):
            continue
        artifact_seal(version=new, name=name, data=artifact_open(version=old, name=name))
        moved += 1
    return moved


@transaction.atomic
def _finish(withdrawal_id: int) -> ContributionWithdrawal:
    """Seal the successor, move the grants and budget, audit, notify and ring the bell (once)."""
    withdrawal = (
        ContributionWithdrawal.objects.select_for_update(of=("self",))
        .select_related("contribution__contributor", "organisation")
        .get(pk=withdrawal_id)
    )
    if withdrawal.state == WithdrawalState.DONE:
        return withdrawal
    if withdrawal.to_version_id is None:
        raise PermanentWorkError(f"withdrawal {withdrawal.pk} has no successor to seal")
    versions = DatasetVersion.objects.select_for_update(of=("self",)).select_related("dataset__owner")
    old_version = versions.get(pk=withdrawal.from_version_id)
    new = versions.get(pk=withdrawal.to_version_id)
    shards = list(new.shards.order_by("index"))
    expected = len(_kept_shards(withdrawal))
    if len(shards) != expected:
        raise PermanentWorkError(
            f"withdrawal {withdrawal.pk}: the successor has {len(shards)} shards, not {expected}"
        )
    _seal_successor(withdrawal, old_version, new, shards)
    moved = _move_grants(withdrawal, old_version, new)
    _copy_budget(old_version, new)
    valuation_flags_carry_to_successor(old=old_version, new=new, withdrawn=withdrawal.contribution_id)
    withdrawal.state = WithdrawalState.DONE
    withdrawal.done_at = timezone.now()
    withdrawal.grants_moved = moved
    withdrawal.save(update_fields=["state", "done_at", "grants_moved"])
    old_version.stage = "superseded"
    old_version.save(update_fields=["stage"])
    _audit_and_notify(withdrawal, old_version, new, moved)
    signals.send_after_commit(
        signals.contribution_withdrawn,
        withdrawal_id=withdrawal.pk,
        from_version_id=old_version.pk,
        to_version_id=new.pk,
    )
    return withdrawal


def _seal_successor(
    withdrawal: ContributionWithdrawal, old: DatasetVersion, new: DatasetVersion, shards: list[Shard]
) -> None:
    for contribution in new.contributions.all():
        totals = Shard.objects.filter(contribution=contribution).aggregate(r=Sum("records"), t=Sum("tokens"))
        contribution.records, contribution.tokens = totals["r"] or 0, totals["t"] or 0
        contribution.save(update_fields=["records", "tokens"])
    withdrawn_shards = Shard.objects.filter(version=old, contribution_id=withdrawal.contribution_id)
    old_report = Report.objects.filter(version=old).first()
    if old_report is not None:
        # The old version's counts (drops at sealing applied) less the withdrawn shards' counts.
        counts = _counts_without(
            old_report.counts or {}, _dropped_shape(_merge(s.stats for s in withdrawn_shards))
        )
        Report.objects.update_or_create(
            version=new, defaults={"counts": counts, "findings_summary": {}, "samples_blob": None}
        )
    new.merkle_root = merkle_root([s.sha256 for s in shards])
    new.records = sum(s.records for s in shards)
    new.tokens = sum(s.tokens for s in shards)
    new.next_shard_index = len(shards)
    new.state = VersionState.SEALED
    new.stage = "sealed"
    new.processed_at = new.sealed_at = timezone.now()
    new.sealed_by = withdrawal.requested_by
    new.save()
    audit_record(
        action="custody.version_seal",
        actor=withdrawal.requested_by,
        organisation=new.dataset.owner,
        object_type="dataset_version",
        object_id=new.pk,
        details={
            "merkle_root": new.merkle_root,
            "shards": len(shards),
            "records": new.records,
            "withdrawal": withdrawal.public_id,
            "from": old.pk,
            "from_merkle_root": old.merkle_root,
        },
    )


def _dropped_shape(merged: dict[str, Any]) -> dict[str, Any]:
    return {
        key: merged.get(key) or {} for key in ("languages", "lengths", "entities", "by_field", "by_language")
    }


def _move_grants(withdrawal: ContributionWithdrawal, old: DatasetVersion, new: DatasetVersion) -> list[int]:
    """Point the old version's active license grants at the successor; their terms are unchanged."""
    grants = list(
        Grant.objects.select_for_update()
        .filter(version=old, state=GrantState.ACTIVE, purpose=GrantPurpose.LICENSE)
        .order_by("pk")
    )
    for grant in grants:
        grant.version = new
        grant.save(update_fields=["version"])
        audit_record(
            action="custody.grant_move",
            organisation=grant.licensee,
            object_type="grant",
            object_id=grant.pk,
            details={"from_version": old.pk, "to_version": new.pk, "withdrawal": withdrawal.public_id},
        )
    return [g.pk for g in grants]


def _copy_budget(old: DatasetVersion, new: DatasetVersion) -> None:
    """The successor's records were in every release from the old version: its spent ε carries over."""
    for entry in PrivacyBudgetEntry.objects.filter(version=old).order_by("pk"):
        PrivacyBudgetEntry.objects.get_or_create(
            version=new,
            consumer_ref=entry.consumer_ref,
            defaults={"epsilon": entry.epsilon, "state": entry.state, "created_at": entry.created_at},
        )


def _audit_and_notify(
    withdrawal: ContributionWithdrawal, old: DatasetVersion, new: DatasetVersion, moved: list[int]
) -> None:
    audit_record(
        action="custody.contribution_withdrawn",
        actor=withdrawal.requested_by,
        organisation=withdrawal.organisation,
        object_type="contribution",
        object_id=withdrawal.contribution_id,
        details={
            "withdrawal": withdrawal.public_id,
            "from_version": old.pk,
            "to_version": new.pk,
            "merkle_root": new.merkle_root,
            "grants_moved": moved,
        },
    )
    organisations = {old.dataset.owner_id, *old.contributions.values_list("contributor_id", flat=True)}
    for organisation in Organisation.objects.filter(pk__in=organisations).order_by("pk"):
        notify_event(
            organisation=organisation,
            kind="dataset.contribution_withdrawn",
            subject=f"{withdrawal.organisation.name} withdrew a contribution from {old.dataset.name}; "
            f"version {new.number} replaces version {old.number}",
            payload={
                "withdrawal": withdrawal.public_id,
                "contribution": withdrawal.contribution.public_id,
                "from_version": old.public_id,
                "to_version": new.public_id,
            },
            object_type="contribution_withdrawal",
            object_id=withdrawal.public_id,
        )


@work_handler(WITHDRAW_WORK)
def _withdraw_handler(item: Any) -> None:
    withdrawal_run(withdrawal_id=int(item.ref))


# --- reads ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineageRead:
    """One job's reads of the withdrawn records (in this or an earlier version)."""

    usage_id: int
    grant_id: int
    licensee_id: int | None
    consumer_ref: str
    version_id: int
    tokens: int
    settled: bool


def contribution_lineage(*, contribution: Contribution) -> list[LineageRead]:
    """Every recorded read of the contribution's records: its own and those of the copies it came from."""
    ids = []
    current: Contribution | None = contribution
    while current is not None:
        ids.append(current.pk)
        current = current.carried_from
    rows = (
        UsageByContribution.objects.filter(Q(contribution_id__in=ids))
        .select_related("usage__grant", "contribution")
        .order_by("usage__created_at", "pk")
    )
    return [
        LineageRead(
            usage_id=row.usage_id,
            grant_id=row.usage.grant_id,
            licensee_id=row.usage.grant.licensee_id,
            consumer_ref=row.usage.consumer_ref,
            version_id=row.contribution.version_id,
            tokens=row.quantity,
            settled=row.usage.settled_at is not None,
        )
        for row in rows
    ]


def withdrawal_visible(*, actor: User, withdrawal: ContributionWithdrawal) -> None:
    """Platform staff, and members of the withdrawing or the owning organisation, see a withdrawal.

    :raises NotFound: anyone else.
    """
    if actor.is_operator or actor.is_auditor:
        return
    try:
        require_role(actor, withdrawal.organisation, Role.VIEWER)
    except NotFound:
        require_role(actor, withdrawal.from_version.dataset.owner, Role.VIEWER)
