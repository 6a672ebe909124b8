"""Audit log throughput: appends until integrated against plain inserts, and verification speed.

    .venv/bin/python bench/audit.py [--events 4000] [--writers 8 16] [--rounds 4] [--verify-events 50000]

Runs on the configured backend (SQLite by default, Postgres with
DATABASE_URL) in a throwaway database that it creates and drops, with its
own key and export directories: it never touches the development data.

Prints, from one run, for each ``--writers`` count:
- audited appends per second, integration included: ``--writers`` threads,
  each calling ``audit_record`` in its own transaction (a pending insert; the
  sequencer runs after each commit, combining threads, and signs checkpoints
  when due); the clock stops when the last event has its seq and chain hash;
- the reference: plain inserts of the same columns and indexes into a table
  of its own, same threads, one transaction each, no chain;
- their ratio, and how many events the writers' commits left to the final
  sequencer run (what beat's sweep would integrate within the merge delay);
  the two alternate in ``--rounds`` rounds (plain, audit, plain, audit, ...),
  so a shared machine's load, which comes and goes, weighs on both alike;
- verification speed: ``audit_verify`` over a chain of ``--verify-events``.

Figures only: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, connections, models, transaction  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402
from django.utils import timezone  # noqa: E402

from common.audit import audit_integrate, audit_pending, audit_record, chain_head_lock, event_hash  # noqa: E402
from common.audit_checkpoints import checkpoint_tick  # noqa: E402
from common.audit_verify import audit_verify  # noqa: E402
from common.models import AuditEvent  # noqa: E402


class PlainEvent(models.Model):
    """The reference: the audit event's columns and indexes, without chain or head lock."""

    seq = models.BigIntegerField(unique=True)
    at = models.DateTimeField()
    actor_id = models.BigIntegerField(null=True)
    actor_name = models.CharField(max_length=254)
    organisation_id = models.BigIntegerField(null=True)
    organisation_name = models.CharField(max_length=120)
    action = models.CharField(max_length=80)
    object_type = models.CharField(max_length=80)
    object_id = models.CharField(max_length=80)
    details = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    objects: models.Manager[PlainEvent] = models.Manager()

    class Meta:
        app_label = "bench"
        db_table = "bench_plain_event"
        managed = False
        indexes = [
            models.Index(fields=["organisation_id", "at"], name="bench_plain_org_at"),
            models.Index(fields=["action", "at"], name="bench_plain_action_at"),
            models.Index(fields=["actor_id", "at"], name="bench_plain_actor_at"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action}"


def audit_append(writer: int, n: int) -> None:
    with transaction.atomic():
        audit_record(
            action="bench.append",
            actor_name=f"writer-{writer}",
            object_type="bench",
            object_id=n,
            details={"writer": writer, "n": n},
        )


def plain_insert(writer: int, n: int, *, offset: int = 0) -> None:
    with transaction.atomic():
        PlainEvent.objects.create(
            # Unique per writer without coordination: no shared counter to lock.
            seq=writer * 1_000_000_000 + offset + n,
            at=timezone.now(),
            actor_name=f"writer-{writer}",
            action="bench.append",
            object_type="bench",
            object_id=str(n),
            details={"writer": writer, "n": n},
            prev_hash="0" * 64,
            hash="0" * 64,
        )


def run_writers(write: Callable[[int, int], None], *, writers: int, total: int) -> float:
    """Run ``total`` writes spread over ``writers`` threads; returns the wall seconds."""
    per_writer = [total // writers + (1 if w < total % writers else 0) for w in range(writers)]
    start = threading.Barrier(writers + 1)
    errors: list[BaseException] = []

    def work(writer: int) -> None:
        try:
            start.wait()
            for n in range(per_writer[writer]):
                write(writer, n)
        except BaseException as exc:  # noqa: BLE001 - reported below, from the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise errors[0]
    return elapsed


def extend_chain(total: int) -> None:
    """Append valid events in bulk until the chain holds ``total`` (a fast way to a long chain)."""
    with transaction.atomic():
        head = chain_head_lock()
        seq, prev_hash, batch = head.seq, head.hash, []
        while seq < total:
            seq += 1
            event = AuditEvent(
                seq=seq,
                at=timezone.now(),
                actor_name="bench",
                action="bench.bulk",
                object_type="bench",
                object_id=str(seq),
                details={"n": seq},
                prev_hash=prev_hash,
            )
            event.hash = prev_hash = event_hash(event)
            batch.append(event)
            if len(batch) == 2000:
                AuditEvent.objects.bulk_create(batch)
                batch = []
        AuditEvent.objects.bulk_create(batch)
        head.seq, head.hash = seq, prev_hash
        head.save(update_fields=["seq", "hash"])


def audit_until_integrated(*, writers: int, total: int) -> tuple[float, int]:
    """Audited appends from ``writers`` threads, timed until every event is integrated.

    Returns the wall seconds and how many events the writers' after-commit
    sequencer runs left pending (integrated by the final run, as beat's sweep would).
    """
    began = time.perf_counter()
    run_writers(audit_append, writers=writers, total=total)
    left = audit_pending().count
    audit_integrate()
    return time.perf_counter() - began, left


def bench_writers(events: int, writers: int, rounds: int) -> None:
    # Warm both paths (connections, key generation, statement caches) untimed.
    run_writers(plain_insert, writers=writers, total=writers)
    PlainEvent.objects.all().delete()
    audit_until_integrated(writers=writers, total=writers)

    plain_s = audit_s = 0.0
    left = 0
    for r in range(rounds):
        share = events // rounds + (1 if r < events % rounds else 0)
        plain_s += run_writers(
            functools.partial(plain_insert, offset=r * 100_000_000), writers=writers, total=share
        )
        elapsed, round_left = audit_until_integrated(writers=writers, total=share)
        audit_s, left = audit_s + elapsed, left + round_left
    PlainEvent.objects.all().delete()
    plain_rate, audit_rate = events / plain_s, events / audit_s
    assert audit_pending().count == 0, "the figure counts integrated events only"

    print(
        f"audit log bench on {connection.vendor} ({writers} writer threads, {events} writes each way,"
        f" in {rounds} alternating rounds)"
    )
    print(
        f"  audit appends (integrated):  {audit_rate:9.0f} events/s  ({events} in {audit_s:.2f} s;"
        f" {left} left to the final sequencer run)"
    )
    print(f"  plain inserts (reference):   {plain_rate:9.0f} rows/s    ({events} in {plain_s:.2f} s)")
    ratio = audit_rate / plain_rate
    print(f"  ratio audit/plain:           {ratio:9.2f}")


def bench(events: int, writer_counts: list[int], verify_events: int, rounds: int = 4) -> int:
    with connection.schema_editor() as editor:
        editor.create_model(PlainEvent)
    print(f"load average: {' '.join(f'{load:.2f}' for load in os.getloadavg())} ({os.cpu_count()} cores)")
    for writers in writer_counts:
        bench_writers(events, writers, rounds)
    print(f"load average at the end: {' '.join(f'{load:.2f}' for load in os.getloadavg())}")

    extend_chain(max(verify_events, AuditEvent.objects.count()))
    checkpoint_tick()
    began = time.perf_counter()
    report = audit_verify()
    verify_s = time.perf_counter() - began

    print(
        f"  verification:                {report.events_checked / verify_s:9.0f} events/s  "
        f"({report.events_checked} events, {report.checkpoints_checked} checkpoints in {verify_s:.2f} s)"
    )
    print(f"  verify result:               {report.summary_lines()[-1]}")
    return 0 if report.ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000, help="writes per variant (default 4000)")
    parser.add_argument(
        "--writers",
        type=int,
        nargs="+",
        default=[8, 16],
        help="concurrent writer threads, one run each (8 16)",
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="alternating rounds of each variant (default 4)"
    )
    parser.add_argument(
        "--verify-events", type=int, default=50_000, help="chain length to verify (default 50000)"
    )
    args = parser.parse_args()
    # Each export logs a line at INFO; the figures are what this prints.
    logging.getLogger("common.audit_checkpoints").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="sealroom-bench-audit-") as scratch:
        settings.KEY_DIR = Path(scratch) / "keys"
        settings.AUDIT_EXPORT_DIR = Path(scratch) / "audit-export"
        test_settings = connections["default"].settings_dict.setdefault("TEST", {})
        if connections["default"].vendor == "sqlite":
            test_settings["NAME"] = str(Path(scratch) / "bench-audit.sqlite3")
        else:
            test_settings["NAME"] = f"test_sealroom_bench_audit_{os.getpid()}"
        old_config = setup_databases(verbosity=0, interactive=False, serialized_aliases=set())
        try:
            return bench(args.events, args.writers, args.verify_events, max(args.rounds, 1))
        finally:
            connections.close_all()
            teardown_databases(old_config, verbosity=0)


if __name__ == "__main__":
    sys.exit(main())
