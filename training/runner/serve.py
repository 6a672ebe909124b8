"""Plug-in inference inside the sandbox (issue 16): one batch of prompts through a custody model.

    python -m training.runner serve --model DIR --task generate|classify [--max-new-tokens N] < prompts.jsonl

Prompts are JSON lines ``{"text": ...}`` (the order is the id). The launcher side
(training/services/serving.py) decrypted the model into the sandbox's private working
directory; nothing here writes outside it. Events (stdout, JSON lines): one ``output``
per prompt, then ``done``. Generation is greedy and batched: prompts of equal token length
run together (no padding, so positions match training's packing), each started, like a
packed record, by the end-of-text token.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from training.runner.data import InputError, load_tokenizer
from training.runner.gate import Scorer
from training.runner.models import load_pretrained

BATCH = 32


def _cut(ids: list[int], stop: int) -> list[int]:
    return ids[: ids.index(stop)] if stop in ids else ids


@torch.no_grad()
def generate(model_dir: Path, prompts: list[str], max_new_tokens: int) -> list[dict[str, Any]]:
    """Greedy continuations, batched by prompt length; each with its token count."""
    scorer = Scorer(model_dir)
    rows = [scorer.ids(text) for text in prompts]
    groups: dict[int, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        groups[len(row)].append(index)
    outputs: dict[int, dict[str, Any]] = {}
    for _, members in sorted(groups.items()):
        for start in range(0, len(members), BATCH):
            chunk = members[start : start + BATCH]
            batch = torch.tensor([rows[i] for i in chunk], dtype=torch.long)
            generated = scorer.greedy(batch, max_new_tokens)
            for index, ids in zip(chunk, generated.tolist(), strict=True):
                kept = _cut(ids, scorer.start)
                outputs[index] = {"text": scorer.tokenizer.decode(kept), "tokens": len(kept)}
    return [outputs[i] for i in range(len(prompts))]


@torch.no_grad()
def classify(model_dir: Path, texts: list[str], max_tokens: int) -> list[dict[str, Any]]:
    """The most likely label of each text and its probability."""
    model, causal = load_pretrained(model_dir)
    if causal or not hasattr(model.config, "id2label"):
        raise InputError("model", "not a classification model")
    tokenizer_path = model_dir / "tokenizer.json"
    tokenizer = load_tokenizer(str(tokenizer_path) if tokenizer_path.is_file() else None)
    model = model.eval()
    results = []
    for text in texts:
        ids = tokenizer.encode(text).ids[:max_tokens]
        logits = model(input_ids=torch.tensor([ids], dtype=torch.long)).logits[0]
        probabilities = torch.softmax(logits.float(), dim=-1)
        best = int(probabilities.argmax())
        label = model.config.id2label.get(best, f"LABEL_{best}")
        results.append({"label": str(label), "score": round(float(probabilities[best]), 4), "tokens": 1})
    return results


def serve_command(model_dir: Path, task: str, max_new_tokens: int) -> int:
    """The ``serve`` subcommand: prompts from stdin, one ``output`` event each; 3 on unusable input."""
    import json
    import sys

    from training.runner.data import read_records

    def emit(event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    try:
        prompts = [record.text for record in read_records(sys.stdin.buffer)]
        if task == "generate":
            results = generate(model_dir, prompts, max_new_tokens)
        else:
            results = classify(model_dir, prompts, max_new_tokens)
    except InputError as error:
        emit({"event": "error", "field": error.field, "detail": error.detail})
        return 3
    for index, result in enumerate(results):
        emit({"event": "output", "id": index, **result})
    emit({"event": "done", "count": len(results)})
    return 0
