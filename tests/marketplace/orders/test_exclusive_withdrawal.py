"""An exclusive-use license stays exclusive across a contribution's withdrawal.

A withdrawal re-seals the version without the contribution and moves each live license to the
successor; live listings move with it, a withdrawn listing stays behind on the superseded version.
The exclusive license, now on the successor, must still refuse every other license there: through
a listing that moved with it, and through a new listing the provider makes on the successor after
taking the first one out of the catalog.
"""

from __future__ import annotations

from typing import cast

import pytest

from common.models import Organisation, User
from custody import services as custody
from custody.models import Contribution, DatasetVersion, VersionState
from marketplace.exceptions import OrderingRefused
from marketplace.models import License, Listing, Offer
from marketplace.services import catalog
from marketplace.services.funding import topup_record
from marketplace.services.orders import order_place
from tests.custody.conftest import dataset, drain  # noqa: F401
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.marketplace.catalog.conftest import terms_doc
from tests.training import pooling
from tests.training.pooling import pooled_seal

pytestmark = pytest.mark.django_db

cora = pooling.cora  # two contributors to one version, as in tests/training
dana = pooling.dana

EXCLUSIVE = {"max_jobs": 3, "max_epochs": 2, "max_tokens": 5_000_000, "term_days": 90}


@pytest.fixture
def dune(db) -> Organisation:
    return cast(Organisation, OrganisationFactory(name="Dune Labs", is_trainer=True))


@pytest.fixture
def dora(dune) -> User:
    user = cast(User, UserFactory(username="dora"))
    MembershipFactory(user=user, organisation=dune, role="admin")
    return user


@pytest.fixture
def pooled(alice, acme, dana, cora, dataset) -> DatasetVersion:  # noqa: F811
    return pooled_seal(
        alice=alice,
        acme=acme,
        dana=dana,
        cora=cora,
        dataset=dataset,
        acme_rows=[{"text": f"Ticket {i}: the router restarts.", "kind": "outage"} for i in range(6)],
        cora_rows=[{"text": f"Case {i}: the invoice came twice.", "kind": "billing"} for i in range(6)],
    )


def _offer(alice: User, listing: Listing, *, exclusive: bool) -> Offer:
    constraint = {**EXCLUSIVE, "max_licenses": 1, "exclusive_use": True} if exclusive else EXCLUSIVE
    return catalog.offer_create(
        actor=alice,
        listing=listing,
        name="Exclusive" if exclusive else "Research",
        terms=terms_doc(constraint=constraint),
        price={"model": "fixed", "unit_price": "10.00"},
    )


@pytest.fixture
def held(pooled, alice, bolt, bob, dune, ops) -> License:
    """Bolt's exclusive-use license on the pooled version, bought through a published listing."""
    listing = catalog.listing_create(actor=alice, version=pooled, title="Pooled tickets")
    exclusive = _offer(alice, listing, exclusive=True)
    catalog.listing_publish(actor=alice, listing=listing)
    for number, organisation in enumerate((bolt, dune)):
        topup_record(
            organisation=organisation,
            amount=100_000,
            currency="EUR",
            external_ref=f"bank-{number}",
            actor=ops,
        )
    return License.objects.get(order=order_place(buyer=bolt, offer=exclusive, actor=bob))


def _withdraw_cora(dana: User, cora: Organisation, pooled: DatasetVersion, capture) -> DatasetVersion:
    with capture(execute=True):
        withdrawal = custody.contribution_withdraw(
            actor=dana,
            contribution=Contribution.objects.get(version=pooled, contributor=cora),
            reason="consent",
        )
        drain()
    withdrawal.refresh_from_db()
    successor = withdrawal.to_version
    assert successor is not None and successor.state == VersionState.SEALED
    return successor


def _refused(dune: Organisation, dora: User, offer: Offer) -> OrderingRefused:
    with pytest.raises(OrderingRefused) as refused:
        order_place(buyer=dune, offer=offer, actor=dora)
    return refused.value


def test_through_the_listing_that_moved_with_it(
    held,
    pooled,
    alice,
    dana,
    cora,
    dune,
    dora,
    django_capture_on_commit_callbacks,
):
    listing = Listing.objects.get(pk=held.order.listing_id)
    ordinary = _offer(alice, listing, exclusive=False)
    successor = _withdraw_cora(dana, cora, pooled, django_capture_on_commit_callbacks)
    held.refresh_from_db()
    listing.refresh_from_db()
    assert held.version_id == successor.pk and listing.version_id == successor.pk
    assert _refused(dune, dora, ordinary).code == "marketplace.version_exclusive"


def test_through_a_new_listing_on_the_successor_after_the_first_was_withdrawn(
    held,
    pooled,
    alice,
    dana,
    cora,
    dune,
    dora,
    django_capture_on_commit_callbacks,
):
    first = Listing.objects.get(pk=held.order.listing_id)
    catalog.listing_withdraw(actor=alice, listing=first, reason="sold exclusively")
    successor = _withdraw_cora(dana, cora, pooled, django_capture_on_commit_callbacks)
    held.refresh_from_db()
    first.refresh_from_db()
    assert held.version_id == successor.pk  # the license followed its grant
    assert first.version_id == pooled.pk  # the withdrawn listing stayed behind
    second = catalog.listing_create(actor=alice, version=successor, title="Tickets, again")
    ordinary = _offer(alice, second, exclusive=False)
    catalog.listing_publish(actor=alice, listing=second)
    refused = _refused(dune, dora, ordinary)
    assert refused.code == "marketplace.version_exclusive"
    assert successor.public_id in str(refused) and held.order.ref in str(refused)
    assert License.objects.count() == 1


def test_once_the_exclusive_license_ends_the_successor_is_sold_again(
    held,
    pooled,
    alice,
    dana,
    cora,
    dune,
    dora,
    django_capture_on_commit_callbacks,
):
    catalog.listing_withdraw(actor=alice, listing=Listing.objects.get(pk=held.order.listing_id))
    successor = _withdraw_cora(dana, cora, pooled, django_capture_on_commit_callbacks)
    second = catalog.listing_create(actor=alice, version=successor, title="Tickets, again")
    ordinary = _offer(alice, second, exclusive=False)
    catalog.listing_publish(actor=alice, listing=second)
    # The exclusive license ends: the successor is licensed to others again (negative control).
    from marketplace.services.settlement import license_refund

    license_refund(license_=held, reason="ended by the platform")
    assert order_place(buyer=dune, offer=ordinary, actor=dora).state == "paid"
