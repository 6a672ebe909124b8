"""Statements: what rights holders earned (per listing, over time) and what trainers spent.

Earnings are the settlement lines paid to a holder, less those of settlements
reversed after a platform fault; spend is per order: escrowed, released to
the holders and refunded. Read-only; the CSV export neutralises formulas
(``common.exports``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

from django.db.models import QuerySet, Sum
from django.db.models.functions import TruncDay, TruncMonth

from common.models import Organisation
from marketplace.models import License, Order, SettlementLine

EARNINGS_HEADER = ["period", "listing_id", "listing", "currency", "amount_minor"]
# Amounts in CSV exports are integer minor units, and their columns say so (``_minor``).
SPEND_HEADER = [
    "order",
    "placed_at",
    "listing",
    "state",
    "currency",
    "escrowed_minor",
    "released_minor",
    "refunded_minor",
]


@dataclass(frozen=True)
class EarningsRow:
    period: date
    listing_id: str  # the listing's public id
    listing: str
    currency: str
    amount: int

    def as_list(self) -> list[Any]:
        return [self.period.isoformat(), self.listing_id, self.listing, self.currency, self.amount]


def _lines(holder: Organisation) -> Any:
    return SettlementLine.objects.filter(holder=holder, settlement__reversed_at__isnull=True)


def earnings_over_time(*, holder: Organisation, bucket: str = "month") -> list[EarningsRow]:
    """The holder's earnings per period (``day`` or ``month``) and listing, oldest first."""
    trunc = TruncDay("created_at") if bucket == "day" else TruncMonth("created_at")
    rows = (
        _lines(holder)
        .annotate(period=trunc)
        .values("period", "listing_id", "listing__public_id", "listing__title", "currency")
        .annotate(amount=Sum("amount"))
        .order_by("period", "listing_id", "currency")
    )
    return [
        EarningsRow(
            period=row["period"].date() if hasattr(row["period"], "date") else row["period"],
            listing_id=row["listing__public_id"],
            listing=row["listing__title"],
            currency=row["currency"],
            amount=int(row["amount"]),
        )
        for row in rows
    ]


def earnings_by_listing(*, holder: Organisation) -> dict[str, int]:
    """Total earnings per listing (title and currency), for the chart.

    Grouped by the listing's id, not its title: two listings may share a title,
    and a chart keyed by title alone showed one of their totals.
    """
    rows = (
        _lines(holder)
        .values("listing_id", "listing__public_id", "listing__title", "currency")
        .annotate(amount=Sum("amount"))
        .order_by("listing_id", "currency")
    )
    rows = list(rows)
    distinct = {(row["listing__title"], row["listing_id"]) for row in rows}
    repeated = {t for t, n in Counter(title for title, _ in distinct).items() if n > 1}
    totals: dict[str, int] = {}
    for row in rows:
        title = row["listing__title"]
        if title in repeated:
            title = f"{title} ({row['listing__public_id']})"
        label = f"{title} ({row['currency']})"
        totals[label] = totals.get(label, 0) + int(row["amount"])
    return totals


def earnings_by_period(rows: Iterable[EarningsRow]) -> dict[str, int]:
    """Sum per-listing earnings rows into one total per period and currency, oldest first, for the chart.

    The rows hold one line per (period, listing, currency); keying the chart by
    period alone showed only the last listing of each month.
    """
    totals: dict[str, int] = {}
    for row in rows:
        key = f"{row.period:%Y-%m} {row.currency}"
        totals[key] = totals.get(key, 0) + row.amount
    return totals


def spend_orders(*, buyer: Organisation) -> QuerySet[Order]:
    """The orders the organisation placed, oldest first: the rows of its spend statement."""
    return Order.objects.filter(buyer=buyer).select_related("listing").order_by("created_at", "pk")


def spend_rows(*, buyer: Organisation, orders: Iterable[Order] | None = None) -> Iterator[list[Any]]:
    """One row per order (all of the buyer's, or the given page of them): escrowed, released, refunded."""
    held = License.objects.filter(licensee=buyer)
    if orders is None:
        orders = spend_orders(buyer=buyer).iterator(chunk_size=500)
    else:
        orders = list(orders)
        held = held.filter(order__in=[o.pk for o in orders])
    licenses = {lic.order_id: lic for lic in held}
    for order in orders:
        license_ = licenses.get(order.pk)
        if license_ is not None:
            escrowed, released, refunded = license_.escrowed, license_.released, license_.refunded
        else:
            closed = order.state in ("rejected", "timed_out")
            escrowed, released, refunded = order.escrow_amount, 0, order.escrow_amount if closed else 0
        yield [
            order.ref,
            order.created_at.isoformat(),
            order.listing.title,
            order.state,
            order.currency,
            escrowed,
            released,
            refunded,
        ]


def spend_total(*, buyer: Organisation) -> dict[str, int]:
    """Released (spent for good) per currency."""
    rows = (
        License.objects.filter(licensee=buyer)
        .values("order__currency")
        .annotate(released=Sum("released"))
        .order_by("order__currency")
    )
    return {row["order__currency"]: int(row["released"] or 0) for row in rows}
