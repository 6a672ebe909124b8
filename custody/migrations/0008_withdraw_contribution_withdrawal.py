"""Withdrawal with lineage (issue 15 item 4): the withdrawal row, the superseded state, carried_from."""

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

import common.public_ids


class Migration(migrations.Migration):
    dependencies = [
        ("common", "0009_public_ids_more"),
        ("custody", "0007_value_valuation_grant_purpose"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="contribution",
            name="carried_from",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="carried_to",
                to="custody.contribution",
            ),
        ),
        migrations.AlterField(
            model_name="datasetversion",
            name="state",
            field=models.CharField(
                choices=[
                    ("uploading", "Uploading"),
                    ("processing", "Processing"),
                    ("review", "Ready for review"),
                    ("sealed", "Sealed"),
                    ("failed", "Failed"),
                    ("rejected", "Rejected"),
                    ("abandoned", "Abandoned"),
                    ("taken_down", "Taken down"),
                    ("superseded", "Superseded"),
                ],
                default="uploading",
                max_length=16,
            ),
        ),
        migrations.CreateModel(
            name="ContributionWithdrawal",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("public_id", common.public_ids.PublicIdField(prefix="wdr")),
                ("requested_as", models.CharField(max_length=16)),
                ("reason", models.CharField(max_length=300)),
                (
                    "state",
                    models.CharField(
                        choices=[("pending", "Re-sealing"), ("done", "Done")],
                        default="pending",
                        max_length=16,
                    ),
                ),
                ("grants_moved", models.JSONField(default=list)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("done_at", models.DateTimeField(blank=True, null=True)),
                (
                    "contribution",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="withdrawal",
                        to="custody.contribution",
                    ),
                ),
                (
                    "from_version",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="withdrawals",
                        to="custody.datasetversion",
                    ),
                ),
                (
                    "organisation",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="common.organisation",
                    ),
                ),
                (
                    "requested_by",
                    models.ForeignKey(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
                (
                    "to_version",
                    models.OneToOneField(
                        blank=True,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="withdrawn_from",
                        to="custody.datasetversion",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(fields=("from_version",), name="withdrawal_one_per_version"),
                    models.CheckConstraint(
                        condition=models.Q(
                            models.Q(("state", "done"), _negated=True),
                            models.Q(("done_at__isnull", False), ("to_version__isnull", False)),
                            _connector="OR",
                        ),
                        name="withdrawal_done_has_successor",
                    ),
                ],
            },
        ),
    ]
