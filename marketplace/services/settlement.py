"""Settlement: escrow released per usage, exactly once; licenses ending with their refunds.

The periodic sweep (``marketplace.sweep``, Celery beat) enqueues one work item
per unsettled custody usage record of a license; each item settles that record
in one transaction: a ``Settlement`` row (unique per usage record), the ledger
release (idempotency key ``settle:usage:<id>``), the holders' lines and
custody's ``settled_at``. A worker killed anywhere in it leaves either all or
nothing; the retry finds the row and does nothing again. A metered release is
split by what the job read from each contribution (``release_weights``), the
others by the allocation frozen at the sale. docs/money.md has the release and
refund rules.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from fractions import Fraction

from django.db import transaction
from django.db.models import BigIntegerField
from django.db.models.functions import Cast
from django.utils import timezone

from common.audit import audit_record
from common.models import Organisation, WorkItem
from common.money import format_money, major_amount
from common.notifications import notify_event
from custody import selectors as custody_selectors
from custody import services as custody
from custody.models import Grant, UsageKind, UsageRecord
from marketplace.exceptions import InsufficientFunds, LicenseStateConflict
from marketplace.ledger import ledger_reverse
from marketplace.models import (
    LedgerTransaction,
    License,
    LicenseState,
    Order,
    PriceModel,
    RightsAllocation,
    Settlement,
    SettlementLine,
)
from marketplace.quotes import TOKENS_PER_UNIT
from marketplace.services.escrow import escrow_fund, escrow_refund, escrow_release
from marketplace.services.rights import contributed_tokens

SWEEP_BATCH = 500


def _lock_license(license_id: int) -> License:
    # Only the license's row: a plain FOR UPDATE would lock every joined row too
    # (the order, the listing, the buyer), which concurrent orders' foreign-key
    # checks take shares of at commit, and a settlement would deadlock with them.
    return (
        License.objects.select_for_update(of=("self",))
        .select_related("order__listing", "order__buyer")
        .get(pk=license_id)
    )


def _amount_due(license_: License, order: Order, usage: UsageRecord) -> tuple[int, int]:
    """(amount to release for this usage, tokens it adds); never above what escrow holds."""
    left = license_.escrow_left
    if order.price_model == PriceModel.FIXED:
        started = usage.kind == UsageKind.JOB_STARTED
        return (left if started and license_.released == 0 else 0), 0
    # tokens_inferred: a model license's plug-in calls (issue 16), metered like training.
    metered = (UsageKind.TOKENS_TRAINED, UsageKind.TOKENS_INFERRED)
    if order.price_model == PriceModel.METERED and usage.kind in metered:
        tokens = int(usage.quantity)
        # Cumulative and rounded down: the release for N tokens never depends on how they were split.
        after = (license_.tokens_settled + tokens) * order.unit_price // TOKENS_PER_UNIT
        before = license_.tokens_settled * order.unit_price // TOKENS_PER_UNIT
        return max(0, min(after - before, left)), tokens
    # Period pricing pays for time (license_period_tick); usage moves no money.
    return 0, 0


def release_weights(order: Order, usage: UsageRecord) -> dict[int, int] | None:
    """What a metered release is split by: the job's reads per holder; None keeps the frozen allocation.

    Fixed and per-period prices pay for access, not reads, and a usage recorded without reads (a
    job that predates per-contribution metering) has none: both keep the allocation frozen at
    the sale. Under the default allocation (shares from contributed tokens) each contributing
    organisation weighs the platform tokens the job read from its contributions, so a job that
    read only A's records pays only A. Under an explicit allocation each holder weighs its agreed
    share times the fraction of its own contributed tokens the job read (the whole version's
    fraction for a holder that contributed none): a job reading everything once splits exactly as
    agreed, one that read nothing of a holder pays it nothing.
    """
    if order.price_model != PriceModel.METERED or usage.kind != UsageKind.TOKENS_TRAINED:
        return None
    reads = custody_selectors.usage_reads_by_contributor(usage=usage)
    if not any(reads.values()):
        return None
    allocation = RightsAllocation.objects.filter(pk=order.allocation_id).first()
    if allocation is None or allocation.from_contributions:
        return {holder: tokens for holder, tokens in reads.items() if tokens > 0}
    contributed = contributed_tokens(version=allocation.version)
    overall = Fraction(sum(reads.values()), max(1, sum(contributed.values())))
    exact = {
        holder: bps
        * (Fraction(reads.get(holder, 0), contributed[holder]) if contributed.get(holder) else overall)
        for holder, bps in order.shares.items()
    }
    scale = math.lcm(*(value.denominator for value in exact.values()))
    weights = {holder: int(value * scale) for holder, value in exact.items() if value > 0}
    return weights or None


def _settlement_record(
    *,
    license_: License,
    amount: int,
    key: str,
    memo: str,
    usage: UsageRecord | None,
    period: int | None,
    weights: dict[int, int] | None = None,
) -> Settlement:
    order = license_.order
    txn: LedgerTransaction | None = None
    parts: dict[int, int] = {}
    fee = 0
    if amount:
        txn, parts, fee = escrow_release(order=order, amount=amount, key=key, memo=memo, weights=weights)
    settlement = Settlement.objects.create(
        usage=usage, period=period, license=license_, amount=amount, fee=fee, transaction=txn
    )
    SettlementLine.objects.bulk_create(
        SettlementLine(
            settlement=settlement,
            holder_id=holder_id,
            listing_id=order.listing_id,
            currency=order.currency,
            amount=part,
        )
        for holder_id, part in sorted(parts.items())
    )
    license_.released += amount
    audit_record(
        action="marketplace.settle",
        organisation=order.listing.provider,
        object_type="license",
        object_id=license_.ref,
        details={
            "usage": usage.pk if usage else None,
            "period": period,
            "amount": amount,
            "fee": fee,
            "parts": parts,
            "split_by": "reads" if weights else "allocation",
        },
    )
    holders = Organisation.objects.in_bulk(list(parts))
    for holder_id, part in sorted(parts.items()):
        notify_event(
            organisation=holders[holder_id],
            kind="settlement.paid",
            subject=f"{format_money(part, order.currency)} earned on license {license_.ref}",
            payload={
                "license": license_.ref,
                "amount": major_amount(part, order.currency),
                "amount_minor": part,
                "currency": order.currency,
            },
            object_type="settlement",
            object_id=settlement.public_id,
        )
    return settlement


@transaction.atomic
def usage_settle(*, usage_id: int) -> Settlement | None:
    """Settle one custody usage record of a license, exactly once; None when it is no license's.

    Safe to call any number of times, concurrently: the license's row lock
    serialises settlements of one license, and the unique settlement row and
    ledger key make a repeat a no-op.
    """
    usage = UsageRecord.objects.select_related("grant").get(pk=usage_id)
    license_id = License.objects.filter(grant_id=usage.grant_id).values_list("pk", flat=True).first()
    if license_id is None:
        return None
    license_ = _lock_license(license_id)
    existing = Settlement.objects.filter(usage=usage).first()
    if existing is not None:
        custody.usage_mark_settled(usage=usage)
        return existing
    amount, tokens = _amount_due(license_, license_.order, usage)
    settlement = _settlement_record(
        license_=license_,
        amount=amount,
        key=f"settle:usage:{usage.pk}",
        memo=f"Usage {usage.kind} {usage.quantity} on license {license_.ref}",
        usage=usage,
        period=None,
        weights=release_weights(license_.order, usage),
    )
    license_.tokens_settled += tokens
    license_.save(update_fields=["released", "tokens_settled"])
    custody.usage_mark_settled(usage=usage)
    return settlement


def unsettled_usage_ids(*, work_kind: str, limit: int = SWEEP_BATCH) -> list[int]:
    """Unsettled usage records of licenses with no ``work_kind`` item yet, oldest first.

    A usage whose item exists is the work queue's to finish (the work sweep
    recovers lost and expired items; an operator re-drives a failed one, see
    ``manage.py work_retry``), so failed settlements, which stay unsettled and
    oldest, cannot fill every sweep's batch and starve newer usage.
    """
    grants = License.objects.values("grant_id")
    enqueued = (
        WorkItem.objects.filter(kind=work_kind)
        .annotate(usage_id=Cast("ref", output_field=BigIntegerField()))
        .values("usage_id")
    )
    return custody_selectors.usage_unsettled_ids(grant_ids=grants, exclude_ids=enqueued, limit=limit)


# --- licenses ending -----------------------------------------------------------------------


def _end(license_: License, *, state: str, reason: str, refund_key: str, action: str, event: str) -> License:
    order = license_.order
    left = license_.escrow_left
    if left:
        escrow_refund(order=order, amount=left, key=refund_key, reason=reason)
        license_.refunded += left
    license_.state = state
    license_.ended_at = timezone.now()
    license_.end_reason = reason[:300]
    license_.save(update_fields=["state", "ended_at", "end_reason", "refunded"])
    audit_record(
        action=action,
        organisation=license_.licensee,
        object_type="license",
        object_id=license_.ref,
        details={"reason": reason[:300], "refunded": left, "released": license_.released},
    )
    custody.grant_revoke(grant=license_.grant, reason=reason)
    payload = {
        "license": license_.ref,
        "refunded": major_amount(left, order.currency),
        "refunded_minor": left,
        "currency": order.currency,
    }
    for organisation in (license_.licensee, order.listing.provider):
        notify_event(
            organisation=organisation,
            kind=event,
            subject=f"License {license_.ref} {state}",
            payload=payload,
            object_type="license",
            object_id=license_.ref,
        )
    return license_


def _settle_pending_usage(license_: License) -> None:
    pending = UsageRecord.objects.filter(grant_id=license_.grant_id, settled_at__isnull=True).order_by("pk")
    for usage_id in pending.values_list("pk", flat=True):
        usage_settle(usage_id=usage_id)


@transaction.atomic
def license_expire(*, license_id: int, now: datetime | None = None) -> License:
    """End a license at its expiry: settle its usage, refund the unused escrow, revoke the grant.

    Idempotent: an ended license is returned as it is.
    """
    now = now or timezone.now()
    _settle_pending_usage(License.objects.get(pk=license_id))
    license_ = _lock_license(license_id)
    Grant.objects.select_for_update().get(pk=license_.grant_id)
    if license_.state != LicenseState.ACTIVE:
        return license_
    if license_.expires_at is None or license_.expires_at > now:
        raise LicenseStateConflict(f"License {license_.ref} has not expired yet.")
    if license_.order.price_model == PriceModel.PERIOD:
        _period_release(license_, now=now, final=True)
    return _end(
        license_,
        state=LicenseState.EXPIRED,
        reason="The license expired.",
        refund_key=f"license:{license_.ref}:refund:expiry",
        action="marketplace.license_expire",
        event="license.expired",
    )


@transaction.atomic
def license_refund(*, license_: License, reason: str, actor_note: str = "") -> License:
    """Refund a license's unreleased escrow and revoke it (takedown, operator decision).

    What was already released stays with the holders. Idempotent.
    """
    _settle_pending_usage(license_)
    locked = _lock_license(license_.pk)
    Grant.objects.select_for_update().get(pk=locked.grant_id)
    if locked.state != LicenseState.ACTIVE:
        return locked
    return _end(
        locked,
        state=LicenseState.REVOKED,
        reason=reason,
        refund_key=f"license:{locked.ref}:refund:revoke",
        action="marketplace.license_revoke",
        event="license.revoked",
    )


@transaction.atomic
def license_job_refund(*, license_: License, consumer_ref: str, reason: str) -> int:
    """A job failed through the platform's fault: undo what it released (back into escrow).

    Unsettled usage of the job is settled as waived (nothing released); settled
    usage is reversed in the ledger, so its money is in escrow again: released
    when a retried job starts, or refunded with the rest at expiry. Training
    calls this with the job's consumer reference. Returns the amount returned
    to escrow; idempotent.
    """
    locked = _lock_license(license_.pk)
    usages = UsageRecord.objects.filter(grant_id=locked.grant_id, consumer_ref=consumer_ref).order_by("pk")
    returned = 0
    for usage in usages:
        settlement = Settlement.objects.filter(usage=usage).first()
        if settlement is None:
            Settlement.objects.create(usage=usage, license=locked, amount=0, fee=0, waived=True)
            custody.usage_mark_settled(usage=usage)
            continue
        if settlement.reversed_at is not None or settlement.transaction is None:
            continue
        ledger_reverse(transaction=settlement.transaction, reason=reason[:300])
        settlement.reversed_at = timezone.now()
        settlement.save(update_fields=["reversed_at"])
        locked.released -= settlement.amount
        if usage.kind == UsageKind.TOKENS_TRAINED and locked.order.price_model == PriceModel.METERED:
            locked.tokens_settled -= int(usage.quantity)
        returned += settlement.amount
    locked.save(update_fields=["released", "tokens_settled"])
    audit_record(
        action="marketplace.license_job_refund",
        organisation=locked.licensee,
        object_type="license",
        object_id=locked.ref,
        details={"consumer_ref": consumer_ref, "returned_to_escrow": returned, "reason": reason[:300]},
    )
    return returned


# --- per-period pricing ------------------------------------------------------------------------


def _period_end(license_: License, period: int) -> datetime:
    return license_.starts_at + timedelta(days=period * int(license_.order.period_days or 1))


def _period_settle(license_: License, period: int) -> None:
    if Settlement.objects.filter(license=license_, period=period).exists():
        return
    _settlement_record(
        license_=license_,
        amount=license_.escrow_left,
        key=f"settle:license:{license_.ref}:period:{period}",
        memo=f"Period {period} of license {license_.ref}",
        usage=None,
        period=period,
    )
    license_.save(update_fields=["released"])


def _period_release(license_: License, *, now: datetime, final: bool = False) -> bool:
    """Release each elapsed period's escrow and escrow the next one bought; False if unpaid.

    ``final``: the license ends now, so the current period is released too.
    The caller holds the license's lock.
    """
    order = license_.order
    while license_.periods_escrowed:
        period = license_.periods_escrowed
        ended = _period_end(license_, period) <= now
        if not ended and not final:
            return True
        _period_settle(license_, period)
        if final or period >= int(order.periods or 1):
            return True
        try:
            with transaction.atomic():
                escrow_fund(
                    buyer=order.buyer,
                    currency=order.currency,
                    order_ref=order.ref,
                    amount=order.unit_price,
                    key=f"order:{order.ref}:escrow:period:{period + 1}",
                    actor=None,
                )
        except InsufficientFunds:
            return False
        license_.escrowed += order.unit_price
        license_.periods_escrowed = period + 1
        license_.save(update_fields=["escrowed", "periods_escrowed"])
    return True


@transaction.atomic
def license_period_tick(*, license_id: int, now: datetime | None = None) -> License:
    """Settle a per-period license's elapsed periods; a buyer who cannot pay the next one loses it."""
    now = now or timezone.now()
    license_ = _lock_license(license_id)
    if license_.state != LicenseState.ACTIVE or license_.order.price_model != PriceModel.PERIOD:
        return license_
    Grant.objects.select_for_update().get(pk=license_.grant_id)
    if _period_release(license_, now=now):
        return license_
    return _end(
        license_,
        state=LicenseState.REVOKED,
        reason="The next period could not be paid from the balance.",
        refund_key=f"license:{license_.ref}:refund:unpaid",
        action="marketplace.license_revoke",
        event="license.revoked",
    )


def licenses_due(*, now: datetime | None = None) -> tuple[list[int], list[int]]:
    """(active licenses past expiry, active per-period licenses), by id."""
    now = now or timezone.now()
    active = License.objects.filter(state=LicenseState.ACTIVE)
    expired = list(
        active.filter(expires_at__lte=now).order_by("pk").values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    period = list(
        active.filter(order__price_model=PriceModel.PERIOD)
        .exclude(pk__in=expired)
        .order_by("pk")
        .values_list("pk", flat=True)[:SWEEP_BATCH]
    )
    return expired, period


def licenses_for_version(*, version_id: int) -> list[License]:
    """Active licenses on a dataset version (a takedown refunds them)."""
    return list(License.objects.filter(version_id=version_id, state=LicenseState.ACTIVE).order_by("pk"))
