"""The token_classification template: spans in, BIO tags per token, LoRA on the bundled encoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.training.runner.conftest import jsonl, run_cli
from training.runner.data import InputError, Record, bio_tags, read_records, token_tags
from training.runner.spec import DP_TEMPLATES, SpecError, parse_spec

HP: dict[str, Any] = {
    "learning_rate": 0.003,
    "epochs": 1,
    "batch_size": 4,
    "max_seq_len": 32,
    "seed": 7,
    "precision": "fp32",
    "validation_fraction": 0.25,
    "log_every": 1,
    "max_steps": 3,
    "lora_r": 2,
    "lora_alpha": 4,
}
TOKENS: dict[str, Any] = {
    "template": "token_classification",
    "base": {"kind": "builtin", "name": "all-minilm-l6-v2"},
    "hyperparameters": HP,
    "labels": ["PERSON", "LOCATION"],
    "telemetry": {"window_records": 1, "window_tokens": 0},
}


def mentions(count: int) -> list[dict[str, Any]]:
    names = ["anna", "bruno", "chidi", "dora"]
    towns = ["leeds", "porto", "lagos", "oslo"]
    out = []
    for i in range(count):
        name, town = names[i % 4], towns[(i // 4) % 4]
        text = f"{name} moved to {town} last year"
        out.append(
            {
                "text": text,
                "spans": [
                    {"start": 0, "end": len(name), "type": "PERSON"},
                    {"start": len(name) + 9, "end": len(name) + 9 + len(town), "type": "LOCATION"},
                ],
            }
        )
    return out


class TestSpec:
    def test_takes_span_types_and_lora_knobs_but_not_dp(self) -> None:
        spec = parse_spec(TOKENS)
        assert spec.labels == ("PERSON", "LOCATION")
        assert spec.hyperparameters.lora_r == 2
        assert parse_spec({**TOKENS, "labels": ["PERSON"]}).labels == ("PERSON",)
        assert "token_classification" not in DP_TEMPLATES
        with pytest.raises(SpecError) as error:
            parse_spec({**TOKENS, "dp": {"enabled": True, "target_epsilon": 4.0, "delta": 1e-5}})
        assert error.value.field == "dp.enabled"

    @pytest.mark.parametrize(
        ("change", "field"),
        [
            ({"labels": None}, "labels"),
            ({"labels": []}, "labels"),
            ({"base": {"kind": "builtin", "name": "gpt2-tiny"}}, "base.name"),
        ],
    )
    def test_refuses(self, change: dict[str, Any], field: str) -> None:
        with pytest.raises(SpecError) as error:
            parse_spec({**TOKENS, **change})
        assert error.value.field == field


class TestSpansAndTags:
    def test_bad_spans_name_the_line(self) -> None:
        good = json.dumps({"text": "anna", "spans": [{"start": 0, "end": 4, "type": "PERSON"}]})
        for bad in (
            {"text": "anna", "spans": [{"start": 0, "end": 9, "type": "PERSON"}]},
            {
                "text": "anna",
                "spans": [{"start": 0, "end": 2, "type": "X"}, {"start": 1, "end": 3, "type": "X"}],
            },
            {"text": "anna", "spans": "0-4"},
        ):
            with pytest.raises(InputError) as error:
                read_records([good.encode(), json.dumps(bad).encode()])
            assert error.value.detail.startswith("line 2:")
        (record,) = read_records([good.encode()])
        assert record.spans == ((0, 4, "PERSON"),)

    def test_bio_tags_follow_the_characters(self) -> None:
        # "dr anna maria went to oslo": tokens and their offsets, [CLS] and [SEP] special.
        offsets = [(0, 0), (0, 2), (3, 7), (8, 13), (14, 18), (19, 21), (22, 26), (0, 0)]
        special = [1, 0, 0, 0, 0, 0, 0, 1]
        spans = ((3, 13, "PERSON"), (22, 26, "LOCATION"))
        tags = token_tags(offsets, special, spans, {"PERSON": 0, "LOCATION": 1})
        assert bio_tags(("PERSON", "LOCATION")) == ["O", "B-PERSON", "I-PERSON", "B-LOCATION", "I-LOCATION"]
        assert tags == [-100, 0, 1, 2, 0, 0, 3, -100]

    def test_span_runs_decode_like_the_tags(self) -> None:
        from training.runner.train import tag_spans

        assert tag_spans([0, 1, 2, 0, 3, 4, 4]) == {(1, 3, 0), (4, 7, 1)}
        assert tag_spans([2, 2, 1, 2]) == {(0, 2, 0), (2, 4, 0)}  # an I without a B starts a run

    def test_grouped_batches_cover_every_row_once(self) -> None:
        import torch

        from training.runner.train import grouped_batches

        lengths = torch.tensor([5, 40, 7, 33, 12, 3, 9, 28, 15, 2])
        rows = [
            int(i) for b in grouped_batches(lengths, 3, torch.Generator().manual_seed(1), group=2) for i in b
        ]
        assert sorted(rows) == list(range(10))


class TestTraining:
    def test_trains_and_writes_a_merged_token_classifier(self, tmp_path: Path) -> None:
        from transformers import AutoModelForTokenClassification

        (tmp_path / "spec.json").write_text(json.dumps(TOKENS))
        code, events = run_cli(
            ["train", "--spec", "spec.json", "--out", "out"], cwd=tmp_path, stdin=jsonl(mentions(16))
        )
        assert code == 0, events
        done = events[-1]
        assert done["event"] == "done" and done["template"] == "token_classification"
        assert done["steps"] == 3 and done["tokens_trained"] > 0
        assert 0 <= done["metrics"]["validation_accuracy"] <= 1 and "validation_f1_spans" in done["metrics"]
        assert next(e for e in events if e["event"] == "metrics")["split"] == "validation"
        model = AutoModelForTokenClassification.from_pretrained(tmp_path / "out", use_safetensors=True)
        assert model.config.id2label[1] == "B-PERSON" and model.config.num_labels == 5
        assert not [n for n, _ in model.named_parameters() if "lora" in n]

    def test_a_span_type_outside_the_labels_is_refused(self, tmp_path: Path) -> None:
        records = mentions(8)
        records[5]["spans"][0]["type"] = "ORGANIZATION"
        (tmp_path / "spec.json").write_text(json.dumps(TOKENS))
        code, events = run_cli(
            ["train", "--spec", "spec.json", "--out", "out"], cwd=tmp_path, stdin=jsonl(records)
        )
        assert code == 3
        assert events[-1]["event"] == "error" and events[-1]["detail"].startswith("line 6:")

    def test_records_without_spans_are_refused(self) -> None:
        from tokenizers import Tokenizer

        from training.runner.data import encode_spans, platform_model_dir

        tokenizer = Tokenizer.from_file(str(platform_model_dir() / "tokenizer.json"))
        with pytest.raises(InputError) as error:
            encode_spans(tokenizer, [Record("anna", line=4)], ("PERSON",), 16, 0)
        assert error.value.detail.startswith("line 4:")
