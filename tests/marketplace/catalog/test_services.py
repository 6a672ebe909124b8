"""Catalog services against a real database: listings, preview, offers; every change audited."""

from __future__ import annotations

import pytest

from common.models import AuditEvent
from custody import services as custody
from custody.models import GrantPurpose, VersionState
from marketplace.exceptions import (
    ListingInvalid,
    ListingStateConflict,
    NotPermitted,
    PriceInvalid,
    TermsInvalid,
    VersionNotSealed,
)
from marketplace.models import Listing, ListingState, Offer, OfferState, OfferTerms
from marketplace.services import catalog
from tests.marketplace.catalog.conftest import terms_doc

FIXED = {"model": "fixed", "unit_price": "100.00"}


def actions() -> list[str]:
    return list(AuditEvent.objects.filter(action__startswith="marketplace.").values_list("action", flat=True))


class TestListingCreate:
    def test_drafts_a_listing_with_statistics_from_the_report(self, alice, sealed_rows):
        version = sealed_rows()
        listing = catalog.listing_create(
            actor=alice, version=version, title="Tickets", domain_tags="Support, telecom", currency="EUR"
        )
        assert listing.state == ListingState.DRAFT
        assert listing.domain_tags == ["support", "telecom"]
        assert listing.languages == ["en"]  # from the detected languages, "other" left out
        stats = listing.statistics
        assert stats["records"] == 10 and stats["platform_tokens"] == 1000
        assert stats["entities"] == {"EMAIL_ADDRESS": 12, "PERSON": 40}
        assert list(stats["length_distribution"]) == [">=0", ">=64", ">=256"]
        assert stats["findings"] == {"exact_duplicate": 2}
        assert actions() == ["marketplace.listing_create"]

    def test_a_member_may_draft(self, acme_member, sealed_rows):
        assert catalog.listing_create(actor=acme_member, version=sealed_rows(), title="Draft").pk

    def test_a_viewer_may_not(self, acme_viewer, sealed_rows):
        with pytest.raises(NotPermitted):
            catalog.listing_create(actor=acme_viewer, version=sealed_rows(), title="Draft")

    def test_refuses_an_unsealed_version(self, alice, version):
        with pytest.raises(VersionNotSealed) as excinfo:
            catalog.listing_create(actor=alice, version=version, title="Too early")
        assert excinfo.value.code == "marketplace.version_not_sealed"
        assert not Listing.objects.exists()

    def test_one_live_listing_per_version(self, alice, listing):
        with pytest.raises(ListingStateConflict) as excinfo:
            catalog.listing_create(actor=alice, version=listing.version, title="Again")
        assert excinfo.value.code == "marketplace.listing_exists"
        catalog.listing_withdraw(actor=alice, listing=listing)
        assert catalog.listing_create(actor=alice, version=listing.version, title="Again").pk != listing.pk

    @pytest.mark.parametrize(
        ("fields", "pointer"),
        [
            ({"title": "x"}, "/title"),
            ({"title": "Fine", "domain_tags": ["Bad Tag!"]}, "/domain_tags/0"),
            ({"title": "Fine", "languages": ["english language"]}, "/languages/0"),
            ({"title": "Fine", "currency": "euro"}, "/currency"),
            ({"title": "Fine", "colour": "red"}, "/colour"),
        ],
    )
    def test_rejects_bad_fields_with_pointers(self, alice, sealed_rows, fields, pointer):
        with pytest.raises(ListingInvalid) as excinfo:
            catalog.listing_create(actor=alice, version=sealed_rows(), **fields)
        assert excinfo.value.errors[0]["pointer"] == pointer
        assert not Listing.objects.exists()


