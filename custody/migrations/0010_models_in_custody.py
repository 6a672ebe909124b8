import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    # Issue 16 (models in custody): the tokens_inferred usage kind and the CustodyModel facts.
    dependencies = [
        ("common", "0009_public_ids_more"),
        ("custody", "0009_value2_valuation_summary"),
    ]

    operations = [
        migrations.AlterField(
            model_name="usagerecord",
            name="kind",
            field=models.CharField(
                choices=[
                    ("job_started", "Job started"),
                    ("tokens_trained", "Platform tokens trained"),
                    ("tokens_inferred", "Platform tokens inferred"),
                ],
                max_length=32,
            ),
        ),
        migrations.CreateModel(
            name="CustodyModel",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("job_ref", models.CharField(max_length=64, unique=True)),
                ("artifact_name", models.CharField(max_length=120)),
                ("artifact_sha256", models.CharField(max_length=64)),
                ("receipt_sha256", models.CharField(max_length=64)),
                ("task", models.CharField(max_length=32)),
                ("template", models.CharField(max_length=32)),
                ("base_name", models.CharField(max_length=120)),
                ("metrics", models.JSONField(default=dict)),
                ("lineage", models.JSONField(default=list)),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "trainer",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="custody_models",
                        to="common.organisation",
                    ),
                ),
                (
                    "version",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="custody_models",
                        to="custody.datasetversion",
                    ),
                ),
            ],
        ),
    ]
