"""Training overhead: a bare PyTorch loop against a full Sealroom job, same model and data, same run.

    .venv/bin/python bench/train.py [--records 2000] [--seconds 60] [--quick] [--base gpt2-tiny]
                                    [--batch-size 8] [--max-seq-len 128] [--seed 7]

In a throwaway database (SQLite under a temporary directory, or Postgres with
DATABASE_URL) with its own blob and key directories, it ingests and seals a
synthetic corpus through the real custody pipeline and licenses it to a
trainer. Then, on the same CPU:

1. bare: the records are read once through the custody stream, tokenized and
   packed exactly as the runner does (``training.runner.data.pack`` with the
   platform tokenizer), and ``training.runner.models.build_model`` is trained
   by a plain loop (AdamW, the job's learning rate and batch size, shuffled
   blocks) for ``--seconds`` of wall time, before the job and again after it
   (the ratio uses their mean, since the load of a shared machine drifts);
2. sealroom: a job with the same spec is submitted and run through
   ``common.work.work_run`` (the launcher: license checks, one audited stream
   open, canaries, the runner in the bubblewrap sandbox with records piped,
   progress saved, output check, release gate, artifact and signed receipt),
   with enough epochs for at least ``--seconds`` of training.

Steady-state throughput is tokens per second after a warm-up (the first 10%
of the training time), from the loop's own counts (bare) and from the
runner's cumulative token counts in its progress events, timed as they
arrive (sealroom). End to end is submit to succeeded, start-up included.
Figures only: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Doorbells stay in this process: the bench runs the work items itself.
os.environ["CELERY_BROKER_URL"] = "memory://localhost/"

import django

django.setup()

import torch  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connections  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402

from common.models import Membership, Organisation, User, WorkItem, WorkState  # noqa: E402
from common.work import work_run  # noqa: E402
from custody import services as custody  # noqa: E402
from custody.models import DatasetVersion  # noqa: E402
from training import launcher, services  # noqa: E402
from training.launcher import record_text  # noqa: E402
from training.models import BaseModel, TrainingJob  # noqa: E402
from training.runner.data import load_tokenizer, pack  # noqa: E402
from training.runner.models import build_model  # noqa: E402

QUICK = {"records": 300, "seconds": 8}
WORDS = ("order", "shipment", "invoice", "depot", "route", "pallet", "driver", "customer", "warehouse")


def corpus(count: int, seed: int) -> bytes:
    rng = random.Random(seed)
    lines = []
    for i in range(count):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 14))) for _ in range(4)]
        lines.append(json.dumps({"text": f"Ticket {i}. {'. '.join(sentences).capitalize()}."}))
    return ("\n".join(lines) + "\n").encode()


def run_all_work() -> None:
    for _ in range(1000):
        queued = list(WorkItem.objects.filter(state=WorkState.QUEUED).values_list("pk", flat=True))
        if not queued:
            return
        for item_id in queued:
            work_run(item_id=item_id, owner="bench")


def sealed_version(records: int, seed: int) -> tuple[DatasetVersion, User, Organisation, User, Organisation]:
    acme = Organisation.objects.create(name="Bench Provider", slug="bench-provider", is_provider=True)
    bolt = Organisation.objects.create(name="Bench Trainer", slug="bench-trainer", is_trainer=True)
    alice = User.objects.create(username="bench-alice", email="alice@bench.test")
    bob = User.objects.create(username="bench-bob", email="bob@bench.test")
    Membership.objects.create(user=alice, organisation=acme, role="admin")
    Membership.objects.create(user=bob, organisation=bolt, role="admin")
    dataset = custody.dataset_create(actor=alice, organisation=acme, name="Bench corpus")
    version = custody.version_create(actor=alice, dataset=dataset)
    contribution = custody.contribution_start(
        actor=alice, organisation=acme, version=version, filename="c.jsonl"
    )
    custody.contribution_part_put(contribution=contribution, number=1, data=corpus(records, seed))
    custody.contribution_complete(actor=alice, contribution=contribution)
    custody.version_process(actor=alice, version=version)
    run_all_work()
    return custody.version_seal(actor=alice, version=version), alice, acme, bob, bolt


def steady_rate(samples: list[tuple[float, int]], total_seconds: float) -> float:
    """Tokens per second after the first 10% of the time, from (seconds since start, cumulative tokens)."""
    warm = [s for s in samples if s[0] >= 0.1 * total_seconds]
    if len(warm) < 2:
        warm = samples[-2:]
    (t0, n0), (t1, n1) = warm[0], warm[-1]
    return (n1 - n0) / (t1 - t0) if t1 > t0 else float("nan")


def bare_loop(texts: list[str], hp: dict[str, Any], base: str, seconds: float) -> tuple[float, int, float]:
    """Train for ``seconds``; returns (steady tokens/s, tokens per epoch, start-up seconds)."""
    started = time.perf_counter()
    tokenizer = load_tokenizer(None)
    blocks = pack(tokenizer, texts, hp["max_seq_len"])
    model = build_model(base, tokenizer, hp["seed"])
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp["learning_rate"])
    mask = torch.arange(blocks.input_ids.shape[1]) < blocks.lengths.unsqueeze(1)
    labels = blocks.input_ids.masked_fill(~mask, -100)
    generator = torch.Generator().manual_seed(hp["seed"])
    startup = time.perf_counter() - started
    clock0 = time.perf_counter()
    tokens = 0
    samples: list[tuple[float, int]] = []
    while time.perf_counter() - clock0 < seconds:
        order = torch.randperm(blocks.input_ids.shape[0], generator=generator)
        for start in range(0, len(order), hp["batch_size"]):
            index = order[start : start + hp["batch_size"]]
            loss = model(input_ids=blocks.input_ids[index], labels=labels[index]).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            tokens += int(blocks.lengths[index].sum())
            samples.append((time.perf_counter() - clock0, tokens))
            if time.perf_counter() - clock0 >= seconds:
                break
    return steady_rate(samples, samples[-1][0]), int(blocks.lengths.sum()), startup


def sealroom_job(
    grant: Any, bob: User, bolt: Organisation, hp: dict[str, Any], base: str
) -> tuple[TrainingJob, float, float, float]:
    """Run one job through the launcher; (job, steady tokens/s, training seconds, end-to-end seconds)."""
    samples: list[tuple[float, int]] = []
    original = launcher.Recorder.__call__

    def timed(self: launcher.Recorder, event: dict[str, Any]) -> None:
        if event.get("event") == "progress" and isinstance(event.get("tokens"), int):
            samples.append((time.perf_counter(), event["tokens"]))
        original(self, event)

    launcher.Recorder.__call__ = timed  # type: ignore[method-assign]
    try:
        began = time.perf_counter()
        job = services.job_submit(
            actor=bob,
            organisation=bolt,
            grant=grant,
            request=services.JobRequest(
                template="causal_lm", base=BaseModel.objects.get(name=base, owner=None), hyperparameters=hp
            ),
        )
        run_all_work()
        end_to_end = time.perf_counter() - began
    finally:
        launcher.Recorder.__call__ = original  # type: ignore[method-assign]
    job.refresh_from_db()
    if len(samples) < 2:
        return job, float("nan"), 0.0, end_to_end
    t0 = samples[0][0]
    relative = [(t - t0, n) for t, n in samples]
    return job, steady_rate(relative, relative[-1][0]), relative[-1][0], end_to_end


def bench(records: int, seconds: float, base: str, batch_size: int, max_seq_len: int, seed: int) -> int:
    hp: dict[str, Any] = {
        "epochs": 1,
        "batch_size": batch_size,
        "max_seq_len": max_seq_len,
        "learning_rate": 5e-4,
        "seed": seed,
        "validation_fraction": 0.0,
        "log_every": 5,
    }
    t = time.perf_counter()
    version, _alice, _acme, bob, bolt = sealed_version(records, seed)
    print(
        f"corpus: {version.records} records, {version.tokens} platform tokens "
        f"(ingest {time.perf_counter() - t:.1f} s)"
    )
    grant = custody.grant_issue(
        version=version,
        licensee_org=bolt,
        terms={"max_epochs": 100, "weights_may_leave": True, "gate_max_exposure": 64.0},
        external_ref="bench-license",
    )
    stream = custody.grant_stream_open(grant=grant, consumer_ref="bench-bare", purpose="license")
    texts = [record_text(r["text"]) for batch in stream for r in batch]

    bare_rate, epoch_tokens, bare_startup = bare_loop(texts, hp, base, seconds)
    print(f"bare loop:  {bare_rate:,.0f} tokens/s steady ({seconds:.0f} s, start-up {bare_startup:.1f} s)")
    # Enough epochs for the same training time at the bare rate, capped by steps so it is not longer.
    hp["epochs"] = max(1, min(100, math.ceil(bare_rate * seconds * 1.1 / max(epoch_tokens, 1))))
    hp["max_steps"] = max(10, math.ceil(bare_rate * seconds * 1.1 / (batch_size * max_seq_len)))
    job, job_rate, train_seconds, end_to_end = sealroom_job(grant, bob, bolt, hp, base)
    if job.state != "succeeded":
        print(f"sealroom job {job.pk} {job.state}: {job.failure_reason}")
        return 1
    print(
        f"sealroom:   {job_rate:,.0f} tokens/s steady "
        f"({hp['max_steps']} steps, {train_seconds:.1f} s of training; "
        f"end to end {end_to_end:.1f} s incl. sandbox start, stream, gate, artifact, receipt)"
    )
    # The bare loop again, after the job: on a shared machine the load drifts, so the ratio is
    # against the mean of the two bare measurements, and both are printed.
    hp["max_steps"] = None
    after_rate, _, _ = bare_loop(texts, hp, base, seconds)
    print(f"bare loop:  {after_rate:,.0f} tokens/s steady (again, after the job)")
    mean = (bare_rate + after_rate) / 2
    print(
        f"ratio sealroom/bare: {job_rate / mean:.3f}   "
        f"(base {base}, batch {batch_size}, seq {max_seq_len}; load average now {os.getloadavg()[0]:.1f})"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument(
        "--seconds", type=float, default=60.0, help="steady-state seconds of each (default 60)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run (300 records, 8 s)")
    parser.add_argument("--base", default="gpt2-tiny", choices=["gpt2-tiny", "gpt2-124m"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    records, seconds = (QUICK["records"], QUICK["seconds"]) if args.quick else (args.records, args.seconds)
    logging.getLogger("common.audit_checkpoints").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="sealroom-bench-train-") as scratch:
        settings.BLOB_DIR = Path(scratch) / "blobs"
        settings.KEY_DIR = Path(scratch) / "keys"
        settings.AUDIT_EXPORT_DIR = Path(scratch) / "audit-export"
        settings.TRAINING_WORK_DIR = Path(scratch) / "training-work"
        test_settings = connections["default"].settings_dict.setdefault("TEST", {})
        if connections["default"].vendor == "sqlite":
            test_settings["NAME"] = str(Path(scratch) / "bench-train.sqlite3")
        else:
            test_settings["NAME"] = f"test_sealroom_bench_train_{os.getpid()}"
        old_config = setup_databases(verbosity=0, interactive=False, serialized_aliases=set())
        try:
            return bench(records, seconds, args.base, args.batch_size, args.max_seq_len, args.seed)
        finally:
            connections.close_all()
            teardown_databases(old_config, verbosity=0)


if __name__ == "__main__":
    sys.exit(main())
