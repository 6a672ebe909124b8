"""Opaque public ids (ctb_, fnd_): added empty, filled for existing rows, then unique."""

from django.db import migrations, models

import common.public_ids
from common.public_ids import backfill


class Migration(migrations.Migration):
    dependencies = [
        ("custody", "0003_dataset_version_public_ids"),
    ]

    operations = [
        migrations.AddField(
            model_name="contribution",
            name="public_id",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.AddField(
            model_name="finding",
            name="public_id",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.RunPython(backfill("custody", "contribution", "ctb"), migrations.RunPython.noop),
        migrations.RunPython(backfill("custody", "finding", "fnd"), migrations.RunPython.noop),
        migrations.AlterField(
            model_name="contribution",
            name="public_id",
            field=common.public_ids.PublicIdField(prefix="ctb"),
        ),
        migrations.AlterField(
            model_name="finding",
            name="public_id",
            field=common.public_ids.PublicIdField(prefix="fnd"),
        ),
    ]
