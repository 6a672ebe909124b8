from django.db import migrations, models


class Migration(migrations.Migration):
    # Model-generated versions (issue 17 items 1-2): their provenance and leakage screen.
    dependencies = [
        ("custody", "0010_models_in_custody"),
    ]

    operations = [
        migrations.AddField(
            model_name="datasetversion",
            name="provenance",
            field=models.JSONField(blank=True, default=dict),
        ),
    ]
