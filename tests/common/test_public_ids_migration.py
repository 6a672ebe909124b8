"""The ``*_public_ids_more`` migrations give rows made before them a public id of their kind.

Run against the real migration graph: back to before the migrations, rows made
with the models of that time, then forward to the latest state.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from common.public_ids import is_public_id

BEFORE = [
    ("common", "0008_audit_event_pending_last"),
    ("custody", "0003_dataset_version_public_ids"),
    ("marketplace", "0007_listing_offer_public_ids"),
]


def _old_rows(apps: Any) -> dict[str, list[int]]:
    user = apps.get_model("common", "User").objects.create(username="olga", email="olga@example.test")
    org = apps.get_model("common", "Organisation").objects.create(
        name="Old Texts", slug="old-texts", is_provider=True
    )
    membership = apps.get_model("common", "Membership").objects.create(
        user=user, organisation=org, role="admin"
    )
    notes = [
        apps.get_model("common", "Notification").objects.create(organisation=org, kind="k", subject=str(n))
        for n in range(3)
    ]
    dataset = apps.get_model("custody", "Dataset").objects.create(owner=org, name="Old", slug="old")
    version = apps.get_model("custody", "DatasetVersion").objects.create(dataset=dataset, number=1)
    contribution = apps.get_model("custody", "Contribution").objects.create(
        version=version, contributor=org, filename="a.jsonl", format="jsonl"
    )
    findings = [
        apps.get_model("custody", "Finding").objects.create(
            version=version, record_id=n, kind="empty", detail="x"
        )
        for n in range(4)
    ]
    return {
        "usr": [user.pk],
        "mem": [membership.pk],
        "ntf": [n.pk for n in notes],
        "ctb": [contribution.pk],
        "fnd": [f.pk for f in findings],
    }


@pytest.mark.django_db(transaction=True)
def test_rows_made_before_get_a_unique_public_id_of_their_kind():
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate(BEFORE)
    made = _old_rows(executor.loader.project_state(BEFORE).apps)
    executor = MigrationExecutor(connection)
    executor.migrate(latest)

    from django.apps import apps

    from common.public_ids import PREFIXES

    seen: set[str] = set()
    for prefix, pks in made.items():
        ids = list(
            apps.get_model(PREFIXES[prefix])
            ._default_manager.filter(pk__in=pks)
            .values_list("public_id", flat=True)
        )
        assert len(ids) == len(pks) and all(is_public_id(i, prefix) for i in ids), (prefix, ids)
        seen.update(ids)
    assert len(seen) == sum(len(pks) for pks in made.values())