class TestListingLifecycle:
    def test_publish_needs_an_offer(self, alice, listing):
        with pytest.raises(ListingStateConflict) as excinfo:
            catalog.listing_publish(actor=alice, listing=listing)
        assert excinfo.value.code == "marketplace.listing_no_offers"

    def test_publish_creates_the_default_rights_allocation(self, alice, published):
        assert published.state == ListingState.PUBLISHED and published.published_at
        assert published.version.allocations.get().state == "in_force"
        assert "marketplace.listing_publish" in actions()
        assert "marketplace.rights_default" in actions()

    def test_only_an_admin_publishes(self, acme_member, listing, offer):
        with pytest.raises(NotPermitted):
            catalog.listing_publish(actor=acme_member, listing=listing)

    def test_members_edit_drafts_but_not_published_listings(self, acme_member, alice, listing, offer):
        catalog.listing_update(actor=acme_member, listing=listing, title="Better title")
        catalog.listing_publish(actor=alice, listing=listing)
        with pytest.raises(NotPermitted):
            catalog.listing_update(actor=acme_member, listing=listing, title="Sneaky")
        assert (
            catalog.listing_update(actor=alice, listing=listing, title="Admin title").title == "Admin title"
        )

    def test_a_withdrawn_listing_no_longer_changes(self, alice, published):
        catalog.listing_withdraw(actor=alice, listing=published, reason="done")
        with pytest.raises(ListingStateConflict) as excinfo:
            catalog.listing_update(actor=alice, listing=published, title="Revived")
        assert excinfo.value.code == "marketplace.listing_withdrawn"
        with pytest.raises(ListingStateConflict):
            catalog.offer_create(actor=alice, listing=published, name="x", terms=terms_doc(), price=FIXED)
        published.refresh_from_db()
        assert published.title == "Support tickets" and published.withdraw_reason == "done"

    def test_a_takedown_withdraws_the_versions_listings(self, published):
        assert catalog.listings_withdraw_for_version(version_id=published.version_id, reason="takedown") == 1
        published.refresh_from_db()
        assert published.state == ListingState.WITHDRAWN and published.withdraw_reason == "takedown"
        event = AuditEvent.objects.get(action="marketplace.listing_withdraw")
        assert event.actor_name == "system"
        assert catalog.listings_withdraw_for_version(version_id=published.version_id, reason="again") == 0

    def test_the_currency_is_fixed_once_there_are_offers(self, alice, listing, offer):
        with pytest.raises(ListingStateConflict) as excinfo:
            catalog.listing_update(actor=alice, listing=listing, currency="USD")
        assert excinfo.value.code == "marketplace.listing_currency_fixed"

    def test_a_failed_change_leaves_no_audit_event(self, alice, listing):
        before = AuditEvent.objects.count()
        with pytest.raises(ListingInvalid):
            catalog.listing_update(actor=alice, listing=listing, title="")
        assert AuditEvent.objects.count() == before


class TestOffers:
    def test_terms_are_versioned_and_max_licenses_follows(self, alice, listing):
        doc = terms_doc(
            constraint={"max_jobs": 1, "max_epochs": 1, "max_tokens": 10, "term_days": 1, "max_licenses": 2}
        )
        offer = catalog.offer_create(actor=alice, listing=listing, name="Exclusive", terms=doc, price=FIXED)
        assert offer.max_licenses == 2
        row = catalog.offer_terms_update(
            actor=alice, offer=offer, terms=terms_doc(), price={"model": "metered", "unit_price": "0.07"}
        )
        offer.refresh_from_db()
        assert row.number == 2 and offer.max_licenses is None
        assert catalog.offer_terms_current(offer).pk == row.pk
        first = OfferTerms.objects.get(offer=offer, number=1)
        assert first.terms["constraint"]["max_licenses"] == 2 and first.price_model == "fixed"
        assert actions()[-2:] == ["marketplace.offer_create", "marketplace.offer_terms_update"]

    def test_negative_price_is_rejected_and_nothing_stored(self, alice, listing):
        with pytest.raises(PriceInvalid) as excinfo:
            catalog.offer_create(
                actor=alice,
                listing=listing,
                name="Free money",
                terms=terms_doc(),
                price={"model": "fixed", "unit_price": "-0.05"},
            )
        assert excinfo.value.errors[0]["pointer"] == "/price/unit_price"
        assert not Offer.objects.exists() and not OfferTerms.objects.exists()

    def test_epsilon_above_the_versions_cap_is_rejected(self, alice, sealed_rows):
        listing = catalog.listing_create(actor=alice, version=sealed_rows(epsilon_cap="2"), title="Capped")
        doc = terms_doc(duty={"differential_privacy": {"required": True, "epsilon_cap": 3}})
        with pytest.raises(TermsInvalid) as excinfo:
            catalog.offer_create(actor=alice, listing=listing, name="DP", terms=doc, price=FIXED)
        assert excinfo.value.code == "marketplace.epsilon_above_cap"
        assert not Offer.objects.exists()

    def test_an_offer_on_a_version_no_longer_sealed_is_refused(self, alice, listing):
        listing.version.state = VersionState.TAKEN_DOWN
        listing.version.save(update_fields=["state"])
        with pytest.raises(VersionNotSealed):
            catalog.offer_create(actor=alice, listing=listing, name="Late", terms=terms_doc(), price=FIXED)

    def test_retire_is_idempotent_and_audited_once(self, alice, offer):
        catalog.offer_retire(actor=alice, offer=offer)
        catalog.offer_retire(actor=alice, offer=offer)
        offer.refresh_from_db()
        assert offer.state == OfferState.RETIRED
        assert actions().count("marketplace.offer_retire") == 1
        with pytest.raises(ListingStateConflict):
            catalog.offer_terms_update(actor=alice, offer=offer, terms=terms_doc(), price=FIXED)


