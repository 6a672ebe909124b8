"""Catalog full-text search on Postgres (ranked, stemmed); SQLite's simpler match is in test_api."""

from __future__ import annotations

import pytest

from marketplace.selectors_catalog import CatalogFilters, listing_search
from marketplace.services import catalog
from tests.marketplace.catalog.conftest import terms_doc

pytestmark = pytest.mark.postgres


def publish(alice, version, title, description="", tags=()):
    listing = catalog.listing_create(
        actor=alice, version=version, title=title, description=description, domain_tags=list(tags)
    )
    price = {"model": "fixed", "unit_price": "0.01"}
    catalog.offer_create(actor=alice, listing=listing, name="o", terms=terms_doc(), price=price)
    return catalog.listing_publish(actor=alice, listing=listing)


def test_full_text_search_stems_and_ranks_titles_first(alice, sealed_rows):
    in_title = publish(alice, sealed_rows(), "Printer repair tickets")
    in_text = publish(alice, sealed_rows(), "Helpdesk corpus", description="Customers describing printers.")
    publish(alice, sealed_rows(), "Court rulings", description="Appeals.", tags=["legal"])

    def titles(q):
        return [listing.pk for listing in listing_search(filters=CatalogFilters(q=q))]

    assert titles("printers") == [in_title.pk, in_text.pk]  # stemmed, and the title weighs more
    assert titles("printer -repair") == [in_text.pk]  # websearch syntax
    assert len(titles("legal")) == 1  # tags are searched too
    assert titles("astronomy") == []
