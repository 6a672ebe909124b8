"""Opaque public ids (usr_, mem_, inv_, ntf_, dlv_): added empty, filled for existing rows, then unique."""

from django.db import migrations, models

import common.public_ids
from common.public_ids import backfill


class Migration(migrations.Migration):
    dependencies = [
        ("common", "0008_audit_event_pending_last"),
    ]

    operations = [
        migrations.AddField(
            model_name="user",
            name="public_id",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.AddField(
            model_name="membership",
            name="public_id",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.AddField(
            model_name="invitation",
            name="public_id",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.AddField(
            model_name="notification",
            name="public_id",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.AddField(
            model_name="webhookdelivery",
            name="public_id",
            field=models.CharField(editable=False, max_length=32, null=True),
        ),
        migrations.RunPython(backfill("common", "user", "usr"), migrations.RunPython.noop),
        migrations.RunPython(backfill("common", "membership", "mem"), migrations.RunPython.noop),
        migrations.RunPython(backfill("common", "invitation", "inv"), migrations.RunPython.noop),
        migrations.RunPython(backfill("common", "notification", "ntf"), migrations.RunPython.noop),
        migrations.RunPython(backfill("common", "webhookdelivery", "dlv"), migrations.RunPython.noop),
        migrations.AlterField(
            model_name="user",
            name="public_id",
            field=common.public_ids.PublicIdField(prefix="usr"),
        ),
        migrations.AlterField(
            model_name="membership",
            name="public_id",
            field=common.public_ids.PublicIdField(prefix="mem"),
        ),
        migrations.AlterField(
            model_name="invitation",
            name="public_id",
            field=common.public_ids.PublicIdField(prefix="inv"),
        ),
        migrations.AlterField(
            model_name="notification",
            name="public_id",
            field=common.public_ids.PublicIdField(prefix="ntf"),
        ),
        migrations.AlterField(
            model_name="webhookdelivery",
            name="public_id",
            field=common.public_ids.PublicIdField(prefix="dlv"),
        ),
    ]
