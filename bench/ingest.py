"""The ingest end to end: records per second for each stage, from upload to a sealed version.

    .venv/bin/python bench/ingest.py [--records 100000] [--quick] [--workers 1|1,2] [--part-mb 4]
                                     [--pii 0.4] [--chars 300] [--seed 7]

Generates a JSON Lines corpus of ticket records (about ``--chars`` characters
of English words in sentences, and a ``topic`` metadata field; a ``--pii``
share of them carry names, e-mail addresses and phone numbers from Faker, with
a fixed seed; 2% are planted exact duplicates and 1% near duplicates), then,
in a throwaway database that it creates and drops (SQLite under a temporary
directory by default, Postgres with DATABASE_URL) with its own blob, key and
audit-export directories, runs what a provider and the workers do, each stage
timed:

- upload: ``contribution_start`` and ``contribution_part_put`` per part
  (``--part-mb``), each part encrypted under the quarantine key as it arrives;
- complete: ``contribution_complete``, which parses the whole upload in the
  request when it is under SEALROOM_SYNC_VALIDATE_MAX_BYTES (the output says
  whether it did), then ``version_process``;
- parse: the ``custody.parse`` work item (decrypt the parts, parse and
  validate, stage the records in encrypted batches of 1000);
- batches: every ``custody.batch`` item (desensitize, platform tokens, screen,
  encrypt one shard each). The parts inside are timed by wrapping, at run time
  and in this process only, ``Desensitizer.desensitize_batch``,
  ``count_tokens``, ``Screener.add``/``state`` and the ingest's ``pack``,
  ``shard_seal``, ``sha256_hex`` and ``_write_shard``; "other" is the rest
  (unsealing the staged batch, audit, bookkeeping);
- finalize: the ``custody.finalize`` item (findings, report);
- review and seal: the exact duplicates found are marked to drop, then
  ``version_seal`` (rewrites the shards that hold them, Merkle root, shred).

Work items run through ``common.work.work_run``, the code a Celery worker
runs, in this process like the tests' ``drain()``; ``--workers N`` (N > 1)
runs the batches in N forked processes, each claiming items by lease, and
their parts are then worker-seconds summed over the processes. The spaCy and
Presidio load is paid once per process before the clock starts and shown
apart. Across the batch parts, the shared services are timed too: every
database query (a Django execute wrapper: round trips and lock waits) and the
blob store's puts. ``--workers 1,2`` runs the whole bench once per count, each
in a fresh database on the same corpus, then prints the batch stage side by
side (speed-up against the first count, records per worker, database ms per
query) and an estimate for one more worker on a machine of its own (see
``scaling_summary``; docs/operations.md "Scaling"). Doorbells go to an
in-memory broker (nothing leaves the process, so Redis is not on this path).
Figures only: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import logging
import multiprocessing
import os
import random
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Doorbells stay in this process: a filesystem or Redis broker would hand item
# ids of this throwaway database to a development worker.
os.environ["CELERY_BROKER_URL"] = "memory://localhost/"

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connections  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402
from faker import Faker  # noqa: E402
from faker.providers.lorem.en_US import Provider as EnglishWords  # noqa: E402

from common import services as common_services  # noqa: E402
from common.models import Organisation, User, WorkItem, WorkState  # noqa: E402
from common.work import work_run  # noqa: E402
from custody import services  # noqa: E402
from custody.desensitize import Desensitizer, Policy  # noqa: E402
from custody.models import DatasetVersion, Finding, VersionState  # noqa: E402
from custody.screening import Screener  # noqa: E402
from custody.services import ingest  # noqa: E402
from custody.tokens import count_tokens  # noqa: E402

MB = 1_000_000
QUICK_RECORDS = 5_000

# PII goes into the prose through short phrases of common words, many phrasings, so
# no fixed sentence recurs across the corpus (screening would rightly flag one
# that recurs in thousands of unrelated records as a possible trigger).
NAME_PHRASES = ["from", "by", "for", "ask", "with", "tell", "and", "to"]
EMAIL_PHRASES = ["email", "write to", "reply to", "contact", "copy", "send it to", "at", "or"]
PHONE_PHRASES = ["call", "phone", "ring", "text", "on", "number", "or", "dial"]
# One string, split: a word per line would fill a screen.
FUNCTION_WORDS = (  # noqa: SIM905
    "the of and to a in is that for it as was with be by on not he I this are or his from at which "
    "but have an they you were her she there been one all we their has would when if so no will can"
).split()
TOPICS = ["billing", "delivery", "account", "returns", "technical"]


class Corpus:
    """Seeded tickets: sentences of English words, names, e-mails and phone numbers in a share."""

    def __init__(self, count: int, seed: int, pii_share: float, chars: int) -> None:
        self.rng = random.Random(seed)
        self.chars = chars
        self.fake = Faker("en_US")
        self.fake.seed_instance(seed)
        # Function words Zipf-weighted, content words uniform: like prose, no two tickets alike.
        self.function_cumulative = list(
            itertools.accumulate(1.0 / (r + 1) for r in range(len(FUNCTION_WORDS)))
        )
        self.content = [w for w in EnglishWords.word_list if w not in FUNCTION_WORDS]
        self.pii_share = pii_share
        self.records: list[dict[str, str]] = []
        self.planted = {"exact": 0, "near": 0, "pii": 0}
        for _ in range(count):
            self.records.append(self._next())

    def _sentence(self) -> str:
        words = [
            self.rng.choices(FUNCTION_WORDS, cum_weights=self.function_cumulative)[0]
            if self.rng.random() < 0.45
            else self.rng.choice(self.content)
            for _ in range(self.rng.randint(6, 14))
        ]
        return " ".join(words).capitalize() + "."

    def _pii(self) -> str:
        kind = self.rng.randrange(3)
        if kind == 0:
            return f"{self.rng.choice(NAME_PHRASES)} {self.fake.name()}"
        if kind == 1:
            return f"{self.rng.choice(EMAIL_PHRASES)} {self.fake.email()}"
        return f"{self.rng.choice(PHONE_PHRASES)} {self.fake.phone_number()}"

    def _text(self) -> str:
        # Stop short of the target: the last sentence, the PII and the prefix fill it up
        # (on average; lengths vary as they do in real tickets).
        sentences = [self._sentence()]
        while sum(len(t) + 1 for t in sentences) < self.chars - 65:
            sentences.append(self._sentence())
        if self.rng.random() < self.pii_share:
            self.planted["pii"] += 1
            for _ in range(self.rng.randint(1, 3)):
                at = self.rng.randrange(len(sentences))
                words = sentences[at].split(" ")
                words.insert(self.rng.randint(1, len(words) - 1), self._pii())
                sentences[at] = " ".join(words)
        return f"Ticket {self.rng.randrange(10**6):06d}: " + " ".join(sentences)

    def _next(self) -> dict[str, str]:
        roll = self.rng.random()
        if self.records and roll < 0.02:
            self.planted["exact"] += 1
            return dict(self.rng.choice(self.records))
        if self.records and roll < 0.03:
            self.planted["near"] += 1
            original = self.rng.choice(self.records)
            return {**original, "text": original["text"] + " Thanks."}
        return {"text": self._text(), "topic": self.rng.choice(TOPICS)}

    def jsonl(self) -> bytes:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records).encode()


class Clock:
    """Seconds spent inside wrapped callables, by part name (per process)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.installed = False

    def wrap(self, owner: object, name: str, part: str) -> None:
        """Replace ``owner.name`` with a timed wrapper (at run time, in this process only)."""
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - began

        setattr(owner, name, timed)

    def install(self) -> None:
        """Wrap the parts, once per process (a second bench run in it must not time them twice)."""
        if self.installed:
            return
        self.installed = True
        self.wrap(Desensitizer, "desensitize_batch", "desensitize")
        self.wrap(ingest, "count_tokens", "tokens")
        self.wrap(Screener, "add", "screening")
        self.wrap(Screener, "state", "screening")
        self.wrap(ingest, "_write_shard", "write shard")
        self.wrap(ingest, "pack", "pack")
        self.wrap(ingest, "shard_seal", "shard_seal")
        self.wrap(ingest, "sha256_hex", "sha256")

    def database(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        """A Django execute wrapper: seconds in the database (round trips, lock waits) and queries."""
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds["database"] = self.seconds.get("database", 0.0) + time.perf_counter() - began
            self.seconds["queries"] = self.seconds.get("queries", 0.0) + 1

    def snapshot(self) -> dict[str, float]:
        return dict(self.seconds)


CLOCK = Clock()


def warm_up() -> float:
    """Load spaCy, Presidio and the tokenizer in this process; returns the seconds it took."""
    began = time.perf_counter()
    Desensitizer(Policy(), os.urandom(32)).desensitize_batch(["Warm up: call Jane Roe on 555-0100."])
    count_tokens(["warm up"])
    return time.perf_counter() - began


def drain(kind: str, owner: str) -> dict[str, int]:
    """Run queued items of ``kind`` until none is left (what the tests' drain does, for one kind)."""
    outcomes: dict[str, int] = {}
    while True:
        queued = list(
            WorkItem.objects.filter(state=WorkState.QUEUED, kind=kind)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if not queued:
            return outcomes
        for item_id in queued:
            outcome = work_run(item_id=item_id, owner=owner)
            outcomes[outcome] = outcomes.get(outcome, 0) + 1


def _batch_worker(number: int, barrier: Any, results: Any) -> None:
    """A forked worker: load the models, wait for the others, then claim batches until none is left.

    Reports ``(load seconds, parts, outcomes)``, with its busy seconds as part "busy",
    or ``(None, error, {})`` when it failed, so the parent never waits forever.
    """
    try:
        load = warm_up()
        barrier.wait()
        before = CLOCK.snapshot()
        began, cpu = time.perf_counter(), time.process_time()
        with connections["default"].execute_wrapper(CLOCK.database):
            outcomes = drain("custody.batch", owner=f"bench-worker-{number}")
        parts = {k: v - before.get(k, 0.0) for k, v in CLOCK.snapshot().items()}
        parts["busy"] = time.perf_counter() - began
        parts["cpu"] = time.process_time() - cpu
        results.put((load, parts, outcomes))
    except BaseException as exc:  # noqa: BLE001 - reported by the parent
        barrier.abort()
        results.put((None, f"worker {number}: {type(exc).__name__}: {exc}", {}))
    finally:
        connections.close_all()


def run_batches_forked(workers: int) -> tuple[float, float, dict[str, float], dict[str, int]]:
    """Run the batch items in ``workers`` forked processes; (wall s, load s, parts, outcomes).

    The parts, "busy" among them, are summed over the processes (worker-seconds).
    """
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(workers + 1)
    results = context.Queue()
    connections.close_all()  # a forked child must open its own connection
    processes = [context.Process(target=_batch_worker, args=(n, barrier, results)) for n in range(workers)]
    for process in processes:
        process.start()
    # A broken barrier means a worker failed while loading: its report says why.
    with contextlib.suppress(threading.BrokenBarrierError):
        barrier.wait()
    began = time.perf_counter()
    reports = [results.get() for _ in processes]
    wall = time.perf_counter() - began
    for process in processes:
        process.join()
    errors = [str(parts) for load, parts, _ in reports if load is None]
    if errors:
        raise SystemExit("; ".join(errors))
    parts: dict[str, float] = {}
    outcomes: dict[str, int] = {}
    for _load, worker_parts, worker_outcomes in reports:
        for key, value in worker_parts.items():
            parts[key] = parts.get(key, 0.0) + value
        for key, count in worker_outcomes.items():
            outcomes[key] = outcomes.get(key, 0) + count
    return wall, max(r[0] for r in reports), parts, outcomes


class Report:
    """The stage table: seconds and records/s per stage, parts indented below their stage."""

    def __init__(self, records: int) -> None:
        self.records = records
        self.rows: list[tuple[str, float, str]] = []
        self.total = 0.0
        # CPU time over the stages (this process, and the batch workers with --workers N):
        # on a busy machine, records per CPU-second says more than records per wall second.
        self.cpu = 0.0

    @contextlib.contextmanager
    def stage(self, label: str, note: str = "") -> Iterator[None]:
        began, cpu = time.perf_counter(), time.process_time()
        yield
        spent = time.perf_counter() - began
        self.total += spent
        self.cpu += time.process_time() - cpu
        self.rows.append((label, spent, note))

    def part(self, label: str, seconds: float, note: str = "") -> None:
        self.rows.append(("  " + label, seconds, note))

    def print(self) -> None:
        print(f"  {'stage':<54} {'seconds':>9} {'records/s':>10}")
        for label, seconds, note in self.rows:
            rate = self.records / seconds if seconds > 0 else float("inf")
            print(f"  {label:<54} {seconds:9.2f} {rate:10.0f}  {note}".rstrip())
        print(f"  {'total, upload to sealed':<54} {self.total:9.2f} {self.records / self.total:10.0f}")
        if self.cpu > 0:
            print(
                f"  {'CPU time, all processes, upload to sealed':<54} {self.cpu:9.2f} "
                f"{self.records / self.cpu:10.0f}  records per CPU-second; load average "
                + " / ".join(f"{x:.2f}" for x in os.getloadavg())
            )

    def add(self, label: str, seconds: float, note: str = "", cpu: float = 0.0) -> None:
        self.total += seconds
        self.cpu += cpu
        self.rows.append((label, seconds, note))


def check_outcomes(kind: str, outcomes: dict[str, int]) -> None:
    """Stop with the recorded errors when an item failed (a bench of a broken pipeline says nothing)."""
    failed = WorkItem.objects.filter(kind=kind).exclude(state=WorkState.DONE)
    if failed.exists():
        for item in failed[:5]:
            print(f"  {item.kind} {item.ref}: {item.state} {item.last_error}", file=sys.stderr)
        raise SystemExit(f"{kind}: {failed.count()} items did not finish ({outcomes})")


def provider() -> tuple[User, Organisation]:
    user, organisation = common_services.organisation_signup(
        username="bench-provider",
        email="bench-provider@example.test",
        password=secrets.token_urlsafe(24),  # nobody logs in: the bench acts through services
        organisation_name="Bench Corpora",
        is_provider=True,
        is_trainer=False,
    )
    return user, organisation


def upload(
    report: Report,
    user: User,
    organisation: Organisation,
    version: DatasetVersion,
    data: bytes,
    part_mb: float,
) -> None:
    size = max(1, int(part_mb * 1024 * 1024))
    parts = -(-len(data) // size)
    with report.stage(f"upload: {parts} parts, encrypted as they arrive"):
        contribution = services.contribution_start(
            actor=user,
            organisation=organisation,
            version=version,
            filename="tickets.jsonl",
            metadata_fields=["topic"],
        )
        for number, start in enumerate(range(0, len(data), size), start=1):
            services.contribution_part_put(
                contribution=contribution, number=number, data=data[start : start + size]
            )
    in_request = len(data) <= settings.SYNC_VALIDATE_MAX_BYTES
    note = (
        "parsed in the request" if in_request else "over SYNC_VALIDATE_MAX_BYTES: parsed by the worker only"
    )
    with report.stage("complete + version_process", note):
        services.contribution_complete(actor=user, contribution=contribution)
        services.version_process(actor=user, version=version)


def batches(report: Report, workers: int) -> tuple[float, dict[str, float]]:
    """Run every batch item, add the stage and its parts; returns the model load seconds and
    the figures the scaling summary compares (wall, busy and CPU seconds, shared services)."""
    items = WorkItem.objects.filter(kind="custody.batch").count()
    if workers <= 1:
        load = warm_up()
        before, cpu = CLOCK.snapshot(), time.process_time()
        with (
            report.stage(f"batches: {items} x custody.batch, in this process"),
            connections["default"].execute_wrapper(CLOCK.database),
        ):
            outcomes = drain("custody.batch", owner="bench")
        parts = {k: v - before.get(k, 0.0) for k, v in CLOCK.snapshot().items()}
        parts["cpu"] = time.process_time() - cpu
        busy, unit = report.rows[-1][1], "s"
        wall = busy
        label, seconds, _ = report.rows[-1]
        report.rows[-1] = (label, seconds, f"{parts['cpu']:.1f} CPU-s")
    else:
        wall, load, parts, outcomes = run_batches_forked(workers)
        busy, unit = parts["busy"], "worker-s"
        idle = wall * workers - busy
        report.add(
            f"batches: {items} x custody.batch, {workers} processes",
            wall,
            f"{busy:.1f} worker-s busy ({parts['cpu']:.1f} CPU-s), {idle:.1f} idle at the end",
            cpu=parts["cpu"],
        )
    check_outcomes("custody.batch", outcomes)
    shown = {
        "desensitize (Desensitizer.desensitize_batch)": parts.get("desensitize", 0.0),
        "platform tokens (count_tokens)": parts.get("tokens", 0.0),
        "screening (Screener.add, state)": parts.get("screening", 0.0),
        "write shard (_write_shard)": parts.get("write shard", 0.0),
    }
    encrypt = sum(parts.get(k, 0.0) for k in ("pack", "shard_seal", "sha256"))
    other = busy - sum(shown.values())
    for label, seconds in [
        *list(shown.items())[:3],
        ("write shard (_write_shard)", shown["write shard (_write_shard)"]),
        ("  of which encrypt (pack + shard_seal + sha256)", encrypt),
        ("other (unseal staged batch, audit, bookkeeping)", other),
    ]:
        report.part(label, seconds, f"{100 * seconds / busy:4.1f}% of batch {unit}")
    # The shared services, across the parts above: every query's time in the database (round
    # trips, lock waits included) and the blob store's part of writing a shard.
    database, queries = parts.get("database", 0.0), int(parts.get("queries", 0))
    blob = shown["write shard (_write_shard)"] - encrypt
    report.part(
        "shared: database (all queries; overlaps the above)",
        database,
        f"{100 * database / busy:4.1f}% of batch {unit}; {queries} queries, "
        f"{1000 * database / max(queries, 1):.2f} ms each",
    )
    report.part(
        "shared: blob store puts (in write shard)", blob, f"{100 * blob / busy:4.1f}% of batch {unit}"
    )
    lost, retried = outcomes.get("skipped", 0), outcomes.get("retrying", 0)
    if lost or retried:
        print(f"  note: {lost} claims lost to another process (normal), {retried} attempts retried")
    figures = {
        "items": float(items),
        "wall": wall,
        "busy": busy,
        "cpu": parts["cpu"],
        "database": database,
        "queries": float(queries),
        "blob": blob,
    }
    return load, figures


def review_and_seal(report: Report, user: User, version: DatasetVersion) -> DatasetVersion:
    with report.stage("finalize: custody.finalize (findings, report)"):
        outcomes = drain("custody.finalize", owner="bench")
    check_outcomes("custody.finalize", outcomes)
    version.refresh_from_db()
    exact = list(Finding.objects.filter(version=version, kind="exact_duplicate").values_list("pk", flat=True))
    with report.stage(f"review: mark {len(exact)} exact duplicates to drop"):
        services.findings_mark(actor=user, version=version, finding_ids=exact, drop=True)
    estimate = services.version_residual_estimate(version=version)
    if estimate is not None and estimate.sampled:
        # The bench's Faker records are what they are: seal anyway, and say what the strict detector saw.
        rows = ", ".join(f"{r.entity_type} {r.rate:.1%}" for r in estimate.rows if r.hits)
        print(
            f"  residual-risk estimate: {estimate.any.rate:.1%} of {estimate.sampled} sampled records "
            f"({rows or 'nothing found'}); sealing confirmed"
        )
    with report.stage("seal: drops, Merkle root, shred quarantine"):
        return services.version_seal(actor=user, version=version, confirm_residual_risk=True)


def bench(
    records: int, workers: int, part_mb: float, seed: int, pii_share: float, chars: int
) -> tuple[int, dict[str, float]]:
    began = time.perf_counter()
    corpus = Corpus(records, seed, pii_share, chars)
    data = corpus.jsonl()
    planted = corpus.planted
    print(
        f"ingest bench on {connections['default'].vendor}: {records} records, "
        f"{len(data) / MB:.1f} MB of JSON Lines ({planted['pii']} with PII, {planted['exact']} exact "
        f"and {planted['near']} near duplicates planted; generated in {time.perf_counter() - began:.1f} s)"
    )
    CLOCK.install()
    user, organisation = provider()
    dataset = services.dataset_create(actor=user, organisation=organisation, name="Bench tickets")
    version = services.version_create(actor=user, dataset=dataset)
    report = Report(records)
    upload(report, user, organisation, version, data, part_mb)
    with report.stage("parse: custody.parse (decrypt, parse, stage batches)"):
        outcomes = drain("custody.parse", owner="bench")
    check_outcomes("custody.parse", outcomes)
    load, figures = batches(report, workers)
    sealed = review_and_seal(report, user, version)
    report.print()
    print(f"  {'model load, once per worker process (not in total)':<54} {load:9.2f}")
    summary = sealed.report
    print(
        f"result: {sealed.state}, {sealed.records} records and {sealed.tokens} platform tokens in "
        f"{sealed.shards.count()} shards"
    )
    print(f"  findings {dict(summary.findings_summary)}")
    print(f"  entities {summary.counts.get('entities', {})}")
    return (0 if sealed.state == VersionState.SEALED else 1), figures


def scaling_summary(records: int, runs: dict[int, dict[str, float]]) -> None:
    """The batch stage side by side per worker count, the speed-up against the first count (the
    reference, same corpus, same run), and what one more machine would add.

    The estimate gives each worker its own cores (another machine) and keeps only what the workers
    share: a worker's time per record outside the database stays as measured alone, its database
    time grows as much per added worker as it did from the first count to the last.
    """
    counts = sorted(runs)
    base = runs[counts[0]]
    base_rate = records / base["wall"]
    cores = os.cpu_count() or 0
    print(f"scaling: the batch stage ({records} records), each count in a fresh database, {cores} CPU cores")
    print(
        f"  {'workers':>7} {'wall s':>8} {'records/s':>10} {'x ref':>6} {'per worker':>11} "
        f"{'rec/CPU-s':>10} {'DB ms/query':>12} {'DB share':>9} {'blob share':>11}"
    )
    for count in counts:
        run = runs[count]
        rate = records / run["wall"]
        print(
            f"  {count:>7} {run['wall']:8.2f} {rate:10.0f} {rate / base_rate:6.2f} {rate / count:11.0f} "
            f"{records / run['cpu']:10.0f} {1000 * run['database'] / max(run['queries'], 1):12.2f} "
            f"{100 * run['database'] / run['busy']:8.1f}% {100 * run['blob'] / run['busy']:10.1f}%"
        )
    last = runs[counts[-1]]
    if len(counts) < 2:
        return
    per_query = [runs[c]["database"] / max(runs[c]["queries"], 1) for c in counts]
    # Contention only slows a query down: a faster mean with more workers is noise, not a gain.
    growth = max(0.0, (per_query[-1] - per_query[0]) / (counts[-1] - counts[0]))
    queries_per_record = base["queries"] / records
    outside = (base["busy"] - base["database"]) / records  # a worker's own seconds per record
    machines = counts[-1] + 1
    expected = per_query[0] + growth * (machines - 1)
    seconds = outside + queries_per_record * expected
    print(
        f"  estimate, {machines} workers on machines of their own: {machines / seconds:.0f} records/s "
        f"({machines / seconds / base_rate:.2f} x ref; database {1000 * expected:.2f} ms/query, "
        f"measured {1000 * per_query[0]:.2f} -> {1000 * per_query[-1]:.2f} "
        f"from {counts[0]} to {counts[-1]} workers)"
    )
    per_second = base["queries"] / base["busy"]
    print(
        f"  each worker asks the database {per_second:.1f} queries/s ({base['queries'] / records * 1000:.0f} "
        f"per 1,000 records) and spends {100 * base['blob'] / base['busy']:.1f}% of its time writing blobs"
    )
    print(
        f"  load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"{last['items']:.0f} batch items per run"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="records in the corpus (default 100000)")
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {QUICK_RECORDS} records")
    parser.add_argument(
        "--workers",
        default="1",
        help="batch processes; 1 runs them in this process; a list (1,2) runs each in turn and compares",
    )
    parser.add_argument("--part-mb", type=float, default=4, help="upload part size in MiB (default 4)")
    parser.add_argument("--pii", type=float, default=0.4, help="share of records with PII (default 0.4)")
    parser.add_argument("--chars", type=int, default=300, help="characters of text per record (default 300)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    records = QUICK_RECORDS if args.quick else args.records
    # Each audit checkpoint export logs a line at INFO; the figures are what this prints.
    logging.getLogger("common.audit_checkpoints").setLevel(logging.WARNING)

    try:
        counts = [int(part) for part in args.workers.split(",")]
    except ValueError:
        parser.error(f"--workers must be a number or a list like 1,2, not {args.workers!r}")
    print(f"load average before: {' / '.join(f'{x:.2f}' for x in os.getloadavg())}")
    runs: dict[int, dict[str, float]] = {}
    status = 0
    for workers in counts:
        code, runs[workers] = run_in_fresh_database(records, workers, args)
        status = status or code
    if len(counts) > 1:
        scaling_summary(records, runs)
    return status


def run_in_fresh_database(
    records: int, workers: int, args: argparse.Namespace
) -> tuple[int, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="sealroom-bench-ingest-") as scratch:
        settings.BLOB_DIR = Path(scratch) / "blobs"
        settings.KEY_DIR = Path(scratch) / "keys"
        settings.AUDIT_EXPORT_DIR = Path(scratch) / "audit-export"
        test_settings = connections["default"].settings_dict.setdefault("TEST", {})
        if connections["default"].vendor == "sqlite":
            test_settings["NAME"] = str(Path(scratch) / "bench-ingest.sqlite3")
        else:
            test_settings["NAME"] = f"test_sealroom_bench_ingest_{os.getpid()}"
        old_config = setup_databases(verbosity=0, interactive=False, serialized_aliases=set())
        try:
            return bench(records, workers, args.part_mb, args.seed, args.pii, args.chars)
        finally:
            connections.close_all()
            teardown_databases(old_config, verbosity=0)


if __name__ == "__main__":
    sys.exit(main())
