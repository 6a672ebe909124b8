# The IdempotencyRecord model moved from marketplace to common (training jobs,
# tokens and webhooks use it too). Its table keeps its name: state only, no SQL.

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("common", "0004_auditevent_object_index"),
        ("marketplace", "0004_orders_licenses_settlements_payouts"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="IdempotencyRecord",
                    fields=[
                        (
                            "id",
                            models.BigAutoField(
                                auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                            ),
                        ),
                        ("endpoint", models.CharField(max_length=100)),
                        ("key", models.CharField(max_length=200)),
                        ("request_hash", models.CharField(max_length=64)),
                        (
                            "state",
                            models.CharField(
                                choices=[("in_progress", "In progress"), ("done", "Done")], max_length=16
                            ),
                        ),
                        ("locked_until", models.DateTimeField()),
                        ("response_status", models.PositiveSmallIntegerField(blank=True, null=True)),
                        ("response_body", models.JSONField(blank=True, null=True)),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                        (
                            "organisation",
                            models.ForeignKey(
                                on_delete=django.db.models.deletion.CASCADE,
                                related_name="+",
                                to="common.organisation",
                            ),
                        ),
                    ],
                    options={
                        "db_table": "marketplace_idempotencyrecord",
                        "indexes": [
                            models.Index(fields=["created_at"], name="marketplace_created_12982d_idx")
                        ],
                        "constraints": [
                            models.UniqueConstraint(
                                fields=("organisation", "endpoint", "key"),
                                name="idempotencyrecord_unique_key",
                            )
                        ],
                    },
                ),
            ],
            database_operations=[],
        ),
    ]
