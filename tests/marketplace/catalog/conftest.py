"""Catalog fixtures: sealed versions made quickly from rows (no text), or by the real pipeline.

``sealed_rows`` writes a sealed version's rows directly: contributions,
shards with token counts and a desensitization report's counts, but no
encrypted records. Services that only read counts (listings, offers, rights,
quotes) use it; the preview, which decrypts records through custody, uses
the custody fixture ``sealed_version`` (the real pipeline).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any, cast

import pytest
from django.utils import timezone

from common.models import Organisation, User
from custody.models import (
    Contribution,
    ContributionState,
    Dataset,
    DatasetVersion,
    Report,
    Shard,
    VersionContributor,
    VersionState,
)
from marketplace.models import Listing, Offer
from marketplace.services import catalog
from tests.custody.conftest import dataset, drain, jsonl, sealed_version, upload, version  # noqa: F401

COUNTS = {
    "entities": {"PERSON": 40, "EMAIL_ADDRESS": 12},
    "languages": {"en": 95, "other": 5},
    "lengths": {">=64": 60, ">=0": 30, ">=256": 10},
}


def terms_doc(**overrides: Any) -> dict[str, Any]:
    """A valid terms document; ``overrides`` replace whole sections or top-level keys."""
    doc: dict[str, Any] = {
        "version": 1,
        "permission": {
            "purposes": ["research"],
            "job_templates": ["causal_lm_lora", "seq_classification"],
            "weights_may_leave": True,
        },
        "constraint": {"max_jobs": 3, "max_epochs": 2, "max_tokens": 5_000_000, "term_days": 90},
        "duty": {"attribution": "Acme support tickets", "release_gate": {"max_exposure": 3.5}},
    }
    doc.update(overrides)
    return doc


@pytest.fixture
def sealed_rows(acme) -> Callable[..., DatasetVersion]:
    """``sealed_rows(tokens={org: n}, epsilon_cap=None)`` -> a sealed version (rows only)."""
    serial = {"n": 0}

    def _make(
        tokens: Mapping[Organisation, int] | None = None, epsilon_cap: str | None = None, **fields: Any
    ) -> DatasetVersion:
        serial["n"] += 1
        made_dataset = Dataset.objects.create(
            owner=acme, name=f"Rows {serial['n']}", slug=f"rows-{serial['n']}"
        )
        made = DatasetVersion.objects.create(
            dataset=made_dataset,
            number=1,
            state=VersionState.SEALED,
            merkle_root="ab" * 32,
            sealed_at=timezone.now(),
            epsilon_cap=Decimal(epsilon_cap) if epsilon_cap else None,
            **fields,
        )
        first = 0
        for index, (org, tokens_of_org) in enumerate((tokens or {acme: 1000}).items()):
            VersionContributor.objects.get_or_create(version=made, organisation=org)
            contribution = Contribution.objects.create(
                version=made,
                contributor=org,
                filename="x.jsonl",
                format="jsonl",
                state=ContributionState.DONE,
                records=10,
                tokens=tokens_of_org,
            )
            Shard.objects.create(
                version=made,
                index=index,
                contribution=contribution,
                first_record=first,
                records=10,
                tokens=tokens_of_org,
                size=1,
                sha256="0" * 64,
                blob_key=f"none/{index}",
            )
            first += 10
        made.records = first
        made.tokens = sum((tokens or {acme: 1000}).values())
        made.save(update_fields=["records", "tokens"])
        Report.objects.create(version=made, counts=COUNTS, findings_summary={"exact_duplicate": 2})
        return made

    return _make


@pytest.fixture
def listing(alice, sealed_rows) -> Listing:
    return catalog.listing_create(
        actor=alice, version=sealed_rows(), title="Support tickets", domain_tags=["support"]
    )


@pytest.fixture
def offer(alice, listing) -> Offer:
    return catalog.offer_create(
        actor=alice,
        listing=listing,
        name="Research",
        terms=terms_doc(),
        price={"model": "fixed", "unit_price": "500.00"},
    )


@pytest.fixture
def published(alice, listing, offer) -> Listing:
    return catalog.listing_publish(actor=alice, listing=listing)


def member(org: Organisation, username: str, role: str) -> User:
    from tests.factories import MembershipFactory, UserFactory

    user = cast(User, UserFactory(username=username))
    MembershipFactory(user=user, organisation=org, role=role)
    return user
