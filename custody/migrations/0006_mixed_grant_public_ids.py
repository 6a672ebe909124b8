"""Opaque public ids for grants (gnt_): added empty, filled for existing rows, then unique."""

from django.db import migrations, models

import common.public_ids
from common.public_ids import backfill


class Migration(migrations.Migration):
    dependencies = [
        ("custody", "0005_usage_by_contribution"),
    ]

    operations = [
        migrations.AddField(
            model_name="grant",
            name="public_id",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.RunPython(backfill("custody", "grant", "gnt"), migrations.RunPython.noop),
        migrations.AlterField(
            model_name="grant",
            name="public_id",
            field=common.public_ids.PublicIdField(prefix="gnt"),
        ),
    ]
