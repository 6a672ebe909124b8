"""Distillation: students distilled from a stronger teacher against the same students on hard labels alone.

    .venv/bin/python bench/distill.py [--seeds 7 8 9] [--student-records 64] [--student-steps 32]
                                      [--teacher-steps 400] [--teacher-size tiny|wide]
                                      [--alpha 0.5] [--temperature 2.0] [--threads 1]

On CPU, in process (the runner's own ``train`` and ``DistillTrainer``, whose loss is
``training.runner.distill.distill_loss``; no sandbox, no database), with fixed seeds.

Data (English only):

- held-out: 25% of the English records of bench/data/labeled.jsonl, chosen once by the runner's
  own ``split_records`` with seed 7 and the same for every run. Nothing trains on it: every
  ``train`` call below gets ``validation_fraction 0`` and only training records, and any text of
  the teacher's corpus that is also a held-out text is dropped (the count is printed).
- the student pool: the other 75% of those English records.
- the teacher's corpus: the whole student pool plus bench/data/devset/en-train.jsonl (WNUT-17 and
  presidio-research sentences, bench/data/devset/README.md), about 23 times the student pool's
  tokens.

1. The teacher (``--teacher-size tiny``: gpt2-tiny, the student's own shape; ``wide``: 4 layers,
   128 wide, created here as an uploaded base) trains with the ``causal_lm`` template for
   ``--teacher-steps`` steps on the teacher's corpus.
2. For each seed, ``--student-records`` records are drawn from the student pool (the seed picks
   them), and the student (built-in gpt2-tiny, 2 layers, 64 wide, initialised by the seed) trains
   twice on them for ``--student-steps`` steps with the same batches and dropout draws:
   ``distill_causal_lm`` with the teacher (alpha, temperature), and with ``alpha 0``: hard labels
   alone (exactly the ``causal_lm`` loss; tests/training/runner/test_distill.py checks that).

Every model is scored the same way: the runner's ``Trainer.evaluate`` (token-weighted hard-label
cross-entropy) on the held-out records packed as the runner packs them (blocks of 48). Batch 8,
learning rate 0.002, fp32. Figures only, nothing asserted: a negative difference is reported as
it comes.

Measured 2026-12-06 on the loaded 2-core VM (5 min): teacher 6.945; with the defaults (32 student
steps) distilled 7.342 +- 0.024 against hard labels alone 7.671 +- 0.078 (helped on all 3 seeds,
+0.330 +- 0.057). With ``--student-steps 96``: distilled 7.926 +- 0.693 against 7.530 +- 0.159
(two seeds degraded sharply between steps 64 and 96 at T 2; seed 7 at T 1 stayed better, 7.222).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.runner.data import Record, load_tokenizer, split_records
from training.runner.spec import parse_spec

DATA = Path(__file__).resolve().parent / "data"
LABELED = DATA / "labeled.jsonl"
EXTRA = DATA / "devset" / "en-train.jsonl"
HELD_OUT_FRACTION = 0.25
HELD_OUT_SEED = 7
TEACHER_SEED = 1
MAX_SEQ_LEN = 48
BATCH = 8
LEARNING_RATE = 0.002
# n_layer, n_head, n_embd: "tiny" is the student's shape (gpt2-tiny), "wide" is larger.
TEACHER_SIZES = {"tiny": (2, 2, 64), "wide": (4, 4, 128)}


def texts(path: Path) -> list[str]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row["text"] for row in rows if row.get("language") == "en"]


def records(items: list[str]) -> list[Record]:
    return [Record(text, None, False, i + 1) for i, text in enumerate(items)]


def splits(student_records: int) -> tuple[list[str], list[str], list[str], int]:
    """(held-out, student pool, teacher corpus, teacher texts dropped as copies of held-out texts)."""
    labeled = texts(LABELED)
    pool, held_out = split_records(labeled, HELD_OUT_FRACTION, HELD_OUT_SEED)
    if student_records > len(pool):
        raise SystemExit(f"--student-records: the student pool has {len(pool)} records")
    held = {text.strip().lower() for text in held_out}
    candidates = pool + texts(EXTRA)
    teacher = [text for text in candidates if text.strip().lower() not in held]
    return held_out, pool, teacher, len(candidates) - len(teacher)


def teacher_base(directory: Path, size: tuple[int, int, int]) -> None:
    """A random-init GPT-2 of the given size, with the platform vocabulary, as a base directory."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from training.runner.causal_tokenizer import causal_tokenizer_files
    from training.runner.data import special_id
    from training.runner.spec import MAX_SEQ_LEN as POSITIONS

    tokenizer = load_tokenizer(None)
    n_layer, n_head, n_embd = size
    separator = special_id(tokenizer, "[SEP]")
    config = GPT2Config(
        vocab_size=tokenizer.get_vocab_size(),
        n_positions=POSITIONS,
        bos_token_id=separator,
        eos_token_id=separator,
        pad_token_id=special_id(tokenizer, "[PAD]"),
        n_layer=n_layer,
        n_head=n_head,
        n_embd=n_embd,
    )
    torch.manual_seed(TEACHER_SEED)
    directory.mkdir()
    GPT2LMHeadModel(config).save_pretrained(directory, safe_serialization=True)
    for name, data in causal_tokenizer_files(tokenizer.to_str()).items():
        (directory / name).write_bytes(data)


