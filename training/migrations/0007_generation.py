import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    # Custody models as a job's starting point and generation jobs (issue 16 item 4, issue 17 items 1-2).
    dependencies = [
        ("training", "0006_models_in_custody"),
    ]

    operations = [
        migrations.AddField(
            model_name="trainingjob",
            name="custody_model",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="derived_jobs",
                to="training.trainingjob",
            ),
        ),
        migrations.AlterField(
            model_name="trainingjob",
            name="template",
            field=models.CharField(
                choices=[
                    ("causal_lm", "Causal language model (full fine-tune)"),
                    ("causal_lm_lora", "Causal language model (LoRA adapters)"),
                    ("seq_classification", "Sequence classification"),
                    ("valuation", "Data valuation (KNN-Shapley)"),
                    ("generate", "Synthetic corpus generation"),
                ],
                max_length=32,
            ),
        ),
    ]
