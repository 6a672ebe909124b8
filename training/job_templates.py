"""The vetted job templates a trainer chooses from: what each trains, its knobs and their bounds.

No trainer code runs near the data: a job is one of these templates with
hyperparameters inside the bounds below (the runner's spec validation,
``training.runner.spec``, is the final word and runs at submit too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from training.models import TEMPLATE_TASK, BaseTask, JobTemplate
from training.runner.spec import DP_TEMPLATES

_COMMON: dict[str, dict[str, Any]] = {
    "learning_rate": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "default": 5e-4},
    "epochs": {"type": "integer", "minimum": 1, "maximum": 100, "default": 1},
    "batch_size": {"type": "integer", "minimum": 1, "maximum": 1024, "default": 8},
    "max_seq_len": {"type": "integer", "minimum": 8, "maximum": 1024, "default": 128},
    "seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1, "default": 0},
    "precision": {"type": "string", "enum": ["fp32", "bf16", "fp16"], "default": "fp32"},
    "validation_fraction": {"type": "number", "minimum": 0, "exclusiveMaximum": 0.5, "default": 0.1},
    "max_steps": {"type": ["integer", "null"], "minimum": 1, "default": None},
    "log_every": {"type": "integer", "minimum": 1, "default": 10},
}
_LORA: dict[str, dict[str, Any]] = {
    "lora_r": {"type": "integer", "minimum": 1, "maximum": 256, "default": 8},
    "lora_alpha": {"type": "number", "exclusiveMinimum": 0, "maximum": 1024, "default": 16},
    "lora_dropout": {"type": "number", "minimum": 0, "exclusiveMaximum": 0.5, "default": 0.0},
}

DP_SCHEMA: dict[str, Any] = {
    "enabled": {"type": "boolean", "default": False},
    "target_epsilon": {"type": "number", "exclusiveMinimum": 0, "maximum": 100},
    "delta": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.01, "default": 1e-5},
    "max_grad_norm": {"type": "number", "exclusiveMinimum": 0, "maximum": 100, "default": 1.0},
}


@dataclass(frozen=True)
class TemplateInfo:
    name: str
    label: str
    task: str
    supports_dp: bool
    hyperparameters: dict[str, dict[str, Any]]
    needs_label_field: bool

    def defaults(self) -> dict[str, Any]:
        return {k: v["default"] for k, v in self.hyperparameters.items() if v.get("default") is not None}

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "task": self.task,
            "supports_dp": self.supports_dp,
            "needs_label_field": self.needs_label_field,
            "hyperparameters": self.hyperparameters,
            "dp": DP_SCHEMA if self.supports_dp else None,
            **({"valuation": VALUATION_SCHEMA} if self.name == JobTemplate.VALUATION else {}),
        }


TEMPLATES: dict[str, TemplateInfo] = {
    t.value: TemplateInfo(
        name=t.value,
        label=str(t.label),
        task=str(TEMPLATE_TASK[t]),
        supports_dp=t.value in DP_TEMPLATES,
        hyperparameters={**_COMMON, **(_LORA if t == JobTemplate.CAUSAL_LM_LORA else {})},
        needs_label_field=TEMPLATE_TASK[t] == BaseTask.CLASSIFICATION,
    )
    for t in JobTemplate
}
# Valuation trains nothing: it embeds (batch_size, max_seq_len, seed) and values (its own block,
# VALUATION_SCHEMA; training/runner/valuation.py). No DP: only aggregates leave.
VALUATION_SCHEMA: dict[str, dict[str, Any]] = {
    "k": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 5},
    "holdout_fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 0.5, "default": 0.2},
    "min_group": {"type": "integer", "minimum": 5, "maximum": 1_000_000, "default": 20},
    "flag_margin": {"type": "number", "minimum": 0, "maximum": 2, "default": 0.06},
}
TEMPLATES[JobTemplate.VALUATION.value] = TemplateInfo(
    name=JobTemplate.VALUATION.value,
    label=str(JobTemplate.VALUATION.label),
    task=str(BaseTask.CLASSIFICATION),
    supports_dp=False,
    hyperparameters={
        "batch_size": {**_COMMON["batch_size"], "default": 64},
        "max_seq_len": _COMMON["max_seq_len"],
        "seed": _COMMON["seed"],
    },
    needs_label_field=True,
)

# Generation trains nothing: a model held in custody writes records (its own block, GENERATION_SCHEMA;
# training/runner/generate.py has the bounds, training/services/generation.py the job).
GENERATION_SCHEMA: dict[str, dict[str, Any]] = {
    "prompts": {
        "type": "array",
        "items": {"type": "string", "maxLength": 1000},
        "minItems": 1,
        "maxItems": 256,
    },
    "records": {"type": "integer", "minimum": 1, "maximum": 10_000},
    "max_new_tokens": {"type": "integer", "minimum": 1, "maximum": 256, "default": 48},
    "temperature": {"type": "number", "exclusiveMinimum": 0, "maximum": 5, "default": 1.0},
    "top_k": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 50},
    "seed": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1, "default": 0},
    "batch_size": {"type": "integer", "minimum": 1, "maximum": 256, "default": 32},
}
TEMPLATES[JobTemplate.GENERATE.value] = TemplateInfo(
    name=JobTemplate.GENERATE.value,
    label=str(JobTemplate.GENERATE.label),
    task=str(BaseTask.CAUSAL_LM),
    supports_dp=False,
    hyperparameters=GENERATION_SCHEMA,
    needs_label_field=False,
)

# What the portal's job form starts from, per template: settings that visibly learn on a small
# corpus on a CPU in about a minute (the demo's 240 tickets: gpt2-tiny's windowed loss falls
# from about 10 to under 6 in one epoch; docs/training.md "Starting settings"), where the
# schema defaults above are the API's, sized for a GPU. A random-init GPT-2 needs many small
# steps; 3e-3 learns faster but moves the rare tokens of a canary seen once far enough for the
# release gate to notice, so 1e-3. The pretrained encoder wants a low rate.
_SMALL_CAUSAL = {"epochs": 1, "learning_rate": 1e-3, "batch_size": 4, "max_seq_len": 64}
QUICK_START: dict[str, dict[str, Any]] = {
    JobTemplate.CAUSAL_LM.value: _SMALL_CAUSAL,
    JobTemplate.CAUSAL_LM_LORA.value: _SMALL_CAUSAL,
    JobTemplate.SEQ_CLASSIFICATION.value: {
        "epochs": 1,
        "learning_rate": 5e-5,
        "batch_size": 8,
        "max_seq_len": 128,
    },
    JobTemplate.VALUATION.value: {"batch_size": 64, "max_seq_len": 128},
}
# The built-in base each template starts from: the smallest that trains in minutes on a CPU.
DEFAULT_BASE: dict[str, str] = {
    JobTemplate.CAUSAL_LM.value: "gpt2-tiny",
    JobTemplate.CAUSAL_LM_LORA.value: "gpt2-tiny",
    JobTemplate.SEQ_CLASSIFICATION.value: "minilm-l6",
    JobTemplate.VALUATION.value: "minilm-l6",
    # Distillation: the student (the teacher is named in the request's distill block).
    JobTemplate.DISTILL_CAUSAL_LM.value: "gpt2-tiny",
    JobTemplate.DISTILL_CLASSIFICATION.value: "minilm-l6",
}


def quick_start(template: str) -> dict[str, Any]:
    """The form's starting hyperparameters for ``template`` (the causal LM's for an unknown one)."""
    return dict(QUICK_START.get(template, QUICK_START[JobTemplate.CAUSAL_LM.value]))


def template_list() -> list[TemplateInfo]:
    return list(TEMPLATES.values())
