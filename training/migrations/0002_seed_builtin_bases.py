"""Seed the built-in base models (fixed platform tokenizers, never fitted on custody data)."""

import hashlib
import json

from django.db import migrations

BUILTINS = [
    {
        "name": "gpt2-tiny",
        "task": "causal_lm",
        "architecture": "GPT2LMHeadModel",
        "parameters": 2_100_000,
        "description": "A 2-layer GPT-2 (random init): small enough to fine-tune on a CPU in minutes.",
    },
    {
        "name": "gpt2-124m",
        "task": "causal_lm",
        "architecture": "GPT2LMHeadModel",
        "parameters": 109_000_000,
        "description": "GPT-2 small sizes (12 layers, 768 wide), random init, platform tokenizer.",
    },
    {
        "name": "minilm-l6",
        "task": "classification",
        "architecture": "BertForSequenceClassification",
        "parameters": 22_700_000,
        "description": "all-MiniLM-L6-v2 (pretrained, bundled) with a classification head.",
    },
]


def definition_hash(base: dict) -> str:
    canonical = json.dumps(
        {k: base[k] for k in ("name", "task", "architecture", "parameters")}, sort_keys=True
    )
    return hashlib.sha256(f"sealroom/builtin-base/v1|{canonical}".encode()).hexdigest()


def seed(apps, schema_editor):
    BaseModel = apps.get_model("training", "BaseModel")
    for base in BUILTINS:
        BaseModel.objects.update_or_create(
            name=base["name"],
            owner=None,
            defaults={
                "kind": "builtin",
                "task": base["task"],
                "architecture": base["architecture"],
                "parameters": base["parameters"],
                "description": base["description"],
                "file_hash": definition_hash(base),
                "state": "validated",
            },
        )


def unseed(apps, schema_editor):
    BaseModel = apps.get_model("training", "BaseModel")
    BaseModel.objects.filter(owner=None, name__in=[b["name"] for b in BUILTINS], jobs__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("training", "0001_base_models_and_jobs")]

    operations = [migrations.RunPython(seed, unseed)]