class TestPreview:
    """Through the real pipeline: the preview is desensitized text, read through custody, audited."""

    @pytest.fixture
    def pii_listing(self, alice, version, upload):
        from tests.custody.conftest import drain, jsonl

        records = [
            {"text": f"Ticket {i}: call Maria Lopez at maria.lopez{i}@example.com about the printer."}
            for i in range(8)
        ]
        upload(version, jsonl(records))
        custody.version_process(actor=alice, version=version)
        drain()
        sealed = custody.version_seal(actor=alice, version=version)
        return catalog.listing_create(actor=alice, version=sealed, title="Tickets with PII")

    def test_candidates_are_desensitized_and_their_reading_is_audited(self, alice, pii_listing):
        candidates = catalog.preview_candidates(actor=alice, listing=pii_listing)
        assert len(candidates) == 8
        texts = " ".join(t for c in candidates for t in c["text"].values())
        assert "maria.lopez" not in texts and "Maria Lopez" not in texts
        assert "Ticket 3" in texts
        opened = AuditEvent.objects.filter(action="custody.stream_open").last()
        assert opened is not None
        assert opened.details["purpose"] == GrantPurpose.PREVIEW
        assert opened.details["consumer_ref"] == f"listing-{pii_listing.pk}"

    def test_pick_then_approve(self, alice, acme_member, pii_listing):
        ids = [c["record_id"] for c in catalog.preview_candidates(actor=acme_member, listing=pii_listing)][:2]
        picked = catalog.preview_pick(actor=acme_member, listing=pii_listing, record_ids=ids)
        assert [p["record_id"] for p in picked.preview] == ids
        assert picked.preview_approved_at is None
        with pytest.raises(NotPermitted):
            catalog.preview_approve(actor=acme_member, listing=pii_listing)
        approved = catalog.preview_approve(actor=alice, listing=pii_listing)
        assert approved.preview_approved_at and approved.preview_approved_by == alice
        event = AuditEvent.objects.get(action="marketplace.preview_approve")
        assert event.details["record_ids"] == ids
        assert "Ticket" not in str(event.details)  # ids and a digest, never the text

    def test_a_new_pick_needs_a_new_approval(self, alice, pii_listing):
        ids = [c["record_id"] for c in catalog.preview_candidates(actor=alice, listing=pii_listing)]
        catalog.preview_pick(actor=alice, listing=pii_listing, record_ids=ids[:1])
        catalog.preview_approve(actor=alice, listing=pii_listing)
        repicked = catalog.preview_pick(actor=alice, listing=pii_listing, record_ids=ids[1:3])
        assert repicked.preview_approved_at is None

    def test_refuses_records_that_are_not_candidates_and_too_many(self, alice, pii_listing):
        with pytest.raises(ListingInvalid) as excinfo:
            catalog.preview_pick(actor=alice, listing=pii_listing, record_ids=[999])
        assert excinfo.value.errors[0]["code"] == "not_a_candidate"
        with pytest.raises(ListingInvalid):
            catalog.preview_pick(actor=alice, listing=pii_listing, record_ids=list(range(6)))
        pii_listing.refresh_from_db()
        assert pii_listing.preview == []

    def test_approving_nothing_is_a_conflict(self, alice, pii_listing):
        with pytest.raises(ListingStateConflict) as excinfo:
            catalog.preview_approve(actor=alice, listing=pii_listing)
        assert excinfo.value.code == "marketplace.preview_empty"
