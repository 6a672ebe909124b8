"""Audit events looked up by object (the console's object filter, a grant's stream opens) use an index."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from common.audit import audit_integrate, audit_record
from common.models import AuditEvent
from portal.console.audit import audit_events_filtered

pytestmark = pytest.mark.django_db

FIELDS = ["object_type", "object_id"]


def object_index_name() -> str:
    return next(index.name for index in AuditEvent._meta.indexes if list(index.fields) == FIELDS)


def plan(queryset) -> str:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # The test table is tiny: make the planner show whether it *can* use the index.
            cursor.execute("SET LOCAL enable_seqscan = off")
    return queryset.explain()


@pytest.fixture
def events(db) -> None:
    with transaction.atomic():
        for n in range(30):
            audit_record(action="test.thing", object_type="grant" if n % 2 else "order", object_id=n)
    audit_integrate()  # the console lists integrated events (docs/audit.md "Sequencer")


def test_the_database_has_the_object_index():
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, AuditEvent._meta.db_table)
    index = constraints[object_index_name()]
    assert index["index"] and index["columns"] == FIELDS


def test_the_consoles_object_filter_uses_it(events):
    events_for_object = audit_events_filtered({"object_type": "grant", "object_id": "7"})
    assert list(events_for_object.values_list("object_id", flat=True)) == ["7"]
    assert object_index_name() in plan(events_for_object)


def test_the_stream_opens_of_some_grants_use_it(events):
    opens = AuditEvent.objects.filter(
        action="custody.stream_open", object_type="grant", object_id__in=["1", "3"]
    ).order_by("seq")
    assert object_index_name() in plan(opens)
