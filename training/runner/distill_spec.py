"""The distillation part of a training spec: the teacher and the loss's alpha and temperature.

Pure Python (no torch, no Django), like ``training.runner.spec``, which calls ``parse_distill``
for the two distillation templates. The student is the spec's ``base``; the teacher is named by
the top-level ``teacher`` block, a built-in base or a directory in the working directory (an
uploaded base, or a custody model decrypted there by the launcher):

    "teacher": {"kind": "builtin", "name": "gpt2-124m"} | {"kind": "uploaded", "path": "teacher"},
    "distill": {"alpha": 0.5, "temperature": 2.0}

Loss per predicted token (causal) or record (classification), training/runner/distill.py:
``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, label)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Each distillation template trains its student as this template does (data, model, DP).
DISTILL_TEMPLATES: dict[str, str] = {
    "distill_causal_lm": "causal_lm",
    "distill_classification": "seq_classification",
}
# Built-in teachers per template: the same vocabulary (causal) or encoder family (classification)
# as the built-in students.
TEACHER_BASES: dict[str, tuple[str, ...]] = {
    "distill_causal_lm": ("gpt2-tiny", "gpt2-124m"),
    "distill_classification": ("all-minilm-l6-v2",),
}
DEFAULT_ALPHA = 0.5
DEFAULT_TEMPERATURE = 2.0
MAX_TEMPERATURE = 20.0
_DISTILL_FIELDS = {"alpha", "temperature"}


@dataclass(frozen=True)
class DistillSettings:
    """The teacher (a built-in name or a working-directory path: exactly one is set) and the loss."""

    alpha: float
    temperature: float
    teacher_name: str | None = None
    teacher_path: str | None = None


def parse_distill(raw: dict[str, Any], template: str, base_path: str | None) -> DistillSettings | None:
    """The ``teacher`` and ``distill`` blocks of a decoded spec (None for other templates).

    :raises SpecError: naming the first offending field.
    """
    from training.runner.spec import SpecError, _float, _relative_path, _require

    teacher, distill = raw.get("teacher"), raw.get("distill")
    if template not in DISTILL_TEMPLATES:
        for name, value in (("teacher", teacher), ("distill", distill)):
            if value is not None:
                raise SpecError(name, f"only {' and '.join(DISTILL_TEMPLATES)} take it, not {template}")
        return None
    distill = {} if distill is None else distill
    if not isinstance(distill, dict):
        raise SpecError("distill", "must be an object with alpha and temperature")
    _require(distill, _DISTILL_FIELDS, "distill.")
    distill = {"alpha": DEFAULT_ALPHA, "temperature": DEFAULT_TEMPERATURE, **distill}
    alpha = _float(distill, "alpha", 0.0, 1.0, low_open=False, high_open=False, prefix="distill.")
    temperature = _float(
        distill, "temperature", 0.0, MAX_TEMPERATURE, low_open=True, high_open=False, prefix="distill."
    )
    if not isinstance(teacher, dict):
        raise SpecError("teacher", "must be an object with kind and name (builtin) or path (uploaded)")
    kind = teacher.get("kind")
    if kind == "builtin":
        _require(teacher, {"kind", "name"}, "teacher.")
        allowed = TEACHER_BASES[template]
        if teacher.get("name") not in allowed:
            raise SpecError("teacher.name", f"must be one of {', '.join(allowed)} for {template}")
        return DistillSettings(alpha=alpha, temperature=temperature, teacher_name=teacher["name"])
    if kind == "uploaded":
        _require(teacher, {"kind", "path"}, "teacher.")
        path = _relative_path(teacher.get("path"), "teacher.path")
        if base_path is not None and path.rstrip("/") == base_path.rstrip("/"):
            raise SpecError("teacher.path", "must be another directory than the student's base")
        return DistillSettings(alpha=alpha, temperature=temperature, teacher_path=path)
    raise SpecError("teacher.kind", "must be builtin or uploaded")
