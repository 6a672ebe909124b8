"""The generate template: a causal LM held in custody writes synthetic records inside the sandbox.

    python -m training.runner generate --spec SPEC.json

The model is the directory the spec's ``base.path`` names (the launcher decrypted the custody
model there). Each record is a prompt (or seed template) the trainer supplied, continued by the
model by sampling until the record separator or ``max_new_tokens``. Records leave the sandbox only
as ``{"event": "record", "text": ...}`` lines on stdout, read into the launcher's memory and handed
to custody's ingest (custody/services/synthetic.py): never a file, never the trainer.

This module is the spec check (``parse_generation``), pure Python: the web side validates a job
with it at submit. The sampling loop, which loads torch, is ``generate_model.generate``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from training.runner.spec import SpecError

# Bounds on what a trainer may ask (issue 17: "bounded count and length").
MAX_PROMPTS = 256
MAX_PROMPT_CHARS = 1000
MAX_RECORDS = 10_000
MAX_NEW_TOKENS = 256
MAX_TOP_K = 1000
_FIELDS = {"prompts", "records", "max_new_tokens", "temperature", "top_k", "seed", "batch_size"}
_TOP_LEVEL = {"template", "base", "generation", "telemetry", "gate"}
DEFAULTS: dict[str, Any] = {
    "max_new_tokens": 48,
    "temperature": 1.0,
    "top_k": 50,
    "seed": 0,
    "batch_size": 32,
}


@dataclass(frozen=True)
class Generation:
    prompts: tuple[str, ...]
    records: int
    max_new_tokens: int
    temperature: float
    top_k: int
    seed: int
    batch_size: int
    base_path: str


def _int(block: dict[str, Any], name: str, low: int, high: int) -> int:
    value = block.get(name, DEFAULTS.get(name))
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise SpecError(f"generation.{name}", f"must be an integer from {low} to {high}")
    return value


def parse_generation(raw: Any) -> Generation:
    """Validate a generate spec. :raises SpecError: with the dotted path of the bad field."""
    if not isinstance(raw, dict):
        raise SpecError("spec", "must be an object")
    unknown = sorted(set(raw) - _TOP_LEVEL)
    if unknown:
        raise SpecError(unknown[0], "is not a field of a generate spec")
    if raw.get("template") != "generate":
        raise SpecError("template", "must be 'generate'")
    base = raw.get("base")
    if not isinstance(base, dict) or base.get("kind") != "uploaded" or not isinstance(base.get("path"), str):
        raise SpecError("base", "a generate job starts from a model held in custody (an uploaded-kind path)")
    block = raw.get("generation")
    if not isinstance(block, dict):
        raise SpecError("generation", "is required: prompts and records")
    unknown = sorted(set(block) - _FIELDS)
    if unknown:
        raise SpecError(f"generation.{unknown[0]}", "is not a generation setting")
    prompts = block.get("prompts")
    if not isinstance(prompts, list) or not 1 <= len(prompts) <= MAX_PROMPTS:
        raise SpecError("generation.prompts", f"must be a list of 1 to {MAX_PROMPTS} prompts")
    for index, prompt in enumerate(prompts):
        if not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS or "\x00" in prompt:
            raise SpecError(
                f"generation.prompts.{index}", f"must be a string of at most {MAX_PROMPT_CHARS} characters"
            )
    temperature = block.get("temperature", DEFAULTS["temperature"])
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 < temperature <= 5:
        raise SpecError("generation.temperature", "must be a number above 0 and at most 5")
    return Generation(
        prompts=tuple(prompts),
        records=_int(block, "records", 1, MAX_RECORDS),
        max_new_tokens=_int(block, "max_new_tokens", 1, MAX_NEW_TOKENS),
        temperature=float(temperature),
        top_k=_int(block, "top_k", 0, MAX_TOP_K),
        seed=_int(block, "seed", 0, 2**32 - 1),
        batch_size=_int(block, "batch_size", 1, 256),
        base_path=base["path"],
    )
