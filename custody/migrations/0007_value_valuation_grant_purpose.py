"""The owner's valuation grant (issue 15): a choice of Grant.purpose."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("custody", "0006_mixed_grant_public_ids"),
    ]

    operations = [
        migrations.AlterField(
            model_name="grant",
            name="purpose",
            field=models.CharField(
                choices=[
                    ("license", "Licensed training"),
                    ("ingest", "Ingest"),
                    ("review", "Review"),
                    ("preview", "Preview"),
                    ("rekey", "Re-key"),
                    ("gate", "Release gate"),
                    ("valuation", "Owner's valuation"),
                ],
                max_length=16,
            ),
        ),
    ]
