"""A takedown's marketplace side runs as leased work items: retried on failure, swept if its bell is lost."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from django.db import connection

from common.models import AuditEvent, Notification, WorkItem, WorkState
from common.work import work_run
from custody.services import version_takedown
from marketplace.ledger import balance, organisation_balance_account
from marketplace.models import LedgerTransaction, License, LicenseState, ListingState, OrderState
from marketplace.services.orders import order_place
from marketplace.services.takedown import LICENSE_WORK, LISTING_WORK, ORDER_WORK, takedown_enqueue
from marketplace.tasks import marketplace_sweep
from tests.custody.conftest import drain
from tests.marketplace.orders.conftest import listing_of, use


def buyer_balance(org) -> int:
    return balance(organisation_balance_account(organisation=org, currency="EUR"))


@contextmanager
def refunds_refused() -> Iterator[None]:
    """The database refuses every escrow refund while the block runs (a real failure, not a stand-in)."""
    table = LedgerTransaction._meta.db_table
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION test_refuse_refund() RETURNS trigger AS $$ BEGIN "
                "IF NEW.kind = 'escrow.refund' THEN RAISE EXCEPTION 'refund refused'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                f"CREATE TRIGGER test_refuse_refund BEFORE INSERT ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION test_refuse_refund()"
            )
        else:
            cursor.execute(
                f"CREATE TRIGGER test_refuse_refund BEFORE INSERT ON {table} "
                "WHEN NEW.kind = 'escrow.refund' BEGIN SELECT RAISE(ABORT, 'refund refused'); END"
            )
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(f"DROP TRIGGER test_refuse_refund ON {table}")
                cursor.execute("DROP FUNCTION test_refuse_refund()")
            else:
                cursor.execute("DROP TRIGGER test_refuse_refund")


@pytest.fixture
def metered(market, bolt, bob, fund) -> License:
    """A metered license of 1,000 in escrow, 200 of it owed for 1,000,000 tokens recorded."""
    offer = market("metered")
    fund(bolt, 1_000)
    license_ = License.objects.get(order=order_place(buyer=bolt, offer=offer, actor=bob))
    use(license_, "job-1", "tokens_trained", 1_000_000)
    return license_


def revoked_once(license_: License) -> None:
    license_.refresh_from_db()
    assert license_.state == LicenseState.REVOKED
    assert (license_.released, license_.refunded) == (200, 800)
    assert LedgerTransaction.objects.filter(kind="escrow.refund").count() == 1
    assert AuditEvent.objects.filter(action="marketplace.license_revoke", object_id=license_.ref).count() == 1


class TestTakedownWork:
    def test_a_failing_refund_is_retried_and_lands_once(
        self, metered, bolt, ops, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            version_takedown(actor=ops, version=metered.version, reason="court order")
        item = WorkItem.objects.get(kind=LICENSE_WORK, ref=str(metered.pk))
        with refunds_refused():
            assert work_run(item_id=item.pk, owner="test") == "retrying"
        item.refresh_from_db()
        assert item.state == WorkState.QUEUED and item.attempts == 1 and item.last_error
        metered.refresh_from_db()
        assert metered.state == LicenseState.ACTIVE and metered.refunded == 0

        assert work_run(item_id=item.pk, owner="test") == "done"
        revoked_once(metered)
        assert buyer_balance(bolt) == 800
        assert Notification.objects.filter(organisation=bolt, kind="license.revoked").count() == 1
        # Enqueued again (a second bell, the sweep) and run again: nothing moves twice.
        takedown_enqueue(version_id=metered.version_id)
        drain()
        revoked_once(metered)

    def test_the_sweep_finds_a_license_left_active_when_the_bell_was_lost(
        self, metered, ops, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=False):  # the doorbell never rings
            version_takedown(actor=ops, version=metered.version, reason="court order")
        assert not WorkItem.objects.filter(kind__startswith="marketplace.takedown").exists()
        metered.refresh_from_db()
        assert metered.state == LicenseState.ACTIVE

        found = marketplace_sweep()["takedown"]
        assert found["licenses"] == [metered.pk] and len(found["listings"]) == 1
        drain()
        revoked_once(metered)
        assert listing_of(metered.order.offer).state == ListingState.WITHDRAWN
        assert marketplace_sweep()["takedown"] == {"listings": [], "orders": [], "licenses": []}

    def test_a_pending_order_is_rejected_and_refunded(
        self, market, bolt, bob, fund, ops, django_capture_on_commit_callbacks
    ):
        offer = market("fixed", approval=True)
        fund(bolt, 50_000)
        order = order_place(buyer=bolt, offer=offer, actor=bob)
        assert order.state == OrderState.PENDING and buyer_balance(bolt) == 0
        with django_capture_on_commit_callbacks(execute=True):
            version_takedown(actor=ops, version=listing_of(offer).version, reason="court order")
        assert WorkItem.objects.filter(kind=ORDER_WORK, ref=str(order.pk)).exists()
        assert WorkItem.objects.filter(kind=LISTING_WORK).count() == 1
        drain()
        order.refresh_from_db()
        assert order.state == OrderState.REJECTED and buyer_balance(bolt) == 50_000
        assert AuditEvent.objects.filter(action="marketplace.order_reject", object_id=order.ref).count() == 1
