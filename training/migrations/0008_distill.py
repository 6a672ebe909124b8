from django.db import migrations, models


class Migration(migrations.Migration):
    # Distillation templates (issue 16 item 3): two new template choices; the teacher is recorded
    # in the job's request, spec and receipt (JSON), so no new column.
    dependencies = [
        ("training", "0007_generation"),
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
                    ("generate", "Synthetic corpus generation"),
                    ("distill_causal_lm", "Distillation into a causal language model"),
                    ("distill_classification", "Distillation into a sequence classifier"),
                ],
                max_length=32,
            ),
        ),
    ]
