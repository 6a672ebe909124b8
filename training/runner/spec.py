"""The training spec: parsed and validated before any record is read."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

TEMPLATES = ("causal_lm",)
BUILTIN_BASES = ("gpt2-tiny", "gpt2-124m")
PRECISIONS = ("fp32", "bf16", "fp16")
_TOP_LEVEL = {"template", "base", "hyperparameters", "tokenizer_path"}
_HYPERPARAMETERS = {
    "learning_rate",
    "epochs",
    "batch_size",
    "max_seq_len",
    "seed",
    "precision",
    "validation_fraction",
    "log_every",
    "max_steps",
    "compile",
}
MAX_SEQ_LEN = 1024


class SpecError(ValueError):
    """A spec field is missing or out of bounds; `field` is its dotted path."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


@dataclass(frozen=True)
class Hyperparameters:
    learning_rate: float
    epochs: int
    batch_size: int
    max_seq_len: int
    seed: int
    precision: str
    validation_fraction: float
    log_every: int = 10
    max_steps: int | None = None
    compile: bool = False


@dataclass(frozen=True)
class Spec:
    template: str
    base_name: str
    hyperparameters: Hyperparameters
    tokenizer_path: str | None = None


def _int(hp: dict[str, Any], name: str, low: int, high: int) -> int:
    value = hp[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"hyperparameters.{name}", "must be an integer")
    if not low <= value <= high:
        raise SpecError(f"hyperparameters.{name}", f"must be between {low} and {high}")
    return value


def _float(hp: dict[str, Any], name: str, low: float, high: float, *, low_open: bool) -> float:
    value = hp[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpecError(f"hyperparameters.{name}", "must be a finite number")
    too_low = value <= low if low_open else value < low
    if too_low or value >= high:
        bracket = "(" if low_open else "["
        raise SpecError(f"hyperparameters.{name}", f"must be in {bracket}{low}, {high})")
    return float(value)


def _require(mapping: dict[str, Any], names: set[str], prefix: str) -> None:
    for name in sorted(set(mapping) - names):
        raise SpecError(f"{prefix}{name}", "is not a known field")


def _hyperparameters(hp: Any) -> Hyperparameters:
    if not isinstance(hp, dict):
        raise SpecError("hyperparameters", "must be an object")
    _require(hp, _HYPERPARAMETERS, "hyperparameters.")
    for name in ("learning_rate", "epochs", "batch_size", "max_seq_len", "seed", "precision"):
        if name not in hp:
            raise SpecError(f"hyperparameters.{name}", "is required")
    if hp["precision"] not in PRECISIONS:
        raise SpecError("hyperparameters.precision", f"must be one of {', '.join(PRECISIONS)}")
    compile_ = hp.get("compile", False)
    if not isinstance(compile_, bool):
        raise SpecError("hyperparameters.compile", "must be true or false")
    hp = {"validation_fraction": 0.1, "log_every": 10, **hp}
    return Hyperparameters(
        learning_rate=_float(hp, "learning_rate", 0.0, 1.0, low_open=True),
        epochs=_int(hp, "epochs", 1, 100),
        batch_size=_int(hp, "batch_size", 1, 1024),
        max_seq_len=_int(hp, "max_seq_len", 8, MAX_SEQ_LEN),
        seed=_int(hp, "seed", 0, 2**32 - 1),
        precision=hp["precision"],
        validation_fraction=_float(hp, "validation_fraction", 0.0, 0.5, low_open=False),
        log_every=_int(hp, "log_every", 1, 1_000_000),
        max_steps=_int(hp, "max_steps", 1, 10_000_000) if hp.get("max_steps") is not None else None,
        compile=compile_,
    )


def parse_spec(raw: Any) -> Spec:
    """Validate a decoded spec document.

    :raises SpecError: naming the first offending field.
    """
    if not isinstance(raw, dict):
        raise SpecError("spec", "must be a JSON object")
    _require(raw, _TOP_LEVEL, "")
    if raw.get("template") not in TEMPLATES:
        raise SpecError("template", f"must be one of {', '.join(TEMPLATES)}")
    base = raw.get("base")
    if not isinstance(base, dict):
        raise SpecError("base", "must be an object with kind and name")
    _require(base, {"kind", "name"}, "base.")
    if base.get("kind") != "builtin":
        raise SpecError("base.kind", "must be builtin")
    if base.get("name") not in BUILTIN_BASES:
        raise SpecError("base.name", f"must be one of {', '.join(BUILTIN_BASES)}")
    tokenizer_path = raw.get("tokenizer_path")
    if tokenizer_path is not None and (not isinstance(tokenizer_path, str) or not tokenizer_path):
        raise SpecError("tokenizer_path", "must be a path to a tokenizer.json file")
    return Spec(
        template=raw["template"],
        base_name=base["name"],
        hyperparameters=_hyperparameters(raw.get("hyperparameters")),
        tokenizer_path=tokenizer_path,
    )
