import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

import common.public_ids


class Migration(migrations.Migration):
    # Issue 16: plug-in inference calls on custody models.
    dependencies = [
        ("common", "0009_public_ids_more"),
        ("custody", "0010_models_in_custody"),
        ("training", "0005_mixed_job_grants"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="InferenceCall",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("public_id", common.public_ids.PublicIdField(prefix="inf")),
                ("model_ref", models.CharField(max_length=64)),
                ("task", models.CharField(max_length=16)),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("queued", "Queued"),
                            ("running", "Running"),
                            ("succeeded", "Succeeded"),
                            ("failed", "Failed"),
                        ],
                        default="queued",
                        max_length=16,
                    ),
                ),
                ("prompts", models.JSONField(default=list)),
                ("max_new_tokens", models.PositiveIntegerField(default=0)),
                ("prompt_tokens", models.PositiveIntegerField(default=0)),
                ("output_tokens", models.PositiveIntegerField(default=0)),
                ("outputs", models.JSONField(default=list)),
                ("withheld", models.PositiveIntegerField(default=0)),
                ("idempotency_key", models.CharField(blank=True, default="", max_length=240)),
                ("error_code", models.CharField(blank=True, max_length=64)),
                ("error_detail", models.CharField(blank=True, max_length=500)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("finished_at", models.DateTimeField(blank=True, null=True)),
                (
                    "grant",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="inference_calls",
                        to="custody.grant",
                    ),
                ),
                (
                    "organisation",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="inference_calls",
                        to="common.organisation",
                    ),
                ),
                (
                    "requested_by",
                    models.ForeignKey(
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            options={
                "indexes": [
                    models.Index(fields=["model_ref", "state"], name="training_in_model_r_f68929_idx")
                ],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("idempotency_key", ""), _negated=True),
                        fields=("organisation", "idempotency_key"),
                        name="inference_unique_idempotency_key",
                    )
                ],
            },
        ),
    ]
