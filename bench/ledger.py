"""Ledger throughput: balanced multi-leg transactions against plain inserts, with latency.

    .venv/bin/python bench/ledger.py [--transactions 4000] [--clients 16] [--legs 4] [--rounds 4]
                                       [--processes]

Runs on the configured backend (SQLite by default, Postgres with
DATABASE_URL) in a throwaway database that it creates and drops, with its
own key and export directories: it never touches the development data.

Prints, from one run, for ``--clients`` threads (``--processes``: forked
processes, like a web server's workers) each posting in its own transaction:
- ledger posts: ``ledger_post`` of one settlement-shaped transaction, a
  buyer organisation's balance (one per client, pre-funded) to ``--legs - 2``
  rights-holder payables shared by all clients and the platform fee account
  (the buyer's row lock, the overdraft check, the audit append, and on
  Postgres the deferred zero-sum and append-only triggers; the shared
  payables and fee account take no lock);
- the reference: the same rows (one transaction, ``--legs`` postings) as
  plain inserts into tables of its own: no locks, no audit, no triggers;
- transactions per second and p50/p99 latency of each, and their ratio; the two
  alternate in ``--rounds`` rounds (plain, ledger, plain, ledger, ...), so a
  shared machine's load, which comes and goes, weighs on both alike;
- the audit events the run left pending for the sequencer (appends take no
  lock; the sequencer thread integrates them after the commits) and the time
  the last of them took to integrate;
- the load average when the run began and when it ended (figures from a busy machine say so).

Figures only: nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import functools
import logging
import multiprocessing
import os
import statistics
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

from common.audit import audit_integrate, audit_pending  # noqa: E402
from common.models import Organisation  # noqa: E402
from marketplace.ledger import (  # noqa: E402
    ledger_check,
    ledger_post,
    organisation_balance_account,
    payable_account,
    platform_account,
    split,
)
from marketplace.models import AccountKind, LedgerAccount  # noqa: E402

PRICE = 1_000  # minor units per transaction
FEE_BPS = 1_500


class PlainTransaction(models.Model):
    """The reference: a ledger transaction's columns, without triggers."""

    kind = models.CharField(max_length=64)
    idempotency_key = models.CharField(max_length=200, unique=True)
    memo = models.TextField(default="")
    created_at = models.DateTimeField()

    objects: models.Manager[PlainTransaction] = models.Manager()

    class Meta:
        app_label = "bench"
        db_table = "bench_plain_transaction"
        managed = False

    def __str__(self) -> str:
        return self.idempotency_key


class PlainPosting(models.Model):
    """The reference: a posting's columns and indexes, without triggers."""

    transaction = models.ForeignKey(PlainTransaction, on_delete=models.CASCADE)
    account = models.ForeignKey(LedgerAccount, on_delete=models.CASCADE, related_name="+")
    amount = models.BigIntegerField()

    objects: models.Manager[PlainPosting] = models.Manager()

    class Meta:
        app_label = "bench"
        db_table = "bench_plain_posting"
        managed = False

    def __str__(self) -> str:
        return f"{self.amount:+d}"


Legs = list[tuple[LedgerAccount, int]]


def settlement_legs(buyer: LedgerAccount, holders: list[LedgerAccount], fee: LedgerAccount) -> Legs:
    parts = split(PRICE, {account.pk: 1 for account in holders}, FEE_BPS)
    by_pk = {account.pk: account for account in holders}
    return [(buyer, -PRICE), (fee, parts.fee), *((by_pk[pk], amount) for pk, amount in parts.parts.items())]


