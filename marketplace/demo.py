"""Demo data for marketplace: a published listing on custody's demo version, with two offers.

Made through the catalog services, as Acme's admin would: a draft with its
statistics, a research offer (fixed price) and a commercial one (metered,
exclusive to three licensees), a preview of three desensitized records picked
and approved, then published. A second run finds the listing and changes nothing.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import OutputWrapper

from common.models import Organisation, User
from custody.demo import DATASET_NAME
from custody.models import DatasetVersion, VersionState
from marketplace.models import Listing, ListingState
from marketplace.services import catalog

LISTING_TITLE = "Customer support tickets"


def _terms(
    purposes: list[str], templates: list[str], *, weights: bool, tokens: int, licenses: int | None = None
) -> dict[str, Any]:
    return {
        "version": 1,
        "permission": {"purposes": purposes, "job_templates": templates, "weights_may_leave": weights},
        "constraint": {
            "max_jobs": 5,
            "max_epochs": 3,
            "max_tokens": tokens,
            "term_days": 180,
            "max_licenses": licenses,
        },
        "duty": {"attribution": "Customer support tickets (demo), Acme Corpora, via Sealroom"},
    }


def seed(stdout: OutputWrapper) -> None:
    """Publish the demo listing if it is not there yet (idempotent)."""
    acme = Organisation.objects.filter(name="Acme Corpora").first()
    alice = User.objects.filter(username="alice").first()
    version = (
        DatasetVersion.objects.filter(
            dataset__owner=acme, dataset__name=DATASET_NAME, state=VersionState.SEALED
        ).first()
        if acme is not None
        else None
    )
    if alice is None or version is None:
        stdout.write("  skipped: custody's demo version is not sealed")
        return
    if Listing.objects.filter(version=version).exclude(state=ListingState.WITHDRAWN).exists():
        stdout.write(f"  {LISTING_TITLE}: exists")
        return
    listing = catalog.listing_create(
        actor=alice,
        version=version,
        title=LISTING_TITLE,
        description=(
            "Synthetic customer-support tickets about routers, printers and thermostats, "
            "with names, e-mail addresses and phone numbers replaced before storage."
        ),
        domain_tags=["customer-support", "consumer-electronics"],
    )
    budget = max(version.tokens * 3, 1)
    catalog.offer_create(
        actor=alice,
        listing=listing,
        name="Research",
        # causal_lm first: the built-in causal bases are random-init, and LoRA on a random base
        # barely learns (adapters cannot lift frozen random embeddings; loss ~10.2 -> 10.0).
        terms=_terms(
            ["research"], ["causal_lm", "causal_lm_lora", "seq_classification"], weights=True, tokens=budget
        ),
        price={"model": "fixed", "unit_price": "250.00"},
    )
    catalog.offer_create(
        actor=alice,
        listing=listing,
        name="Commercial, metered",
        terms=_terms(
            ["commercial", "internal_evaluation"],
            ["causal_lm", "causal_lm_lora"],
            weights=False,
            tokens=budget,
            licenses=3,
        ),
        price={"model": "metered", "unit_price": "400.00"},
    )
    candidates = catalog.preview_candidates(actor=alice, listing=listing)
    catalog.preview_pick(actor=alice, listing=listing, record_ids=[c["record_id"] for c in candidates[:3]])
    catalog.preview_approve(actor=alice, listing=listing)
    catalog.listing_publish(actor=alice, listing=listing)
    stdout.write(f"  {LISTING_TITLE}: published with 2 offers and a 3-record preview")
