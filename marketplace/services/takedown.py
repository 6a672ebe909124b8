"""Marketplace's side of a takedown, on leased work items (DESIGN.md "Keys and takedown").

Custody rings ``version_taken_down`` after its commit; the receiver
(``signals_handlers``) calls :func:`takedown_enqueue`, which records one work
item per thing the marketplace has to undo on that version:

- ``marketplace.takedown_listing`` (ref: listing id): withdraw the listing;
- ``marketplace.takedown_order`` (ref: order id): reject an order still awaiting
  approval, which refunds its escrow and tells the buyer;
- ``marketplace.takedown_license`` (ref: license id): settle the usage already
  recorded, refund the unreleased escrow, revoke, and notify the licensee (the
  trainer) and the provider.

Each handler re-reads its row under a lock and changes (and audits) only what
is still to do, so an item run twice, or after a worker died mid-way, does
nothing the second time. A failing step is retried with backoff by
``common.work``; the bell is only a doorbell: :func:`takedown_sweep` (run by
``marketplace.sweep`` on beat) finds live listings, pending orders and active
licenses on taken-down versions that have no item yet and enqueues them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import BigIntegerField, Model, QuerySet
from django.db.models.functions import Cast

from common.models import WorkItem
from common.work import PermanentWorkError, work_enqueue, work_handler
from custody.models import DatasetVersion, VersionState
from marketplace.exceptions import OrderStateConflict
from marketplace.models import License, LicenseState, Listing, ListingState, Order, OrderState
from marketplace.services.catalog import listing_withdraw
from marketplace.services.orders import order_reject
from marketplace.services.settlement import SWEEP_BATCH, license_refund

LISTING_WORK = "marketplace.takedown_listing"
ORDER_WORK = "marketplace.takedown_order"
LICENSE_WORK = "marketplace.takedown_license"
TAKEDOWN_KINDS = (LISTING_WORK, ORDER_WORK, LICENSE_WORK)


@dataclass
class TakedownWork:
    """Ids of the listings, orders and licenses a takedown still has to undo."""

    listings: list[int] = field(default_factory=list)
    orders: list[int] = field(default_factory=list)
    licenses: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[int]]:
        return {"listings": self.listings, "orders": self.orders, "licenses": self.licenses}


def _left(versions: QuerySet[DatasetVersion] | list[int], *, sweep: bool, limit: int) -> TakedownWork:
    """Live listings, pending orders and active licenses on ``versions``, at most ``limit`` of each.

    For the sweep, rows that already have an item are left out: a failed item
    is an operator's to re-drive (``work_retry``), so it cannot fill every
    sweep's batch.
    """

    def ids(queryset: QuerySet[Model], work_kind: str) -> list[int]:
        if sweep:
            enqueued = (
                WorkItem.objects.filter(kind=work_kind)
                .annotate(row_id=Cast("ref", output_field=BigIntegerField()))
                .values("row_id")
            )
            queryset = queryset.exclude(pk__in=enqueued)
        return list(queryset.order_by("pk").values_list("pk", flat=True)[:limit])

    return TakedownWork(
        listings=ids(
            Listing.objects.filter(version__in=versions).exclude(state=ListingState.WITHDRAWN), LISTING_WORK
        ),
        orders=ids(Order.objects.filter(listing__version__in=versions, state=OrderState.PENDING), ORDER_WORK),
        licenses=ids(License.objects.filter(version__in=versions, state=LicenseState.ACTIVE), LICENSE_WORK),
    )


def _enqueue(work: TakedownWork) -> None:
    with transaction.atomic():
        for kind, refs in (
            (LISTING_WORK, work.listings),
            (ORDER_WORK, work.orders),
            (LICENSE_WORK, work.licenses),
        ):
            for ref in refs:
                work_enqueue(kind=kind, ref=str(ref), queue="default")


def takedown_enqueue(*, version_id: int) -> TakedownWork:
    """Enqueue an item for each listing, pending order and active license of a taken-down version.

    Idempotent: an item exists once per row. Does nothing for a version that is not taken down.
    Past ``SWEEP_BATCH`` rows of a kind, the sweep enqueues the rest.
    """
    if not DatasetVersion.objects.filter(pk=version_id, state=VersionState.TAKEN_DOWN).exists():
        return TakedownWork()
    work = _left([version_id], sweep=False, limit=SWEEP_BATCH)
    _enqueue(work)
    return work


def takedown_sweep(*, limit: int = SWEEP_BATCH) -> TakedownWork:
    """Find what a takedown left undone with no item yet (a lost doorbell) and enqueue it."""
    work = _left(DatasetVersion.objects.filter(state=VersionState.TAKEN_DOWN), sweep=True, limit=limit)
    _enqueue(work)
    return work


# --- the handlers ------------------------------------------------------------------------------


def _reason(version: DatasetVersion) -> str:
    return f"Dataset version taken down: {version.failure_reason}"[:300]


def _taken_down(version_id: int) -> DatasetVersion:
    """The version, taken down. :raises PermanentWorkError: it is not (nothing to undo, ever)."""
    version = DatasetVersion.objects.get(pk=version_id)
    if version.state != VersionState.TAKEN_DOWN:
        raise PermanentWorkError(f"version {version_id} is {version.state}, not taken down")
    return version


def _row(model: type[Model], item: WorkItem) -> Model:
    found = model._default_manager.filter(pk=int(item.ref)).first()
    if found is None:
        raise PermanentWorkError(f"no {model.__name__} {item.ref}")
    return found


@work_handler(LISTING_WORK)
def _withdraw_listing(item: WorkItem) -> None:
    listing = _row(Listing, item)
    assert isinstance(listing, Listing)
    listing_withdraw(actor=None, listing=listing, reason=_reason(_taken_down(listing.version_id)))


@work_handler(ORDER_WORK)
def _reject_order(item: WorkItem) -> None:
    order = _row(Order, item)
    assert isinstance(order, Order)
    version = _taken_down(order.listing.version_id)
    if order.state != OrderState.PENDING:
        return
    # Decided or timed out meanwhile: its escrow went back (or on) with that decision.
    with contextlib.suppress(OrderStateConflict):
        order_reject(order=order, provider=order.listing.provider, actor=None, reason=_reason(version))


@work_handler(LICENSE_WORK)
def _refund_license(item: WorkItem) -> None:
    license_ = _row(License, item)
    assert isinstance(license_, License)
    license_refund(license_=license_, reason=_reason(_taken_down(license_.version_id)))
