"""Distillation in the runner: the loss against a hand computation, the spec, and tiny runs (CPU)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.training.runner.conftest import jsonl, notes, run_cli
from training.runner.data import InputError, Record
from training.runner.spec import SpecError, parse_spec

HP: dict[str, Any] = {
    "learning_rate": 0.003,
    "epochs": 1,
    "batch_size": 4,
    "max_seq_len": 16,
    "seed": 7,
    "precision": "fp32",
    "validation_fraction": 0.25,
    "log_every": 1,
}
TELEMETRY = {"window_records": 1, "window_tokens": 0}
DISTILL: dict[str, Any] = {
    "template": "distill_causal_lm",
    "base": {"kind": "builtin", "name": "gpt2-tiny"},
    "teacher": {"kind": "builtin", "name": "gpt2-tiny"},
    "distill": {"alpha": 0.5, "temperature": 2.0},
    "hyperparameters": HP,
    "telemetry": TELEMETRY,
}
CLASSIFY: dict[str, Any] = {
    "template": "distill_classification",
    "base": {"kind": "builtin", "name": "all-minilm-l6-v2"},
    "teacher": {"kind": "builtin", "name": "all-minilm-l6-v2"},
    "distill": {"alpha": 0.7, "temperature": 3.0},
    "hyperparameters": {**HP, "max_steps": 2, "learning_rate": 5e-5},
    "labels": ["neg", "pos"],
    "telemetry": TELEMETRY,
}


def records(count: int) -> list[Record]:
    return [Record(r["text"], r["label"], False, i + 1) for i, r in enumerate(notes(count))]


def softmax(values: list[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    return [e / sum(exps) for e in exps]


def hand_loss(student: list[float], teacher: list[float], label: int, alpha: float, t: float) -> float:
    """One position's loss written out: alpha T^2 sum_v p_t log(p_t / p_s) + (1 - alpha)(-log q_label)."""
    p_t = softmax([v / t for v in teacher])
    p_s = softmax([v / t for v in student])
    kl = sum(a * math.log(a / b) for a, b in zip(p_t, p_s, strict=True))
    ce = -math.log(softmax(student)[label])
    return alpha * t * t * kl + (1 - alpha) * ce


class TestDistillLoss:
    # Asymmetric enough that KL(t||s) and KL(s||t) differ, T = 2 so that T^2 = 4 is visible.
    STUDENT = [[2.0, -1.0, 0.5], [0.1, 0.3, -2.0]]
    TEACHER = [[-0.5, 1.5, 3.0], [1.0, 1.0, 0.2]]
    LABELS = [2, 0]

    def test_classification_matches_the_hand_computation(self) -> None:
        from training.runner.distill import distill_loss

        got = distill_loss(
            torch.tensor(self.STUDENT),
            torch.tensor(self.TEACHER),
            torch.tensor(self.LABELS),
            alpha=0.6,
            temperature=2.0,
        )
        positions = zip(self.STUDENT, self.TEACHER, self.LABELS, strict=True)
        expected = sum(hand_loss(s, t, y, 0.6, 2.0) for s, t, y in positions) / 2
        assert float(got) == pytest.approx(expected, rel=1e-5)
        # The same numbers with KL reversed, or without T^2, are far off: the test tells them apart.
        reversed_kl = sum(hand_loss(t, s, y, 0.6, 2.0) for s, t, y in positions) / 2
        assert abs(float(got) - reversed_kl) > 0.05
        no_t_squared = (
            sum(
                0.6 * (hand_loss(s, t, y, 1.0, 2.0) / 4) + 0.4 * hand_loss(s, t, y, 0.0, 2.0)
                for s, t, y in zip(self.STUDENT, self.TEACHER, self.LABELS, strict=True)
            )
            / 2
        )
        assert abs(float(got) - no_t_squared) > 0.05

    def test_causal_shifts_labels_and_skips_ignored_positions(self) -> None:
        from training.runner.distill import distill_loss

        # One sequence of 4 positions over 3 tokens: logits at i predict label i + 1; the last
        # label is padding (-100), so positions 0 and 1 count and 2 (predicting padding) does not.
        student = torch.tensor([[[2.0, -1.0, 0.5], [0.1, 0.3, -2.0], [5.0, 5.0, -5.0], [9.0, 0.0, 0.0]]])
        teacher = torch.tensor([[[-0.5, 1.5, 3.0], [1.0, 1.0, 0.2], [-9.0, 9.0, 0.0], [0.0, 0.0, 9.0]]])
        labels = torch.tensor([[1, 2, 0, -100]])
        got = distill_loss(student, teacher, labels, alpha=0.3, temperature=1.5)
        expected = (
            hand_loss([2.0, -1.0, 0.5], [-0.5, 1.5, 3.0], 2, 0.3, 1.5)
            + hand_loss([0.1, 0.3, -2.0], [1.0, 1.0, 0.2], 0, 0.3, 1.5)
        ) / 2
        assert float(got) == pytest.approx(expected, rel=1e-5)
        per_record = distill_loss(student, teacher, labels, alpha=0.3, temperature=1.5, per_record=True)
        assert per_record.shape == (1,)
        assert float(per_record[0]) == pytest.approx(expected, rel=1e-5)

    def test_alpha_zero_is_the_models_own_hard_label_loss(self) -> None:
        from training.runner.data import load_tokenizer
        from training.runner.distill import distill_loss
        from training.runner.models import build_model

        tokenizer = load_tokenizer(None)
        model = build_model("gpt2-tiny", tokenizer, 3)
        ids = torch.tensor([tokenizer.encode("the patient walked home before lunch").ids])
        labels = ids.clone()
        labels[0, -2:] = -100
        with torch.no_grad():
            output = model(input_ids=ids, labels=labels)
        got = distill_loss(output.logits, torch.randn_like(output.logits), labels, alpha=0.0, temperature=4.0)
        assert float(got) == pytest.approx(float(output.loss), rel=1e-5)

    def test_a_student_equal_to_its_teacher_pays_only_the_hard_term(self) -> None:
        from training.runner.distill import distill_loss

        logits = torch.tensor(self.STUDENT)
        labels = torch.tensor(self.LABELS)
        both = distill_loss(logits, logits, labels, alpha=0.5, temperature=2.0)
        hard = distill_loss(logits, logits, labels, alpha=0.0, temperature=2.0)
        assert float(both) == pytest.approx(0.5 * float(hard), rel=1e-5)