def run_clients(
    post: Callable[[int, int], None], *, clients: int, total: int, processes: bool
) -> tuple[float, list[float]]:
    """Run ``total`` posts over ``clients`` threads or processes; returns wall seconds and latencies."""
    per_client = [total // clients + (1 if c < total % clients else 0) for c in range(clients)]
    if processes:
        return _run_processes(post, per_client)
    start = threading.Barrier(clients + 1)
    latencies: list[float] = []
    errors: list[BaseException] = []

    def work(client: int) -> None:
        try:
            start.wait()
            latencies.extend(_timed_posts(post, client, per_client[client]))
        except BaseException as exc:  # noqa: BLE001 - reported below, from the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(c,)) for c in range(len(per_client))]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise errors[0]
    return elapsed, latencies


def _timed_posts(post: Callable[[int, int], None], client: int, count: int) -> list[float]:
    latencies = []
    for n in range(count):
        began = time.perf_counter()
        post(client, n)
        latencies.append(time.perf_counter() - began)
    return latencies


def _run_processes(post: Callable[[int, int], None], per_client: list[int]) -> tuple[float, list[float]]:
    # Forked, like a web server's worker processes: no shared interpreter lock between clients.
    context = multiprocessing.get_context("fork")
    start = context.Barrier(len(per_client) + 1)
    results = context.Queue()
    connections.close_all()  # each child opens its own

    def work(client: int) -> None:
        try:
            connection.ensure_connection()
            start.wait()
            results.put(("ok", _timed_posts(post, client, per_client[client])))
        except BaseException as exc:  # noqa: BLE001 - reported by the parent
            results.put(("error", repr(exc)))
        finally:
            connection.close()

    children = [context.Process(target=work, args=(c,)) for c in range(len(per_client))]
    for child in children:
        child.start()
    start.wait()
    began = time.perf_counter()
    outcomes = [results.get() for _child in children]
    elapsed = time.perf_counter() - began
    for child in children:
        child.join()
    errors = [detail for status, detail in outcomes if status == "error"]
    if errors:
        raise RuntimeError(f"{len(errors)} clients failed, the first with {errors[0]}")
    return elapsed, [latency for _status, latencies in outcomes for latency in latencies]


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def report(label: str, total: int, elapsed: float, latencies: list[float]) -> float:
    rate = total / elapsed
    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    print(
        f"  {label:30} {rate:8.0f} txn/s   p50 {p50:7.2f} ms   p99 {p99:7.2f} ms"
        f"   ({total} in {elapsed:.2f} s)"
    )
    return rate


def round_shares(total: int, rounds: int) -> list[int]:
    """``total`` split into ``rounds`` near-equal parts."""
    return [total // rounds + (1 if r < total % rounds else 0) for r in range(rounds)]


def bench(total: int, clients: int, legs: int, processes: bool, rounds: int = 4) -> int:
    with connection.schema_editor() as editor:
        editor.create_model(PlainTransaction)
        editor.create_model(PlainPosting)
    external = platform_account(kind=AccountKind.EXTERNAL_FUNDING, currency="EUR")
    fee = platform_account(kind=AccountKind.PLATFORM_FEE, currency="EUR")
    holders = [
        payable_account(
            organisation=Organisation.objects.create(
                name=f"Holder {h}", slug=f"holder-{h}", is_provider=True
            ),
            currency="EUR",
        )
        for h in range(max(legs - 2, 1))
    ]
    buyers = []
    for c in range(clients):
        org = Organisation.objects.create(name=f"Buyer {c}", slug=f"buyer-{c}", is_trainer=True)
        buyer = organisation_balance_account(organisation=org, currency="EUR")
        funding = PRICE * (total + clients * 4)
        ledger_post(
            kind="funding.topup", postings=[(external, -funding), (buyer, funding)], idempotency_key=f"f{c}"
        )
        buyers.append(buyer)
    shapes = [settlement_legs(buyer, holders, fee) for buyer in buyers]

    def ledger(client: int, n: int, *, prefix: str = "") -> None:
        ledger_post(kind="bench.settle", postings=shapes[client], idempotency_key=f"{prefix}{client}-{n}")

    def plain(client: int, n: int, *, prefix: str = "") -> None:
        with transaction.atomic():
            txn = PlainTransaction.objects.create(
                kind="bench.settle", idempotency_key=f"{prefix}{client}-{n}", created_at=timezone.now()
            )
            PlainPosting.objects.bulk_create(
                PlainPosting(transaction=txn, account=account, amount=amount)
                for account, amount in shapes[client]
            )

    # Warm both paths (connections, statement caches) untimed.
    run = functools.partial(run_clients, clients=clients, processes=processes)
    run(lambda c, n: plain(c, n, prefix="warm-"), total=clients * 2)
    run(lambda c, n: ledger(c, n, prefix="warm-"), total=clients * 2)

    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    plain_s = ledger_s = 0.0
    plain_lat: list[float] = []
    ledger_lat: list[float] = []
    for r, share in enumerate(round_shares(total, rounds)):
        elapsed, latencies = run(functools.partial(plain, prefix=f"r{r}-"), total=share)
        plain_s, plain_lat = plain_s + elapsed, plain_lat + latencies
        elapsed, latencies = run(functools.partial(ledger, prefix=f"r{r}-"), total=share)
        ledger_s, ledger_lat = ledger_s + elapsed, ledger_lat + latencies
    load_end = " ".join(f"{value:.2f}" for value in os.getloadavg())
    left = audit_pending().count
    began = time.perf_counter()
    audit_integrate(wait=True)
    drain_s = time.perf_counter() - began

    print(
        f"ledger bench on {connection.vendor}"
        f" ({clients} client {'processes' if processes else 'threads'},"
        f" {total} transactions of {legs} legs each way, in {rounds} alternating rounds)"
    )
    ledger_rate = report("ledger_post (locks, audit)", total, ledger_s, ledger_lat)
    plain_rate = report("plain inserts (reference)", total, plain_s, plain_lat)
    print(f"  ratio ledger/plain:            {ledger_rate / plain_rate:8.2f}")
    print(f"  audit events left pending:     {left:8d}   (integrated {drain_s * 1000:.0f} ms after the run)")
    print(f"  load average at start / end:   {load} / {load_end} ({os.cpu_count()} cores)")
    problems = ledger_check()
    print(f"  ledger_check:                  {'sound' if not problems else problems[:3]}")
    return 0 if not problems else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=4000, help="posts per variant (default 4000)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent client threads (default 16)")
    parser.add_argument(
        "--legs", type=int, default=4, help="postings per transaction, at least 3 (default 4)"
    )
    parser.add_argument(
        "--processes", action="store_true", help="clients as forked processes (default: threads)"
    )
    parser.add_argument(
        "--rounds", type=int, default=4, help="alternating rounds of each variant (default 4)"
    )
    args = parser.parse_args()
    logging.getLogger("common.audit_checkpoints").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="sealroom-bench-ledger-") as scratch:
        settings.KEY_DIR = Path(scratch) / "keys"
        settings.AUDIT_EXPORT_DIR = Path(scratch) / "audit-export"
        test_settings = connections["default"].settings_dict.setdefault("TEST", {})
        if connections["default"].vendor == "sqlite":
            test_settings["NAME"] = str(Path(scratch) / "bench-ledger.sqlite3")
        else:
            test_settings["NAME"] = f"test_sealroom_bench_ledger_{os.getpid()}"
        old_config = setup_databases(verbosity=0, interactive=False, serialized_aliases=set())
        try:
            return bench(
                args.transactions,
                args.clients,
                max(args.legs, 3),
                processes=args.processes,
                rounds=max(args.rounds, 1),
            )
        finally:
            connections.close_all()
            teardown_databases(old_config, verbosity=0)


if __name__ == "__main__":
    sys.exit(main())
