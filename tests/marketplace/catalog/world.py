"""The catalog's part of the authorization matrix's world (tests/common/test_authz_matrix.py).

Acme has one published listing, with an offer and its default rights
allocation, on a sealed version made from rows (no records: preview candidates
are empty, so no decrypt is needed).
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from common.models import Organisation, User
from custody.models import Dataset, DatasetVersion, VersionState
from marketplace.models import Listing
from marketplace.services import catalog, rights

TITLE = "Matrix listing"


def _terms() -> dict[str, Any]:
    return {
        "version": 1,
        "permission": {"purposes": ["research"], "job_templates": ["causal_lm"], "weights_may_leave": False},
        "constraint": {"max_jobs": 1, "max_epochs": 1, "max_tokens": 1000, "term_days": 30},
    }


def matrix_catalog(acme: Organisation) -> dict[str, int]:
    """Ids of Acme's published listing, its offer and its allocation in force (created on first use)."""
    listing = Listing.objects.filter(provider=acme, title=TITLE).first()
    if listing is None:
        admin = User.objects.get(username="alice")
        dataset = Dataset.objects.create(owner=acme, name="Matrix sealed", slug="matrix-sealed")
        version = DatasetVersion.objects.create(
            dataset=dataset,
            number=1,
            state=VersionState.SEALED,
            merkle_root="cd" * 32,
            sealed_at=timezone.now(),
        )
        listing = catalog.listing_create(actor=admin, version=version, title=TITLE)
        catalog.offer_create(
            actor=admin,
            listing=listing,
            name="Matrix offer",
            terms=_terms(),
            price={"model": "fixed", "unit_price": "0.01"},
        )
        catalog.listing_publish(actor=admin, listing=listing)
    return {
        "listing_id": listing.pk,
        "offer_id": listing.offers.get().pk,
        "allocation_id": rights.allocation_in_force(version=listing.version).pk,
        "version_id": listing.version_id,
    }


def matrix_catalog_body(acme: Organisation, route: str, method: str) -> dict[str, Any]:
    """Request bodies of the catalog's API rows."""
    ids = matrix_catalog(acme)
    bodies: dict[tuple[str, str], dict[str, Any]] = {
        ("api-catalog-listings", "POST"): {
            "version_id": DatasetVersion.objects.get(pk=ids["version_id"]).public_id,
            "title": "Second listing",
        },
        ("api-catalog-listing", "PATCH"): {"title": "Matrix listing"},
        ("api-catalog-listing-withdraw", "POST"): {"reason": "matrix"},
        ("api-catalog-preview", "PUT"): {"record_ids": []},
        ("api-catalog-offers", "POST"): {
            "name": "Another",
            "terms": _terms(),
            "price": {"model": "fixed", "unit_price": "0.02"},
        },
        ("api-catalog-offer-terms", "POST"): {
            "terms": _terms(),
            "price": {"model": "fixed", "unit_price": "0.03"},
        },
        ("api-catalog-rights", "POST"): {"shares": {acme.public_id: 10_000}},
    }
    return bodies.get((route, method), {})