class TestDistillSpec:
    @pytest.mark.parametrize(
        ("spec", "field"),
        [
            ({k: v for k, v in DISTILL.items() if k != "teacher"}, "teacher"),
            ({**DISTILL, "teacher": {"kind": "builtin", "name": "all-minilm-l6-v2"}}, "teacher.name"),
            ({**DISTILL, "teacher": {"kind": "hub", "name": "gpt2"}}, "teacher.kind"),
            ({**DISTILL, "teacher": {"kind": "uploaded", "path": "../t"}}, "teacher.path"),
            (
                {
                    **DISTILL,
                    "base": {"kind": "uploaded", "path": "base"},
                    "teacher": {"kind": "uploaded", "path": "base"},
                },
                "teacher.path",
            ),
            ({**DISTILL, "distill": {"alpha": 1.5}}, "distill.alpha"),
            ({**DISTILL, "distill": {"alpha": -0.1}}, "distill.alpha"),
            ({**DISTILL, "distill": {"temperature": 0}}, "distill.temperature"),
            ({**DISTILL, "distill": {"temperature": 50}}, "distill.temperature"),
            ({**DISTILL, "distill": {"beta": 1}}, "distill.beta"),
            ({**DISTILL, "template": "causal_lm"}, "teacher"),
            ({**DISTILL, "dp": {"enabled": True, "target_epsilon": 4.0, "delta": 1e-5}}, "dp.enabled"),
            ({k: v for k, v in CLASSIFY.items() if k != "labels"}, "labels"),
        ],
    )
    def test_names_the_offending_field(self, spec: dict[str, Any], field: str) -> None:
        with pytest.raises(SpecError) as caught:
            parse_spec(spec)
        assert caught.value.field == field

    def test_defaults_and_dp_for_classification(self) -> None:
        spec = parse_spec({**CLASSIFY, "distill": {}, "dp": {"target_epsilon": 4.0, "delta": 1e-5}})
        assert spec.distill is not None
        assert (spec.distill.alpha, spec.distill.temperature) == (0.5, 2.0)
        assert spec.distill.teacher_name == "all-minilm-l6-v2"
        assert spec.dp is not None
        assert parse_spec(DISTILL).causal


def train_in_process(spec: dict[str, Any], out: Path, count: int = 24) -> tuple[dict[str, Any], list[Any]]:
    from training.runner.train import train

    events: list[dict[str, Any]] = []
    done = train(parse_spec(spec), records(count), out, events.append)
    return done, events