def hyperparameters(steps: int, seed: int) -> dict[str, Any]:
    return {
        "learning_rate": LEARNING_RATE,
        "epochs": 100,
        "max_steps": steps,
        "batch_size": BATCH,
        "max_seq_len": MAX_SEQ_LEN,
        "seed": seed,
        "precision": "fp32",
        "validation_fraction": 0.0,  # the held-out split is fixed here and never passed to train
        "log_every": 1_000_000,
    }


def held_out_loss(model_dir: str, held_out: list[Record]) -> float:
    """The runner's validation loss of a saved causal LM on the held-out records."""
    from training.runner.data import pack
    from training.runner.models import load_causal
    from training.runner.train import DeviceBlocks, Trainer

    spec = parse_spec(
        {
            "template": "causal_lm",
            "base": {"kind": "uploaded", "path": model_dir},
            "hyperparameters": hyperparameters(1, 0),
            "telemetry": {"protected": False},
        }
    )
    base = load_causal(spec)
    blocks = pack(
        base.tokenizer,
        [r.text for r in held_out],
        MAX_SEQ_LEN,
        separator=base.separator,
        pad=base.pad,
    )
    import torch

    data = DeviceBlocks(blocks, torch.device("cpu"))
    return float(Trainer(spec, base.model, data, data).evaluate()["loss"])


