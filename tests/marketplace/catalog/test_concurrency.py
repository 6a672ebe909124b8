"""Races on Postgres: one default allocation, one live listing per version, whoever comes first."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connection

from marketplace.exceptions import ListingStateConflict
from marketplace.models import Listing, RightsAllocation
from marketplace.services import catalog, rights

pytestmark = pytest.mark.postgres


def race(count: int, work: Callable[[], object]) -> list[object]:
    barrier = threading.Barrier(count)
    results: list[object] = []

    def run() -> None:
        barrier.wait()
        try:
            results.append(work())
        except Exception as exc:  # noqa: BLE001 - the outcome is what the test checks
            results.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_readers_create_one_default_allocation(transactional_db, sealed_rows):
    version = sealed_rows()
    results = race(6, lambda: rights.allocation_in_force(version=version).pk)
    assert len(set(results)) == 1, results
    assert RightsAllocation.objects.filter(version=version).count() == 1


def test_two_drafts_of_one_version_make_one_listing(transactional_db, alice, sealed_rows):
    version = sealed_rows()
    results = race(2, lambda: catalog.listing_create(actor=alice, version=version, title="Same version"))
    assert sum(isinstance(r, Listing) for r in results) == 1
    assert sum(isinstance(r, ListingStateConflict) for r in results) == 1
    assert Listing.objects.filter(version=version).count() == 1
