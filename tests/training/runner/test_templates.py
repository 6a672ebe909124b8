"""The LoRA and classification templates, DP, and the spec fields they add (CPU, tiny sizes)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.training.runner.conftest import jsonl, notes, run_cli
from training.runner.data import Record
from training.runner.spec import DP_TEMPLATES, SpecError, parse_spec

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
LORA: dict[str, Any] = {
    "template": "causal_lm_lora",
    "base": {"kind": "builtin", "name": "gpt2-tiny"},
    "hyperparameters": {**HP, "lora_r": 4, "lora_alpha": 8},
}
CLASSIFY: dict[str, Any] = {
    "template": "seq_classification",
    "base": {"kind": "builtin", "name": "all-minilm-l6-v2"},
    "hyperparameters": {**HP, "max_steps": 3},
    "labels": ["neg", "pos"],
}
DP = {"enabled": True, "target_epsilon": 4.0, "delta": 1e-5, "max_grad_norm": 1.0}
# Step-by-step losses for the loop's tests (the launcher enforces the platform's windows).
for _spec in (LORA, CLASSIFY):
    _spec["telemetry"] = {"window_records": 1, "window_tokens": 0}


def records(count: int, offset: int = 0) -> list[Record]:
    return [Record(r["text"], r["label"], False, i + 1) for i, r in enumerate(notes(count, offset))]


def train_in_process(
    spec: dict[str, Any], out: Path, count: int = 24
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from training.runner.train import train

    events: list[dict[str, Any]] = []
    done = train(parse_spec(spec), records(count), out, events.append)
    return done, events


class TestSpecFields:
    @pytest.mark.parametrize(
        ("spec", "field"),
        [
            ({**LORA, "hyperparameters": {**HP, "lora_r": 0}}, "hyperparameters.lora_r"),
            ({**LORA, "hyperparameters": {**HP, "lora_dropout": 0.7}}, "hyperparameters.lora_dropout"),
            ({**CLASSIFY, "hyperparameters": {**HP, "lora_r": 4}}, "hyperparameters.lora_r"),
            ({**CLASSIFY, "base": {"kind": "builtin", "name": "gpt2-tiny"}}, "base.name"),
            ({k: v for k, v in CLASSIFY.items() if k != "labels"}, "labels"),
            ({**CLASSIFY, "labels": ["a"]}, "labels"),
            ({**CLASSIFY, "labels": ["a", "a"]}, "labels"),
            ({**CLASSIFY, "labels": ["a", 3]}, "labels.1"),
            ({**LORA, "labels": ["a", "b"]}, "labels"),
            ({**LORA, "base": {"kind": "uploaded", "path": "../base"}}, "base.path"),
            ({**LORA, "base": {"kind": "uploaded", "path": "/etc"}}, "base.path"),
            ({**LORA, "base": {"kind": "uploaded", "name": "x"}}, "base.name"),
            (
                {**LORA, "base": {"kind": "uploaded", "path": "b"}, "tokenizer_path": "t.json"},
                "tokenizer_path",
            ),
            ({**LORA, "dp": {**DP, "target_epsilon": 0}}, "dp.target_epsilon"),
            ({**LORA, "dp": {**DP, "delta": 0.5}}, "dp.delta"),
            ({**LORA, "dp": {"enabled": True, "delta": 1e-5}}, "dp.target_epsilon"),
            ({**LORA, "dp": {**DP, "noise": 1}}, "dp.noise"),
            ({**LORA, "dp": DP, "hyperparameters": {**HP, "compile": True}}, "hyperparameters.compile"),
            ({**LORA, "dp": DP, "hyperparameters": {**HP, "precision": "fp16"}}, "hyperparameters.precision"),
            ({**LORA, "template": "causal_lm", "hyperparameters": HP, "dp": DP}, "dp.enabled"),
            ({**LORA, "gate": {"max_verbatim": 0}}, "gate.max_exposure"),
            ({**LORA, "gate": {"max_exposure": -1}}, "gate.max_exposure"),
            ({**LORA, "gate": {"max_exposure": 5, "verbatim_tokens": 1}}, "gate.verbatim_tokens"),
        ],
    )
    def test_names_the_offending_field(self, spec: dict[str, Any], field: str) -> None:
        with pytest.raises(SpecError) as caught:
            parse_spec(spec)
        assert caught.value.field == field

    def test_defaults_and_a_disabled_dp_block(self) -> None:
        spec = parse_spec({**CLASSIFY, "dp": {"enabled": False}, "gate": {"max_exposure": 8}})
        assert spec.dp is None and spec.labels == ("neg", "pos") and not spec.causal
        assert spec.gate is not None and spec.gate.max_verbatim == 0 and spec.gate.verbatim_tokens == 32
        lora = parse_spec({**LORA, "dp": DP}).hyperparameters
        assert (lora.lora_r, lora.lora_alpha, lora.lora_dropout) == (4, 8, 0.0)
        assert DP_TEMPLATES == ("causal_lm_lora", "seq_classification", "distill_classification")

    def test_spec_module_loads_no_torch(self) -> None:
        import subprocess
        import sys

        code = (
            "import sys, training.runner.spec, training.runner.bases, training.runner.canaries;"
            " print(any(m in sys.modules for m in ('torch', 'transformers', 'django')))"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=True, timeout=60)
        assert result.stdout.strip() == b"False"


class TestLora:
    def test_trains_adapters_and_writes_the_merged_model(self, tmp_path: Path, tiny_tokenizer: Path) -> None:
        from safetensors import safe_open
        from transformers import GPT2LMHeadModel

        spec = {**LORA, "tokenizer_path": str(tiny_tokenizer)}
        done, events = train_in_process(spec, tmp_path / "out")

        assert done["template"] == "causal_lm_lora" and done["epsilon_spent"] is None
        assert [e["split"] for e in events if e["event"] == "metrics"] == ["validation"]
        assert done["metrics"]["validation_perplexity"] > 1
        with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as weights:
            names = list(weights.keys())
        assert not [n for n in names if "lora" in n or "base_model" in n]  # merged: plain GPT-2 names
        model = GPT2LMHeadModel.from_pretrained(tmp_path / "out", use_safetensors=True)
        from tokenizers import Tokenizer

        assert model.config.vocab_size == Tokenizer.from_file(str(tiny_tokenizer)).get_vocab_size()

    def test_same_seed_same_adapters(self, tmp_path: Path, tiny_tokenizer: Path) -> None:
        spec = {**LORA, "tokenizer_path": str(tiny_tokenizer), "hyperparameters": {**LORA["hyperparameters"]}}
        spec["hyperparameters"]["lora_dropout"] = 0.1  # seeded too
        runs = [train_in_process(spec, tmp_path / name) for name in ("a", "b")]
        losses = [[e["loss"] for e in events if e["event"] == "progress"] for _, events in runs]
        assert len(losses[0]) >= 2 and losses[0] == losses[1]
        weights = [(tmp_path / name / "model.safetensors").read_bytes() for name in ("a", "b")]
        assert weights[0] == weights[1]

    def test_only_the_adapters_change_before_merging(self, tiny_tokenizer: Path) -> None:
        import torch

        from training.runner.models import apply_lora, load_causal

        spec = parse_spec({**LORA, "tokenizer_path": str(tiny_tokenizer)})
        model = apply_lora(load_causal(spec).model, spec)
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        assert trainable and all("lora_" in n for n in trainable)
        # c_attn, attn.c_proj, c_fc, mlp.c_proj in each of 2 layers: GPT-2's Conv1D layers are
        # wrapped with fan_in_fan_out, so the adapters are nn.Linear.
        adapters = [m for n, m in model.named_modules() if n.endswith("lora_A.default")]
        assert len(adapters) == 2 * 4 and all(isinstance(m, torch.nn.Linear) for m in adapters)

    def test_dp_lora_spends_at_most_the_target_epsilon(self, tmp_path: Path, tiny_tokenizer: Path) -> None:
        spec = {**LORA, "tokenizer_path": str(tiny_tokenizer), "dp": DP}
        spec["hyperparameters"] = {**LORA["hyperparameters"], "epochs": 2}
        done, events = train_in_process(spec, tmp_path / "out", count=24)

        privacy = [e for e in events if e["event"] == "privacy"]
        assert len(privacy) == 1 and privacy[0]["accountant"] == "prv" and privacy[0]["noise_multiplier"] > 0
        assert 0 < done["epsilon_spent"] <= DP["target_epsilon"] + 0.01
        # The whole budget is planned for the run: close to the target, not far below.
        assert done["epsilon_spent"] > 0.8 * DP["target_epsilon"]
        # The noised final validation metrics spend 5 % of the target, counted in epsilon_spent;
        # no training loss left the runner.
        assert done["metrics"]["epsilon_metrics"] == pytest.approx(0.05 * DP["target_epsilon"])
        assert "validation_loss" in done["metrics"] and "train_loss" not in done["metrics"]
        assert not [e for e in events if e["event"] in ("metrics",) or "loss" in e]
        assert done["steps"] > 0 and (tmp_path / "out" / "model.safetensors").is_file()


class TestClassification:
    def test_cli_trains_minilm_and_reports_accuracy_and_f1(self, tmp_path: Path) -> None:
        from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast

        (tmp_path / "spec.json").write_text(json.dumps(CLASSIFY))
        code, events = run_cli(
            ["train", "--spec", "spec.json", "--out", "out"], cwd=tmp_path, stdin=jsonl(notes(16))
        )

        assert code == 0, events
        metrics = [e for e in events if e["event"] == "metrics"]
        assert len(metrics) == 1 and {"loss", "accuracy", "f1_macro"} <= set(metrics[0])
        assert 0 <= metrics[0]["accuracy"] <= 1 and 0 <= metrics[0]["f1_macro"] <= 1
        done = events[-1]
        assert done["event"] == "done" and done["steps"] == 3
        assert sorted(done["files"]) == sorted(p.name for p in (tmp_path / "out").iterdir())
        assert all(name.endswith((".json", ".safetensors")) for name in done["files"])
        model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "out", use_safetensors=True)
        assert model.config.id2label == {0: "neg", 1: "pos"}
        tokenizer = PreTrainedTokenizerFast.from_pretrained(tmp_path / "out")
        assert tokenizer("a clinic note")["input_ids"][0] == tokenizer.cls_token_id

    def test_a_label_outside_the_spec_names_the_line_only(self, tmp_path: Path) -> None:
        (tmp_path / "spec.json").write_text(json.dumps(CLASSIFY))
        bad = [*notes(3), {"text": "SECRET-TEXT-1", "label": "maybe"}]
        code, events = run_cli(
            ["train", "--spec", "spec.json", "--out", "out"], cwd=tmp_path, stdin=jsonl(bad)
        )
        assert code == 3
        assert events == [
            {
                "event": "error",
                "field": "records",
                "detail": "line 4: 'label' must be one of the spec's labels",
            }
        ]
        assert "SECRET" not in json.dumps(events)

    def test_macro_f1(self) -> None:
        import torch

        from training.runner.train import macro_f1

        truth, guess = torch.tensor([0, 0, 1, 1, 2]), torch.tensor([0, 1, 1, 1, 0])
        # F1 per label: 0 -> 0.5, 1 -> 0.8, 2 -> 0.0
        assert macro_f1(truth, guess) == pytest.approx((0.5 + 0.8 + 0.0) / 3)
        assert macro_f1(truth, truth) == 1.0

    @pytest.mark.proof
    def test_same_seed_same_run(self, tmp_path: Path) -> None:
        spec = copy.deepcopy(CLASSIFY)
        spec["hyperparameters"]["max_steps"] = 2
        first, first_events = train_in_process(spec, tmp_path / "a", count=12)
        second, second_events = train_in_process(spec, tmp_path / "b", count=12)
        losses = [[e["loss"] for e in ev if e["event"] == "progress"] for ev in (first_events, second_events)]
        assert losses[0] == losses[1] and first["metrics"] == second["metrics"]
        assert (tmp_path / "a" / "model.safetensors").read_bytes() == (
            tmp_path / "b" / "model.safetensors"
        ).read_bytes()

    @pytest.mark.proof
    def test_dp_classification_with_ghost_clipping(self, tmp_path: Path) -> None:
        spec = copy.deepcopy(CLASSIFY)
        spec["dp"] = DP
        spec["hyperparameters"]["max_steps"] = 2
        done, events = train_in_process(spec, tmp_path / "out", count=24)
        assert [e["event"] for e in events].count("privacy") == 1
        assert 0 < done["epsilon_spent"] <= DP["target_epsilon"] + 0.01
        # Under DP only the noised final metrics leave: loss and accuracy, no per-step loss.
        assert "validation_accuracy" in done["metrics"] and "validation_f1_macro" not in done["metrics"]
        assert not [e for e in events if e["event"] == "progress" and "loss" in e]
