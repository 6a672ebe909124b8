from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("marketplace", "0008_public_ids_more"),
    ]

    operations = [
        migrations.AddField(
            model_name="rightsallocation",
            name="basis",
            field=models.CharField(blank=True, default="", max_length=80),
        ),
    ]
