"""Generation (issue 17): records/s through the job's runner against a bare generate() loop, and the
leakage screen's cost per 10,000 generated records.

    .venv/bin/python bench/generation.py [--records 512] [--max-new-tokens 32] [--batch 32]
                                       [--screen 10000] [--sources 2000]

1. Throughput: a gpt2-tiny built from its config (random init, the platform tokenizer), saved as a
   custody model's files. Through the job: ``python -m training.runner generate`` in the sandbox
   (training/sandbox.py: process start, torch import, model load, sampling, every record an event
   on the pipe, read by this process), end to end. Bare: ``generate_model.generate`` on the same
   model and spec in this process, model already loaded by it, records collected in a list.
2. Leakage screen: the screen's keyed 5-gram index (custody/services/synthetic.py ``_Index``) built
   from N source texts (the English dev split, bench/data/devset), then 10,000 generated-like
   records screened against it (dev texts with shuffled words, 5% verbatim copies). The database
   read of the source version is not in this figure (it is the release gate's stream).

Prints the load average with every figure: this machine is shared, and timings move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

DEVSET = Path(__file__).resolve().parent / "data" / "devset" / "en-dev.jsonl"
PROMPTS = ["The customer wrote", "Please check", "Summary of the", "A ticket about", "We shipped the"]


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def model_dir(root: Path) -> Path:
    from training.runner.causal_tokenizer import causal_tokenizer_files
    from training.runner.data import load_tokenizer
    from training.runner.models import build_model

    tokenizer = load_tokenizer()
    model = build_model("gpt2-tiny", tokenizer, 0)
    directory = root / "base"
    model.save_pretrained(directory, safe_serialization=True)
    for name, data in causal_tokenizer_files(tokenizer.to_str()).items():
        (directory / name).write_bytes(data)
    return directory


def throughput(records: int, max_new_tokens: int, batch: int) -> None:
    from training import sandbox
    from training.runner.generate import parse_generation
    from training.runner.generate_model import generate

    spec_doc: dict[str, Any] = {
        "template": "generate",
        "base": {"kind": "uploaded", "path": "base"},
        "generation": {
            "prompts": PROMPTS,
            "records": records,
            "max_new_tokens": max_new_tokens,
            "batch_size": batch,
            "seed": 1,
        },
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        root.chmod(0o700)
        model_dir(root)
        (root / "spec.json").write_text(json.dumps(spec_doc))
        got: list[str] = []

        def on_event(event: dict[str, Any]) -> None:
            if event.get("event") == "record":
                got.append(str(event.get("text")))

        limits = sandbox.Limits(memory_bytes=4 * 1024**3, wall_seconds=600)
        started = time.perf_counter()
        result = sandbox.run_runner(
            ["generate", "--spec", "spec.json"], workdir=root, limits=limits, on_event=on_event
        )
        job_s = time.perf_counter() - started
        assert result.exit_code == 0 and len(got) == records, (result.exit_code, result.reason, len(got))

        cwd = os.getcwd()
        os.chdir(root)
        try:
            spec = parse_generation(spec_doc)
            bare: list[str] = []
            # Model load outside the timing: the bare loop is generate() on a loaded model.
            generate(
                parse_generation({**spec_doc, "generation": {**spec_doc["generation"], "records": 1}}),
                lambda e: None,
            )
            started = time.perf_counter()
            generate(spec, lambda e: bare.append(str(e.get("text"))) if e.get("event") == "record" else None)
            bare_s = time.perf_counter() - started
        finally:
            os.chdir(cwd)
    print(
        f"generation, {records} records x <= {max_new_tokens} new tokens, batch {batch} (gpt2-tiny):\n"
        f"  job's runner (sandbox, end to end): {job_s:.2f} s = {records / job_s:,.1f} records/s\n"
        f"  bare generate(), model loaded:      {bare_s:.2f} s = {records / bare_s:,.1f} records/s\n"
        f"  ratio job/bare: {bare_s / job_s:.2f}   ({load()})"
    )


def screen_cost(count: int, sources: int) -> None:
    from custody.screening.keys import PUBLIC_KEY
    from custody.services.synthetic import _Index, _normalized

    texts = [json.loads(line)["text"] for line in DEVSET.read_text().splitlines() if line.strip()]
    rng = random.Random(7)
    source = [texts[i % len(texts)] + f" ref {i}" for i in range(sources)]
    generated = []
    for i in range(count):
        if i % 20 == 0:
            generated.append(source[rng.randrange(len(source))])
        else:
            words = rng.choice(texts).split()
            rng.shuffle(words)
            generated.append(" ".join(words))
    started = time.perf_counter()
    index = _Index(PUBLIC_KEY)
    for text in source:
        index.add(text)
    built = time.perf_counter() - started
    started = time.perf_counter()
    dropped = sum(index.too_close(_normalized(text)) is not None for text in generated)
    screened = time.perf_counter() - started
    print(
        f"leakage screen: index of {sources:,} source records {built:.2f} s; {count:,} generated records "
        f"screened in {screened:.2f} s = {screened * 10_000 / count:.2f} s per 10k "
        f"({dropped:,} dropped, {count // 20:,} planted copies)   ({load()})"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=512)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--screen", type=int, default=10_000)
    parser.add_argument("--sources", type=int, default=2_000)
    args = parser.parse_args()
    import django

    django.setup()
    screen_cost(args.screen, args.sources)
    throughput(args.records, args.max_new_tokens, args.batch)


if __name__ == "__main__":
    main()
