"""Plug-in inference (issue 16): generated tokens/s and per-batch latency through the serving path
against a bare greedy generate() on the same model, same run.

    .venv/bin/python bench/inference.py [--prompts 64] [--max-new-tokens 32] [--batches 3]

The model: gpt2-tiny built from its config (random init, the platform tokenizer), saved as a
custody model's files. Serving path: ``python -m training.runner serve`` in the sandbox
(training/sandbox.py: process start, torch import, model load, greedy generation batched by
prompt length, every answer an event on the pipe), one run per batch of ``--prompts`` prompts,
as a serving worker runs one batch of calls. Bare: ``training.runner.serve.generate``'s greedy
loop in this process with the model loaded once (the same ``Scorer``), same prompts. Not in the
serving figure: the database (call rows, usage), the custody decrypt, the guard and the HTTP
round trip; the extraction guard's own cost is measured separately (``guard`` line: an index of
N records, then every output checked). Prints the load average: this machine is shared.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

WORDS = ["the", "customer", "wrote", "about", "a", "late", "shipment", "and", "router", "in", "room", "nine"]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}/{fifteen:.1f} on {os.cpu_count()} cpus"


def model_dir(root: Path) -> Path:
    from training.runner.causal_tokenizer import causal_tokenizer_files
    from training.runner.data import load_tokenizer
    from training.runner.models import build_model

    out = root / "model"
    out.mkdir()
    tokenizer = load_tokenizer(None)
    build_model("gpt2-tiny", tokenizer, seed=7).save_pretrained(out, safe_serialization=True)
    for name, data in causal_tokenizer_files(tokenizer.to_str()).items():
        (out / name).write_bytes(data)
    return out


def prompts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) for _ in range(count)]


def bare(directory: Path, texts: list[str], max_new_tokens: int, batches: int) -> tuple[float, float]:
    """(generated tokens/s, median seconds per batch) of the greedy loop with the model loaded once."""
    import torch

    from training.runner.gate import Scorer

    scorer = Scorer(directory)
    rows = [scorer.ids(t) for t in texts]
    times, tokens = [], 0
    for _ in range(batches):
        start = time.perf_counter()
        groups: dict[int, list[list[int]]] = {}
        for row in rows:
            groups.setdefault(len(row), []).append(row)
        for members in groups.values():
            out = scorer.greedy(torch.tensor(members, dtype=torch.long), max_new_tokens)
            tokens += out.numel()
        times.append(time.perf_counter() - start)
    return tokens / sum(times), statistics.median(times)


def serving(root: Path, texts: list[str], max_new_tokens: int, batches: int) -> tuple[float, float]:
    """(generated tokens/s, median seconds per batch) through the runner's serve subcommand in the sandbox."""
    from training import sandbox

    times, tokens = [], 0
    for _ in range(batches):
        got: list[dict[str, Any]] = []

        def on_event(event: dict[str, Any], got: list[dict[str, Any]] = got) -> None:
            if event.get("event") == "output":
                got.append(event)

        start = time.perf_counter()
        result = sandbox.run_runner(
            ["serve", "--model", "model", "--task", "generate", "--max-new-tokens", str(max_new_tokens)],
            workdir=root,
            limits=sandbox.Limits(memory_bytes=4 * 1024**3, wall_seconds=600),
            stdin_records=[{"text": t} for t in texts],
            on_event=on_event,
        )
        times.append(time.perf_counter() - start)
        assert result.exit_code == 0 and len(got) == len(texts), result.reason
        # Every prompt gets max_new_tokens greedy steps (the runner cuts at the separator only in the text).
        tokens += len(texts) * max_new_tokens
    return tokens / sum(times), statistics.median(times)


def guard_cost(records: int, outputs: int) -> None:
    from custody.services.models_custody import ExtractionIndex

    texts = [" ".join(prompts(1, seed=i)[0].split() * 3) for i in range(records)]
    start = time.perf_counter()
    index = ExtractionIndex(b"bench-key" * 4)
    index.add(texts)
    built = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(outputs):
        index.reproduces(texts[i % records][:20], " ".join(prompts(1, seed=10_000 + i)[0].split() * 2))
    checked = time.perf_counter() - start
    print(
        f"guard: index of {records} records in {built:.2f}s; {outputs} outputs checked in {checked:.2f}s "
        f"({outputs / checked:,.0f}/s)   [{load()}]"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--guard-records", type=int, default=10_000)
    args = parser.parse_args()
    import django

    django.setup()
    texts = prompts(args.prompts)
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        model = model_dir(root)
        bare_rate, bare_batch = bare(model, texts, args.max_new_tokens, args.batches)
        batch = f"per batch of {args.prompts}"
        print(f"bare generate(): {bare_rate:,.0f} tokens/s, {bare_batch:.3f}s {batch}   [{load()}]")
        serve_rate, serve_batch = serving(root, texts, args.max_new_tokens, args.batches)
        print(f"serving (sandbox): {serve_rate:,.0f} tokens/s, {serve_batch:.3f}s {batch}   [{load()}]")
        print(f"ratio serving/bare: {serve_rate / bare_rate:.3f}")
    guard_cost(args.guard_records, 1000)


if __name__ == "__main__":
    main()
