"""Seed a drill template: the demo cast and listing, a rich trainer, its API token.

``python -m chaos.drills.seed``.

Run once per template by :mod:`chaos.drills.cluster`, with the template's
database in ``DATABASE_URL``. Everything goes through the project's own demo
steps and services, as ``manage.py demo_seed`` and an operator would. The last
line printed is JSON: what the drills need to know (the token is a secret of
this throwaway database only).
"""

from __future__ import annotations

import json
import sys

import django

# Far more than any drill spends: a fixed-price order costs 25,000 minor units.
DRILL_TOPUP = 10_000_000_000


def seed() -> dict[str, object]:
    from django.core.management.base import OutputWrapper

    import common.demo
    import custody.demo
    import marketplace.demo
    import marketplace.demo_orders
    from common.models import Organisation, Scope, User
    from common.services import api_token_create
    from common.signing import signing_key_provider
    from marketplace.models import Offer, OfferState, PriceModel
    from marketplace.services.funding import topup_record

    out = OutputWrapper(sys.stderr)
    signing_key_provider().current()
    for step in (common.demo.seed, custody.demo.seed, marketplace.demo.seed, marketplace.demo_orders.seed):
        step(out)
    trainer = Organisation.objects.get(name=marketplace.demo_orders.TRAINER)
    bob = User.objects.get(username=marketplace.demo_orders.TRAINER_ADMIN)
    offer = (
        Offer.objects.filter(state=OfferState.ACTIVE, terms_versions__price_model=PriceModel.FIXED)
        .order_by("pk")
        .first()
    )
    assert offer is not None, "the marketplace demo publishes a fixed-price offer"
    topup_record(
        organisation=trainer,
        amount=DRILL_TOPUP,
        currency=offer.listing.currency,
        external_ref="crash-drill-topup-1",
        actor=User.objects.get(username=marketplace.demo_orders.OPERATOR),
    )
    _token, raw = api_token_create(
        user=bob, organisation=trainer, name="crash drills", scopes=[Scope.READ, Scope.ORDER]
    )
    return {
        "token": raw,
        "offer_id": offer.public_id,
        "trainer_id": trainer.pk,
        "currency": offer.listing.currency,
    }


if __name__ == "__main__":
    django.setup()
    print(json.dumps(seed()))
