"""Opaque public ids (org_, tok_, whk_): added empty, filled for existing rows, then unique."""

from django.db import migrations, models

import common.public_ids
from common.public_ids import backfill


class Migration(migrations.Migration):
    dependencies = [
        ("common", "0005_idempotencyrecord_moved_from_marketplace"),
    ]

    operations = [
        migrations.AddField(
            model_name="organisation",
            name="public_id",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.AddField(
            model_name="apitoken",
            name="public_id",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.AddField(
            model_name="webhookendpoint",
            name="public_id",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.RunPython(backfill("common", "organisation", "org"), migrations.RunPython.noop),
        migrations.RunPython(backfill("common", "apitoken", "tok"), migrations.RunPython.noop),
        migrations.RunPython(backfill("common", "webhookendpoint", "whk"), migrations.RunPython.noop),
        migrations.AlterField(
            model_name="organisation",
            name="public_id",
            field=common.public_ids.PublicIdField(prefix="org"),
        ),
        migrations.AlterField(
            model_name="apitoken",
            name="public_id",
            field=common.public_ids.PublicIdField(prefix="tok"),
        ),
        migrations.AlterField(
            model_name="webhookendpoint",
            name="public_id",
            field=common.public_ids.PublicIdField(prefix="whk"),
        ),
    ]
