"""Uploaded bases: the file rules, the identity hash, validate-base, training on one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.training.runner.conftest import jsonl, notes, run_cli
from training.runner.bases import base_files_check, base_hash


@pytest.fixture
def base_dir(tmp_path: Path, tiny_tokenizer: Path) -> Path:
    """A tiny GPT-2 saved the Hugging Face way (safetensors), with its tokenizer."""
    from tokenizers import Tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    vocab = Tokenizer.from_file(str(tiny_tokenizer)).get_vocab_size()
    config = GPT2Config(
        vocab_size=vocab, n_positions=64, n_layer=1, n_head=2, n_embd=16, eos_token_id=3, pad_token_id=0
    )
    directory = tmp_path / "base"
    GPT2LMHeadModel(config).save_pretrained(directory, safe_serialization=True)
    shutil.copy(tiny_tokenizer, directory / "tokenizer.json")
    return directory


class TestFiles:
    def test_a_clean_base_passes(self, base_dir: Path) -> None:
        assert base_files_check(base_dir) == []

    @pytest.mark.parametrize(
        "name", ["pytorch_model.bin", "model.pt", "weights.pkl", "modeling_evil.py", "notes.md"]
    )
    def test_refuses_pickles_and_anything_unlisted(self, base_dir: Path, name: str) -> None:
        (base_dir / name).write_bytes(b"\x80\x04K\x01.")
        assert base_files_check(base_dir) == [
            f"{name}: not an allowed file (config, safetensors weights and tokenizer files only)"
        ]

    def test_refuses_subdirectories_links_custom_code_and_size(self, base_dir: Path, tmp_path: Path) -> None:
        (base_dir / "sub").mkdir()
        (base_dir / "vocab.txt").symlink_to(tmp_path)
        problems = base_files_check(base_dir, max_bytes=10)
        assert "sub: subdirectories are not allowed" in problems
        assert "vocab.txt: links are not allowed" in problems
        assert any("over the limit of 10" in p for p in problems)
        shutil.rmtree(base_dir / "sub")
        (base_dir / "vocab.txt").unlink()
        config = json.loads((base_dir / "config.json").read_text())
        (base_dir / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "x.Y"}}))
        assert base_files_check(base_dir) == ["config.json asks for custom code (auto_map): not allowed"]

    def test_requires_config_weights_and_tokenizer(self, base_dir: Path) -> None:
        (base_dir / "tokenizer.json").unlink()
        (base_dir / "model.safetensors").unlink()
        assert base_files_check(base_dir) == ["tokenizer.json is missing", "no *.safetensors weights"]

    def test_hash_is_stable_and_covers_names_and_contents(self, base_dir: Path, tmp_path: Path) -> None:
        first = base_hash(base_dir)
        copy = shutil.copytree(base_dir, tmp_path / "copy")
        assert base_hash(copy) == first and len(first) == 64
        (copy / "generation_config.json").rename(copy / "generation_config2.json")
        assert base_hash(copy) != first
        (copy / "generation_config2.json").rename(copy / "generation_config.json")
        data = bytearray((copy / "model.safetensors").read_bytes())
        data[-1] ^= 1
        (copy / "model.safetensors").write_bytes(bytes(data))
        assert base_hash(copy) != first


class TestValidateBase:
    def test_reports_architecture_and_parameters(self, base_dir: Path) -> None:
        from transformers import GPT2LMHeadModel

        code, events = run_cli(["validate-base", "--dir", "base"], cwd=base_dir.parent)
        assert code == 0
        expected = sum(p.numel() for p in GPT2LMHeadModel.from_pretrained(base_dir).parameters())
        assert events == [
            {
                "event": "base",
                "ok": True,
                "architecture": "GPT2LMHeadModel",
                "model_type": "gpt2",
                "parameters": expected,
                "causal": True,
                "sha256": base_hash(base_dir),
                "positions": 64,
                "detail": "loaded with safetensors weights",
            }
        ]

    def test_refuses_a_pickle_without_loading_it(self, base_dir: Path) -> None:
        (base_dir / "pytorch_model.bin").write_bytes(b"not even a pickle")
        code, events = run_cli(["validate-base", "--dir", "base"], cwd=base_dir.parent)
        assert code == 3 and events[0]["ok"] is False and events[0]["parameters"] is None
        assert "pytorch_model.bin: not an allowed file" in events[0]["detail"]

    def test_refuses_special_tokens_outside_the_vocabulary(self, base_dir: Path) -> None:
        config = json.loads((base_dir / "config.json").read_text())
        (base_dir / "config.json").write_text(json.dumps({**config, "eos_token_id": 50256}))
        code, events = run_cli(["validate-base", "--dir", "base"], cwd=base_dir.parent)
        assert code == 3 and events[0]["ok"] is False
        assert events[0]["detail"].startswith("config.json: eos_token_id 50256 is outside the vocabulary")

    def test_corrupt_weights_fail_to_load(self, base_dir: Path) -> None:
        (base_dir / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{}")
        code, events = run_cli(["validate-base", "--dir", "base"], cwd=base_dir.parent)
        assert code == 3 and events[0]["ok"] is False
        assert events[0]["detail"].startswith("transformers cannot load it")


def test_trains_on_an_uploaded_base(base_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import GPT2LMHeadModel

    spec: dict[str, Any] = {
        "template": "causal_lm",
        "base": {"kind": "uploaded", "path": "base"},
        "hyperparameters": {
            "learning_rate": 0.01,
            "epochs": 1,
            "batch_size": 4,
            "max_seq_len": 16,
            "seed": 1,
            "precision": "fp32",
            "validation_fraction": 0.0,
        },
    }
    (base_dir.parent / "spec.json").write_text(json.dumps(spec))
    code, events = run_cli(
        ["train", "--spec", "spec.json", "--out", "out"], cwd=base_dir.parent, stdin=jsonl(notes(12))
    )
    assert code == 0, events
    out = base_dir.parent / "out"
    assert (out / "tokenizer.json").read_bytes() == (base_dir / "tokenizer.json").read_bytes()
    model = GPT2LMHeadModel.from_pretrained(out, use_safetensors=True)
    assert model.config.n_embd == 16 and model.config.n_positions == 64
    # The base's positions bound max_seq_len.
    from training.runner.data import InputError
    from training.runner.models import load_causal
    from training.runner.spec import parse_spec

    spec["hyperparameters"]["max_seq_len"] = 128
    monkeypatch.chdir(base_dir.parent)
    with pytest.raises(InputError) as caught:
        load_causal(parse_spec(spec))
    assert caught.value.field == "hyperparameters.max_seq_len"
