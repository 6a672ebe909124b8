"""Orders fixtures: a published listing per price model, a funded trainer, usage through custody."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

import pytest

from common.models import Organisation
from custody import services as custody
from custody.models import UsageRecord
from marketplace.models import License, Listing, Offer
from marketplace.services import catalog
from marketplace.services.funding import topup_record
from tests.factories import OrganisationFactory
from tests.marketplace.catalog.conftest import sealed_rows, terms_doc  # noqa: F401

PRICES: dict[str, dict[str, Any]] = {
    "fixed": {"model": "fixed", "unit_price": "500.00"},
    # 2.00 per million tokens; the cap of 5,000,000 tokens escrows 10.00 (1,000 minor units).
    "metered": {"model": "metered", "unit_price": "2.00"},
    "period": {"model": "period", "unit_price": "30.00", "period_days": 30},
}


@pytest.fixture
def cora(db) -> Organisation:
    return cast(Organisation, OrganisationFactory(name="Cora Texts", is_provider=True))


@pytest.fixture
def market(alice, acme, cora, sealed_rows) -> Callable[..., Offer]:  # noqa: F811
    """``market(price="fixed", approval=False, max_licenses=None, **terms)`` -> a published offer.

    Acme contributed 3,000 platform tokens and Cora 1,000, so the default
    allocation pays 7,500 / 2,500 bps.
    """

    def _make(
        price: str = "fixed", approval: bool = False, max_licenses: int | None = None, **constraint: Any
    ) -> Offer:
        version = sealed_rows(tokens={acme: 3000, cora: 1000})
        listing = catalog.listing_create(
            actor=alice, version=version, title=f"Tickets {version.pk}", requires_approval=approval
        )
        doc = terms_doc()
        doc["constraint"] = {**doc["constraint"], "max_licenses": max_licenses, **constraint}
        offer = catalog.offer_create(
            actor=alice, listing=listing, name="Research", terms=doc, price=PRICES[price]
        )
        catalog.listing_publish(actor=alice, listing=listing)
        return offer

    return _make


@pytest.fixture
def fund(ops) -> Callable[..., None]:
    """``fund(org, amount, ref=...)`` -> an operator-recorded top-up in EUR."""
    counter = {"n": 0}

    def _fund(organisation: Organisation, amount: int, ref: str | None = None) -> None:
        counter["n"] += 1
        topup_record(
            organisation=organisation,
            amount=amount,
            currency="EUR",
            external_ref=ref or f"bank-{organisation.pk}-{counter['n']}",
            actor=ops,
        )

    return _fund


def use(
    license_: License, consumer_ref: str, kind: str, quantity: int, reads: dict[int, int] | None = None
) -> UsageRecord:
    """Record usage through custody, as the training side does (``reads``: per contribution id)."""
    return custody.usage_record(
        grant=license_.grant, consumer_ref=consumer_ref, kind=kind, quantity=quantity, by_contribution=reads
    )


def listing_of(offer: Offer) -> Listing:
    return Listing.objects.get(pk=offer.listing_id)


def after_expiry(license_: License) -> datetime:
    """A moment just past the license's expiry."""
    assert license_.expires_at is not None
    return license_.expires_at + timedelta(seconds=1)
