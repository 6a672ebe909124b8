"""Marketplace's side of a contribution's withdrawal (docs/operations.md "Withdrawal").

Custody re-seals the version without the contribution and moves its active
license grants to the successor in one commit, then rings
``contribution_withdrawn``. Here each license follows its grant (``License.version``,
so a later takedown of the successor finds it), and each live listing of the
superseded version moves to the successor with statistics recomputed and any
preview record of the withdrawn contribution dropped. The license terms are a
snapshot and are not touched; escrow stays where it is: metered releases
follow what each job reads (nothing, now, from the withdrawn contribution);
fixed and period prices keep the allocation frozen at the sale
(docs/terms.md "Withdrawal"). :func:`withdrawal_sweep` (``marketplace.sweep``
on beat) does the same for whatever a lost bell left, so both are idempotent.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import F

from common.audit import audit_record
from custody.models import ContributionWithdrawal, Shard, WithdrawalState
from marketplace.models import License, Listing, ListingState
from marketplace.services.catalog import listing_statistics

SWEEP_BATCH = 500


def licenses_follow_grants(*, limit: int = SWEEP_BATCH) -> list[int]:
    """Point each license at its grant's version where custody moved the grant; their ids."""
    moved: list[int] = []
    stale = License.objects.exclude(version_id=F("grant__version_id")).order_by("pk")
    for license_id in stale.values_list("pk", flat=True)[:limit]:
        with transaction.atomic():
            license_ = (
                License.objects.select_for_update(of=("self",)).select_related("grant").get(pk=license_id)
            )
            if license_.version_id == license_.grant.version_id:
                continue
            previous = license_.version_id
            license_.version_id = license_.grant.version_id
            license_.save(update_fields=["version"])
            audit_record(
                action="marketplace.license_move",
                organisation=license_.licensee,
                object_type="license",
                object_id=license_.ref,
                details={"from_version": previous, "to_version": license_.version_id},
            )
        moved.append(license_id)
    return moved


def listings_follow_withdrawal(*, withdrawal: ContributionWithdrawal) -> list[int]:
    """Move the superseded version's live listings to the successor; their ids."""
    if withdrawal.state != WithdrawalState.DONE or withdrawal.to_version is None:
        return []
    ranges = [
        (s.first_record, s.first_record + s.records)
        for s in Shard.objects.filter(
            version_id=withdrawal.from_version_id, contribution_id=withdrawal.contribution_id
        )
    ]
    moved: list[int] = []
    live = Listing.objects.filter(version_id=withdrawal.from_version_id).exclude(state=ListingState.WITHDRAWN)
    for listing_id in live.order_by("pk").values_list("pk", flat=True):
        with transaction.atomic():
            listing = Listing.objects.select_for_update(of=("self",)).get(pk=listing_id)
            if listing.version_id != withdrawal.from_version_id:
                continue
            kept = [
                p for p in listing.preview if not any(lo <= int(p["record_id"]) < hi for lo, hi in ranges)
            ]
            listing.version = withdrawal.to_version
            listing.statistics = listing_statistics(withdrawal.to_version)
            listing.preview = kept
            listing.save(update_fields=["version", "statistics", "preview"])
            audit_record(
                action="marketplace.listing_move",
                organisation=listing.provider,
                object_type="listing",
                object_id=listing.public_id,
                details={
                    "from_version": withdrawal.from_version_id,
                    "to_version": withdrawal.to_version_id,
                    "withdrawal": withdrawal.public_id,
                    "preview_dropped": len(listing.preview) - len(kept),
                },
            )
        moved.append(listing_id)
    return moved


def withdrawal_follow(*, withdrawal_id: int) -> dict[str, list[int]]:
    """Everything the marketplace does for one finished withdrawal (idempotent)."""
    withdrawal = ContributionWithdrawal.objects.select_related("to_version").get(pk=withdrawal_id)
    return {
        "licenses": licenses_follow_grants(),
        "listings": listings_follow_withdrawal(withdrawal=withdrawal),
    }


def withdrawal_sweep(*, limit: int = SWEEP_BATCH) -> dict[str, list[int]]:
    """Licenses and listings a lost ``contribution_withdrawn`` left behind."""
    listings: list[int] = []
    left = (
        Listing.objects.filter(version__withdrawals__state=WithdrawalState.DONE)
        .exclude(state=ListingState.WITHDRAWN)
        .values_list("version__withdrawals", flat=True)
    )
    pending = ContributionWithdrawal.objects.filter(pk__in=left).select_related("to_version").order_by("pk")
    for withdrawal in pending[:limit]:
        listings += listings_follow_withdrawal(withdrawal=withdrawal)
    return {"licenses": licenses_follow_grants(limit=limit), "listings": listings}
