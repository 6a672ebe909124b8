"""Preview safety: the strict detector reads the picked preview records before an admin may approve them."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from common.models import AuditEvent
from custody import services as custody
from marketplace.exceptions import PreviewUnsafe
from marketplace.models import Listing
from marketplace.services import catalog
from tests.custody.conftest import drain, jsonl

pytestmark = pytest.mark.django_db

# Names stay in clear under this policy; e-mail addresses are replaced.
NAMES_KEPT = {"entities": ["PERSON", "EMAIL_ADDRESS"], "threshold": 0.99}
RECORDS = [
    {"text": "The printer on floor two jams every morning."},
    {"text": "Maria Lopez says the printer on floor three jams too."},
    {"text": "Write to helpdesk@example.com when the toner runs out."},
]


@pytest.fixture
def listing(alice, acme, upload) -> Listing:
    dataset = custody.dataset_create(actor=alice, organisation=acme, name="Printers", policy=NAMES_KEPT)
    version = custody.version_create(actor=alice, dataset=dataset)
    upload(version, jsonl(RECORDS))
    custody.version_process(actor=alice, version=version)
    drain()
    sealed = custody.version_seal(actor=alice, version=version, confirm_residual_risk=True)
    return catalog.listing_create(actor=alice, version=sealed, title="Printer tickets")


def record_ids(alice, listing: Listing) -> list[int]:
    return [c["record_id"] for c in catalog.preview_candidates(actor=alice, listing=listing)]


class TestPreviewApproval:
    def test_a_record_with_a_name_cannot_be_approved_until_dropped(self, alice, listing):
        first, with_name, with_email = record_ids(alice, listing)
        catalog.preview_pick(actor=alice, listing=listing, record_ids=[first, with_name, with_email])
        with pytest.raises(PreviewUnsafe) as excinfo:
            catalog.preview_approve(actor=alice, listing=listing)
        error = excinfo.value
        assert error.code == "marketplace.preview_unsafe"
        assert f"preview record {with_name}." in error.detail
        assert [e["pointer"] for e in error.errors] == ["/preview/1/text/text"]
        assert "PERSON" in error.errors[0]["detail"]
        assert "Maria" not in error.detail  # offsets and types, never the text
        listing.refresh_from_db()
        assert listing.preview_approved_at is None
        assert not AuditEvent.objects.filter(action="marketplace.preview_approve").exists()
        # Dropped from the preview: the tagged e-mail address is no hit.
        catalog.preview_pick(actor=alice, listing=listing, record_ids=[first, with_email])
        assert catalog.preview_approve(actor=alice, listing=listing).preview_approved_at is not None

    def test_the_api_answers_422_naming_the_record_and_the_page_says_it(
        self, alice, acme, token_for, listing
    ):
        _, with_name, _ = record_ids(alice, listing)
        catalog.preview_pick(actor=alice, listing=listing, record_ids=[with_name])
        client = token_for(alice, acme, ["read", "provide"])
        response = client.post(f"/api/v1/catalog/listings/{listing.public_id}/preview/approve")
        assert response.status_code == 422
        assert response["Content-Type"].startswith("application/problem+json")
        body = response.json()
        assert body["code"] == "marketplace.preview_unsafe"
        assert body["errors"][0]["pointer"] == "/preview/0/text/text"
        page = Client()
        page.force_login(alice)
        followed = page.post(
            reverse("marketplace:preview_approve", kwargs={"listing_id": listing.public_id}), follow=True
        )
        assert f"preview record {with_name}." in followed.content.decode()
