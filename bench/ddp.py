"""DDP throughput: a 2-process gloo job against 1 process, same machine, same run.

    .venv/bin/python bench/ddp.py [--records 600] [--epochs 1] [--batch-size 16]
                                  [--max-seq-len 128] [--base gpt2-tiny] [--rounds 1] [--quick]

Both jobs run the real runner in the real sandbox (``training.sandbox.run_runner``: bubblewrap
with the DDP seccomp filter where installed, else the unshare fallback), records piped on stdin,
the same spec except ``devices``. The order is 1, 2, 1 per round (the load of a shared machine
drifts; the 1-process figure is the mean of the two around the 2-process one).

Throughput is platform tokens trained per second in the steady state: the runner's per-step
windows (``window_tokens``) summed after a warm-up of the first 10% of steps, over the time
between their events' arrival. The global batch is the same in both jobs (each of the 2 ranks
trains half of it), so the figures compare the same work. The records are the sentences of
``bench/data/labeled.jsonl`` (the desensitization evaluation set), which the DDP code was not
tuned on. Figures only: nothing here asserts a timing. The cores and load average are printed
with them: on a machine others are using, the ratio says as much about them as about DDP.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.sandbox import Limits, _sandbox_tool, run_runner

DATA = Path(__file__).resolve().parent / "data" / "labeled.jsonl"


def corpus(count: int) -> list[dict[str, Any]]:
    texts = [json.loads(line)["text"] for line in DATA.read_text().splitlines() if line.strip()]
    return [{"text": texts[i % len(texts)]} for i in range(count)]


def spec(args: argparse.Namespace, devices: int) -> dict[str, Any]:
    return {
        "template": "causal_lm",
        "base": {"kind": "builtin", "name": args.base},
        "devices": devices,
        "hyperparameters": {
            "learning_rate": 0.0005,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "max_seq_len": args.max_seq_len,
            "seed": 11,
            "precision": "fp32",
            "validation_fraction": 0.0,
            "log_every": 1,
        },
        # One window per step: the bench needs each step's tokens (an operator's view).
        "telemetry": {"window_records": 1, "window_tokens": 0, "max_points": 10_000_000},
    }


def run_job(args: argparse.Namespace, records: list[dict[str, Any]], devices: int) -> dict[str, Any]:
    arrivals: list[tuple[float, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as directory:
        workdir = Path(directory)
        (workdir / "spec.json").write_text(json.dumps(spec(args, devices)))
        started = time.perf_counter()
        result = run_runner(
            ["train", "--spec", "spec.json", "--out", "out"],
            workdir=workdir,
            limits=Limits(memory_bytes=3 * 1024**3, wall_seconds=3600, devices=devices),
            stdin_records=records,
            on_event=lambda event: arrivals.append((time.perf_counter(), event)),
        )
        wall = time.perf_counter() - started
    if result.exit_code != 0:
        raise SystemExit(f"the {devices}-process job failed: {result.reason}")
    steps = [(t, e) for t, e in arrivals if e.get("event") == "progress" and "window_tokens" in e]
    skip = max(1, len(steps) // 10)
    (t0, _), rest = steps[skip - 1], steps[skip:]
    tokens = sum(int(e["window_tokens"]) for _, e in rest)
    elapsed = rest[-1][0] - t0
    done = next(e for _, e in arrivals if e.get("event") == "done")
    return {
        "devices": devices,
        "tokens_per_s": tokens / elapsed,
        "steps": done["steps"],
        "tokens_trained": done["tokens_trained"],
        "wall_s": wall,
        "ranks": done.get("ranks"),
    }


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--base", default="gpt2-tiny")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="300 records")
    args = parser.parse_args()
    if args.quick:
        args.records, args.epochs = 300, 1
    records = corpus(args.records)
    cores = len(os.sched_getaffinity(0))
    print(f"sandbox: {_sandbox_tool()}; cores: {cores} (os.cpu_count {os.cpu_count()}); load {load()}")
    print(
        f"job: causal_lm {args.base}, {args.records} records, {args.epochs} epoch(s), "
        f"global batch {args.batch_size}, max_seq_len {args.max_seq_len}; each rank gets "
        f"{cores}//devices torch threads"
    )
    one: list[float] = []
    two: list[float] = []
    for round_ in range(1, args.rounds + 1):
        for devices in (1, 2, 1):
            figures = run_job(args, records, devices)
            (two if devices == 2 else one).append(figures["tokens_per_s"])
            ranks = figures["ranks"] or {}
            print(
                f"round {round_} devices={devices}: {figures['tokens_per_s']:,.0f} tokens/s steady, "
                f"{figures['steps']} steps, {figures['tokens_trained']:,} tokens, "
                f"{figures['wall_s']:.1f} s wall (start-up included); "
                f"units per rank {ranks.get('units_per_rank', '-')}; load {load()}"
            )
    mean_one, mean_two = sum(one) / len(one), sum(two) / len(two)
    print(
        f"\n1 process: {mean_one:,.0f} tokens/s; 2 processes (gloo): {mean_two:,.0f} tokens/s; "
        f"ratio 2/1 = {mean_two / mean_one:.2f} on {cores} cores; load average now {load()}"
    )


if __name__ == "__main__":
    main()
