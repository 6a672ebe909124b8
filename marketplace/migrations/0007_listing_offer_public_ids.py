"""Opaque public ids (lst_, ofr_): added empty, filled for existing rows, then unique."""

from django.db import migrations, models

import common.public_ids
from common.public_ids import backfill


class Migration(migrations.Migration):
    dependencies = [
        ("marketplace", "0006_idempotencyrecord_moved_to_common"),
    ]

    operations = [
        migrations.AddField(
            model_name="listing",
            name="public_id",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.AddField(
            model_name="offer",
            name="public_id",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.RunPython(backfill("marketplace", "listing", "lst"), migrations.RunPython.noop),
        migrations.RunPython(backfill("marketplace", "offer", "ofr"), migrations.RunPython.noop),
        migrations.AlterField(
            model_name="listing",
            name="public_id",
            field=common.public_ids.PublicIdField(prefix="lst"),
        ),
        migrations.AlterField(
            model_name="offer",
            name="public_id",
            field=common.public_ids.PublicIdField(prefix="ofr"),
        ),
    ]
