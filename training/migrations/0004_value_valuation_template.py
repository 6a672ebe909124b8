"""The valuation job template (issue 15): a choice of TrainingJob.template."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0003_base_job_public_ids"),
    ]

    operations = [
        migrations.AlterField(
            model_name="trainingjob",
            name="template",
            field=models.CharField(
                choices=[
                    ("causal_lm", "Causal language model (full fine-tune)"),
                    ("causal_lm_lora", "Causal language model (LoRA adapters)"),
                    ("seq_classification", "Sequence classification"),
                    ("valuation", "Data valuation (KNN-Shapley)"),
                ],
                max_length=32,
            ),
        ),
    ]
