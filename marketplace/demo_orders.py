"""Demo step for orders: fund Bolt Models and buy the demo listing's first offer (a paid license).

Idempotent: the top-up's bank reference and the order's idempotency key are
fixed, so running the seed again records nothing new. The lead calls
``seed`` from the demo seed after the catalog's step (which publishes the listing).
"""

from __future__ import annotations

from django.core.management.base import OutputWrapper

from common.models import Organisation, User
from marketplace.models import License, ListingState, Offer, OfferState
from marketplace.services.funding import topup_record
from marketplace.services.orders import order_place

TRAINER = "Bolt Models"
TRAINER_ADMIN = "bob"
OPERATOR = "ops"
DEMO_TOPUP = 500_000  # 5,000.00 in the listing's currency
ORDER_KEY = "demo-seed-order-1"


def seed(stdout: OutputWrapper) -> None:
    """Top up the demo trainer and buy the first active offer of a published listing (once)."""
    trainer = Organisation.objects.filter(name=TRAINER).first()
    buyer = User.objects.filter(username=TRAINER_ADMIN).first()
    if trainer is None or buyer is None:
        stdout.write("  orders: no demo trainer organisation; skipped")
        return
    offer = (
        Offer.objects.filter(state=OfferState.ACTIVE, listing__state=ListingState.PUBLISHED)
        .select_related("listing")
        .order_by("listing_id", "pk")
        .first()
    )
    if offer is None:
        stdout.write("  orders: no published listing with an offer yet; skipped")
        return
    topup_record(
        organisation=trainer,
        amount=DEMO_TOPUP,
        currency=offer.listing.currency,
        external_ref="demo-seed-transfer-1",
        actor=User.objects.filter(username=OPERATOR).first(),
    )
    order = order_place(buyer=trainer, offer=offer, actor=buyer, idempotency_key=ORDER_KEY)
    license_ = License.objects.filter(order=order).first()
    what = (
        f"license {license_.ref} (grant {license_.grant_id})"
        if license_
        else f"order {order.ref} ({order.state})"
    )
    stdout.write(f"  orders: {TRAINER} topped up and bought “{offer.name}” on {offer.listing.title}: {what}")
