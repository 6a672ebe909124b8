"""The demo seed publishes a listing on custody's demo version, once."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from common.models import AuditEvent
from marketplace.demo import LISTING_TITLE
from marketplace.models import Listing, ListingState


@pytest.mark.django_db
def test_demo_seed_publishes_the_listing_once():
    out = StringIO()
    call_command("demo_seed", stdout=out)
    listing = Listing.objects.get(title=LISTING_TITLE)
    assert listing.state == ListingState.PUBLISHED
    assert listing.offers.count() == 2
    assert len(listing.preview) == 3 and listing.preview_approved_at is not None
    assert "@example.com" not in str(listing.preview)  # desensitized
    assert listing.version.allocations.get().state == "in_force"
    events = AuditEvent.objects.count()
    again = StringIO()
    call_command("demo_seed", stdout=again)
    assert f"{LISTING_TITLE}: exists" in again.getvalue()
    assert AuditEvent.objects.count() == events
    assert Listing.objects.count() == 1
