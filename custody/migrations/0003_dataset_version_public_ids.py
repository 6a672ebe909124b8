"""Opaque public ids (ds_, dsv_): added empty, filled for existing rows, then unique."""

from django.db import migrations, models

import common.public_ids
from common.public_ids import backfill


class Migration(migrations.Migration):
    dependencies = [
        ("custody", "0002_version_key_shred_times"),
    ]

    operations = [
        migrations.AddField(
            model_name="dataset",
            name="public_id",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.AddField(
            model_name="datasetversion",
            name="public_id",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.RunPython(backfill("custody", "dataset", "ds"), migrations.RunPython.noop),
        migrations.RunPython(backfill("custody", "datasetversion", "dsv"), migrations.RunPython.noop),
        migrations.AlterField(
            model_name="dataset",
            name="public_id",
            field=common.public_ids.PublicIdField(prefix="ds"),
        ),
        migrations.AlterField(
            model_name="datasetversion",
            name="public_id",
            field=common.public_ids.PublicIdField(prefix="dsv"),
        ),
    ]
