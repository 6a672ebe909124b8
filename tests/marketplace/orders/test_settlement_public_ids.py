"""Settlements by public id (issue 13, item 9): a ``settlement.paid`` notification names ``stl_…``.

The notifications API shows each notification's ``object_id``; for settlements
it was the integer key, which counted settlements platform-wide. The migration
that adds the ids rewrites the notifications made before it.
"""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps

from common.models import Notification
from common.public_ids import is_public_id
from marketplace.models import License, Settlement
from marketplace.services.orders import order_place
from marketplace.services.settlement import usage_settle
from tests.marketplace.orders.conftest import use

MIGRATION = importlib.import_module("marketplace.migrations.0008_public_ids_more")


@pytest.fixture
def settled(market, bolt, bob, fund) -> Settlement:
    fund(bolt, 50_000)
    license_ = License.objects.get(order=order_place(buyer=bolt, offer=market("fixed"), actor=bob))
    usage_settle(usage_id=use(license_, "job-1", "job_started", 1).pk)
    return Settlement.objects.get(license=license_)


def test_a_settlement_notification_names_the_settlement_by_public_id(settled, acme, alice, token_for):
    paid = Notification.objects.filter(kind="settlement.paid")
    assert paid.count() == 2  # one per rights holder (Acme and Cora)
    assert {n.object_id for n in paid} == {settled.public_id}
    assert is_public_id(settled.public_id, "stl")
    client = token_for(alice, acme, ["read"])
    shown = client.get(f"/api/v1/organisations/{acme.public_id}/notifications").json()["results"]
    assert [n["object_id"] for n in shown if n["kind"] == "settlement.paid"] == [settled.public_id]


def test_the_migration_rewrites_notifications_made_with_the_integer_key(settled, acme):
    old = Notification.objects.create(
        organisation=acme,
        kind="settlement.paid",
        subject="old",
        object_type="settlement",
        object_id=str(settled.pk),
    )
    gone = Notification.objects.create(
        organisation=acme, kind="settlement.paid", subject="?", object_type="settlement", object_id="999999"
    )
    other = Notification.objects.create(
        organisation=acme, kind="job.succeeded", subject="job", object_type="training_job", object_id="7"
    )
    MIGRATION.settlement_notifications_forward(apps, None)
    for row in (old, gone, other):
        row.refresh_from_db()
    assert (old.object_id, gone.object_id, other.object_id) == (settled.public_id, "999999", "7")
    MIGRATION.settlement_notifications_backward(apps, None)
    old.refresh_from_db()
    assert old.object_id == str(settled.pk)