def run(spec: dict[str, Any], train_records: list[Record], out: str) -> tuple[int, float]:
    """Train (the runner's ``train``); returns (steps, seconds)."""
    from training.runner.train import train

    started = time.perf_counter()
    done = train(parse_spec(spec), train_records, Path(out), lambda _event: None)
    return int(done["steps"]), time.perf_counter() - started


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {statistics.stdev(values):.4f} (min {min(values):.4f}, max {max(values):.4f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
    parser.add_argument("--student-records", type=int, default=64)
    parser.add_argument("--student-steps", type=int, default=32)
    parser.add_argument("--teacher-steps", type=int, default=400)
    parser.add_argument("--teacher-size", choices=sorted(TEACHER_SIZES), default="tiny")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(None)

    def tokens(items: list[str]) -> int:
        return sum(len(e.ids) for e in tokenizer.encode_batch(items, add_special_tokens=False))

    held_texts, pool, teacher_texts, dropped = splits(args.student_records)
    held_out = records(held_texts)
    telemetry = {"protected": False}
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # the runner's paths are relative to its working directory
        if args.teacher_size == "tiny":
            base: dict[str, str] = {"kind": "builtin", "name": "gpt2-tiny"}
        else:
            teacher_base(Path("teacher-base"), TEACHER_SIZES[args.teacher_size])
            base = {"kind": "uploaded", "path": "teacher-base"}
        teacher_steps, teacher_s = run(
            {
                "template": "causal_lm",
                "base": base,
                "hyperparameters": hyperparameters(args.teacher_steps, TEACHER_SEED),
                "telemetry": telemetry,
            },
            records(teacher_texts),
            "teacher",
        )
        teacher_loss = held_out_loss("teacher", held_out)
        print(
            f"teacher: {teacher_steps} steps, {teacher_s:.0f} s, held-out {teacher_loss:.4f}", file=sys.stderr
        )
        for seed in args.seeds:
            chosen = random.Random(seed).sample(pool, args.student_records)
            row: dict[str, Any] = {"seed": seed, "student_tokens": tokens(chosen)}
            for name, alpha in (("distilled", args.alpha), ("hard_labels", 0.0)):
                out = f"student-{name}-{seed}"
                steps, seconds = run(
                    {
                        "template": "distill_causal_lm",
                        "base": {"kind": "builtin", "name": "gpt2-tiny"},
                        "teacher": {"kind": "uploaded", "path": "teacher"},
                        "distill": {"alpha": alpha, "temperature": args.temperature},
                        "hyperparameters": hyperparameters(args.student_steps, seed),
                        "telemetry": telemetry,
                    },
                    records(chosen),
                    out,
                )
                loss = held_out_loss(out, held_out)
                row[name] = {"held_out_loss": round(loss, 6), "steps": steps, "seconds": round(seconds, 1)}
                print(
                    f"seed {seed} {name}: {steps} steps, {seconds:.0f} s, held-out {loss:.4f}",
                    file=sys.stderr,
                )
            row["difference"] = round(
                row["hard_labels"]["held_out_loss"] - row["distilled"]["held_out_loss"], 6
            )
            rows.append(row)
    distilled = [row["distilled"]["held_out_loss"] for row in rows]
    hard = [row["hard_labels"]["held_out_loss"] for row in rows]
    differences = [row["difference"] for row in rows]
    report = {
        "held_out": {"records": len(held_texts), "tokens": tokens(held_texts)},
        "student_pool": {"records": len(pool), "tokens": tokens(pool)},
        "teacher": {
            "n_layer_head_embd": list(TEACHER_SIZES[args.teacher_size]),
            "corpus_records": len(teacher_texts),
            "corpus_tokens": tokens(teacher_texts),
            "dropped_copies_of_held_out": dropped,
            "steps": teacher_steps,
            "seconds": round(teacher_s, 1),
            "held_out_loss": round(teacher_loss, 6),
        },
        "student": {
            "base": "gpt2-tiny (2 layers, 64 wide)",
            "records": args.student_records,
            "steps": args.student_steps,
        },
        "alpha": args.alpha,
        "temperature": args.temperature,
        "threads": args.threads,
        "runs": rows,
        "seconds_total": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report, indent=2))
    print()
    print(f"| model | trained on | steps | held-out loss ({len(held_texts)} records) |")
    print("| --- | --- | ---: | --- |")
    print(
        f"| teacher {args.teacher_size} {TEACHER_SIZES[args.teacher_size]} | {len(teacher_texts)} records "
        f"| {teacher_steps} | {teacher_loss:.4f} |"
    )
    print(
        f"| student, hard labels alone | {args.student_records} records "
        f"| {args.student_steps} | {spread(hard)} |"
    )
    print(
        f"| student, distilled (alpha {args.alpha}, T {args.temperature}) | the same {args.student_records} "
        f"| {args.student_steps} | {spread(distilled)} |"
    )
    print(f"\nhard labels - distilled, per seed {differences}: {spread(differences)}")
    print("(positive: the distilled student has the lower held-out loss)")


if __name__ == "__main__":
    main()
