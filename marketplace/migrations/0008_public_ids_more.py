"""Opaque public ids (alc_, trm_, stl_): added empty, filled for existing rows, then unique.

Settlement notifications named their settlement by integer key (``object_id``);
they are rewritten to the settlement's public id, so the notifications API shows
no count of settlements for rows made before this change either.
"""

from typing import Any

from django.db import migrations, models

import common.public_ids
from common.public_ids import backfill


def settlement_notifications_forward(apps: Any, schema_editor: Any) -> None:
    notification = apps.get_model("common", "Notification")
    settlement = apps.get_model("marketplace", "Settlement")
    rows = list(notification.objects.filter(object_type="settlement").only("pk", "object_id"))
    keys = {int(row.object_id) for row in rows if row.object_id.isdigit()}
    public = dict(settlement.objects.filter(pk__in=keys).values_list("pk", "public_id"))
    changed = []
    for row in rows:
        if row.object_id.isdigit() and int(row.object_id) in public:
            row.object_id = public[int(row.object_id)]
            changed.append(row)
    notification.objects.bulk_update(changed, ["object_id"], batch_size=500)


def settlement_notifications_backward(apps: Any, schema_editor: Any) -> None:
    notification = apps.get_model("common", "Notification")
    settlement = apps.get_model("marketplace", "Settlement")
    rows = list(notification.objects.filter(object_type="settlement", object_id__startswith="stl_"))
    keys = dict(
        settlement.objects.filter(public_id__in=[row.object_id for row in rows]).values_list(
            "public_id", "pk"
        )
    )
    for row in rows:
        row.object_id = str(keys.get(row.object_id, row.object_id))
    notification.objects.bulk_update(rows, ["object_id"], batch_size=500)


class Migration(migrations.Migration):
    dependencies = [
        ("marketplace", "0007_listing_offer_public_ids"),
        ("common", "0009_public_ids_more"),
    ]

    operations = [
        migrations.AddField(
            model_name="rightsallocation",
            name="public_id",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.AddField(
            model_name="offerterms",
            name="public_id",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.AddField(
            model_name="settlement",
            name="public_id",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.RunPython(backfill("marketplace", "rightsallocation", "alc"), migrations.RunPython.noop),
        migrations.RunPython(backfill("marketplace", "offerterms", "trm"), migrations.RunPython.noop),
        migrations.RunPython(backfill("marketplace", "settlement", "stl"), migrations.RunPython.noop),
        migrations.AlterField(
            model_name="rightsallocation",
            name="public_id",
            field=common.public_ids.PublicIdField(prefix="alc"),
        ),
        migrations.AlterField(
            model_name="offerterms",
            name="public_id",
            field=common.public_ids.PublicIdField(prefix="trm"),
        ),
        migrations.AlterField(
            model_name="settlement",
            name="public_id",
            field=common.public_ids.PublicIdField(prefix="stl"),
        ),
        migrations.RunPython(settlement_notifications_forward, settlement_notifications_backward),
    ]
