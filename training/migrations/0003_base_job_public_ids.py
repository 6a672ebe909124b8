"""Opaque public ids (base_, job_): added empty, filled for existing rows, then unique."""

from django.db import migrations, models

import common.public_ids
from common.public_ids import backfill


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0002_seed_builtin_bases"),
    ]

    operations = [
        migrations.AddField(
            model_name="basemodel",
            name="public_id",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.AddField(
            model_name="trainingjob",
            name="public_id",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.RunPython(backfill("training", "basemodel", "base"), migrations.RunPython.noop),
        migrations.RunPython(backfill("training", "trainingjob", "job"), migrations.RunPython.noop),
        migrations.AlterField(
            model_name="basemodel",
            name="public_id",
            field=common.public_ids.PublicIdField(prefix="base"),
        ),
        migrations.AlterField(
            model_name="trainingjob",
            name="public_id",
            field=common.public_ids.PublicIdField(prefix="job"),
        ),
    ]
