from django.db import migrations, models


class Migration(migrations.Migration):
    # Issue 16: a listing's kind ("dataset" or "model") and the custody model it sells.
    dependencies = [
        ("marketplace", "0009_value2_allocation_basis"),
    ]

    operations = [
        migrations.AddField(
            model_name="listing",
            name="kind",
            field=models.CharField(default="dataset", max_length=16),
        ),
        migrations.AddField(
            model_name="listing",
            name="model_ref",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
    ]