class TestDistillRuns:
    def test_causal_student_learns_from_a_builtin_teacher_and_no_logits_leave(self, tmp_path: Path) -> None:
        done, events = train_in_process(DISTILL, tmp_path / "out")
        assert done["template"] == "distill_causal_lm"
        assert done["steps"] >= 1 and done["tokens_trained"] > 0
        assert "model.safetensors" in done["files"]
        assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(done["files"])
        text = json.dumps(events) + json.dumps(done)
        assert "logit" not in text
        # Every event is one of the runner's kinds with its usual scalar fields: nothing tensor-sized.
        assert {e["event"] for e in events} <= {"progress", "metrics"}
        assert all(len(json.dumps(e)) < 400 for e in events)
        assert done["metrics"]["validation_loss"] > 0

    def test_an_uploaded_teacher_trained_before_is_used_and_its_pull_changes_the_student(
        self, tmp_path: Path
    ) -> None:
        teacher_spec = {
            "template": "causal_lm",
            "base": {"kind": "builtin", "name": "gpt2-tiny"},
            "hyperparameters": {**HP, "epochs": 3},
            "telemetry": TELEMETRY,
        }
        train_in_process(teacher_spec, tmp_path / "teacher")
        uploaded = {**DISTILL, "teacher": {"kind": "uploaded", "path": str(tmp_path / "teacher")}}
        # Paths are relative to the working directory in the sandbox; here the test's cwd stands in.
        uploaded["teacher"]["path"] = "teacher"
        import os

        cwd = os.getcwd()
        os.chdir(tmp_path)
        try:
            soft, _ = train_in_process(
                {**uploaded, "distill": {"alpha": 1.0, "temperature": 2.0}}, tmp_path / "a"
            )
            hard, _ = train_in_process(
                {**uploaded, "distill": {"alpha": 0.0, "temperature": 2.0}}, tmp_path / "b"
            )
        finally:
            os.chdir(cwd)
        plain, _ = train_in_process({**teacher_spec, "hyperparameters": HP}, tmp_path / "c")
        # alpha 0 is exactly hard-label training (same init, same batches, same dropout draws) ...
        assert hard["metrics"]["validation_loss"] == pytest.approx(
            plain["metrics"]["validation_loss"], rel=1e-6
        )
        # ... and alpha 1 trains on the teacher alone: another student.
        assert soft["metrics"]["validation_loss"] != pytest.approx(
            plain["metrics"]["validation_loss"], rel=1e-3
        )

    def test_a_teacher_with_another_vocabulary_is_refused(self, tmp_path: Path, tiny_tokenizer: Path) -> None:
        other = {
            "template": "causal_lm",
            "base": {"kind": "builtin", "name": "gpt2-tiny"},
            "hyperparameters": HP,
            "tokenizer_path": str(tiny_tokenizer),
            "telemetry": TELEMETRY,
        }
        train_in_process(other, tmp_path / "teacher")
        import os

        cwd = os.getcwd()
        os.chdir(tmp_path)
        try:
            with pytest.raises(InputError) as caught:
                train_in_process(
                    {**DISTILL, "teacher": {"kind": "uploaded", "path": "teacher"}}, tmp_path / "s"
                )
        finally:
            os.chdir(cwd)
        assert caught.value.field == "teacher"
        assert "vocabulary" in caught.value.detail

    def test_classification_distills_under_dp(self, tmp_path: Path) -> None:
        spec = {**CLASSIFY, "dp": {"enabled": True, "target_epsilon": 8.0, "delta": 1e-3}}
        done, events = train_in_process(spec, tmp_path / "out", count=32)
        assert done["template"] == "distill_classification"
        assert done["epsilon_spent"] is not None and 0 < done["epsilon_spent"] <= 8.0 + 1e-6
        assert any(e["event"] == "privacy" for e in events)
        assert "logit" not in json.dumps(events)

    def test_cli_refuses_a_bad_distill_block_with_exit_2(self, tmp_path: Path) -> None:
        (tmp_path / "spec.json").write_text(json.dumps({**DISTILL, "distill": {"alpha": 2}}))
        code, events = run_cli(
            ["train", "--spec", "spec.json", "--out", "out"], cwd=tmp_path, stdin=jsonl(notes(8))
        )
        assert code == 2
        assert events[-1] == {"event": "error", "field": "distill.alpha", "detail": "must be in [0.0, 1.0]"}
