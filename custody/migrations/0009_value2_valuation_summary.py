import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("custody", "0008_withdraw_contribution_withdrawal"),
    ]

    operations = [
        migrations.CreateModel(
            name="ValuationSummary",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("job_ref", models.CharField(max_length=64, unique=True)),
                ("groups", models.JSONField(default=dict)),
                ("summary", models.JSONField(default=dict)),
                ("min_group", models.PositiveIntegerField()),
                ("tokens", models.PositiveBigIntegerField()),
                ("valued_at", models.DateTimeField(default=django.utils.timezone.now)),
                (
                    "version",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="valuation_summaries",
                        to="custody.datasetversion",
                    ),
                ),
            ],
        ),
    ]
