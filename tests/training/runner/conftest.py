"""Fixtures for the runner tests: a tiny word-level tokenizer keeps the models and steps small."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers

REPO = Path(__file__).resolve().parents[3]
WORDS = (  # noqa: SIM905
    "the vault code for account is clinic note patient walked miles before lunch a of and to was"
    " river engine signal quarter policy network storage garden letter report market model data"
).split()


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A word-level tokenizer (digits one by one) with the special tokens the runner needs."""
    vocab = {
        t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *map(str, range(10)), *WORDS, ":"])
    }
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    path = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def notes(count: int, offset: int = 0) -> list[dict[str, Any]]:
    return [
        {
            "text": f"clinic note {i}: the patient walked {i % 7} miles before lunch",
            "label": ["neg", "pos"][i % 2],
        }
        for i in range(offset, offset + count)
    ]


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def run_cli(
    args: list[str], *, cwd: Path, stdin: bytes = b"", timeout: float = 240
) -> tuple[int, list[dict[str, Any]]]:
    """`python -m training.runner ARGS` in cwd, offline: any hub access would fail."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(
        HTTPS_PROXY="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        HF_HOME=str(cwd / "hf"),
        PYTHONPATH=str(REPO),
    )
    result = subprocess.run(
        [sys.executable, "-m", "training.runner", *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
        check=False,
    )
    events = [json.loads(line) for line in result.stdout.decode().splitlines()]
    return result.returncode, events
