"""The offline checker: ``python -m chaos.drills.check DIR``.

It reads a drill's history (``DIR/history.jsonl``) and the drill's own
database: the Postgres cluster the drill left in ``DIR/pg`` (``cluster.json``
says where). If that cluster is not running, the checker starts it on a free
loopback port, checks, and stops it again, so a run can be re-checked at any
time after the drill. It then proves, from the database and against the
history:

- every acknowledged (2xx) order exists, with the reference the client was
  given, and every acknowledged job start (usage record) exists;
- no Idempotency-Key made two orders, and no order exists that no client asked for;
- every acknowledged usage is settled exactly once;
- the ledger: ``ledger_check()`` finds nothing, each order's escrow was funded
  once (only by its own ledger key), each license's releases add up to what it
  says it released, every release belongs to a settlement, and every ledger
  transaction has its audit event (a row written around the services has none);
- no two payouts for one Idempotency-Key;
- the audit chain verifies (``audit_verify``);
- every work item is done (none still queued or running, none given up as
  failed) and no training job is left active.

It appends a ``checked`` event with the violations and the figures, prints
one line per violation and a summary, and exits 1 when it found any.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaos.drills.cluster import BASE_DIR, PrivatePostgres
from chaos.history import Event, History, of_kind, read_history


@dataclass
class Findings:
    violations: list[dict[str, str]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def add(self, kind: str, detail: str) -> None:
        self.violations.append({"kind": kind, "detail": detail})


# --- what the history says ----------------------------------------------------------------


def acknowledged(events: list[Event], op: str) -> list[Event]:
    return [e for e in of_kind(events, "ok") if e.get("op") == op]


def faults_summary(events: list[Event]) -> dict[str, int]:
    """How many faults struck, and how many struck while work was in flight."""
    faults = list(of_kind(events, "fault"))
    in_flight = [f for f in faults if any(f.get("in_flight") or {}) or (f.get("work_unfinished") or 0) > 0]
    requests_cut = [e for e in of_kind(events, "info") if e.get("error") or (e.get("status") or 0) >= 500]
    return {
        "faults": len(faults),
        "faults_with_work_in_flight": len(in_flight),
        "recovered": sum(1 for _ in of_kind(events, "recovered")),
        "unknown_outcomes": len(requests_cut),
        "worker_exits": sum(1 for e in of_kind(events, "info") if e.get("what") == "worker exited"),
    }


# --- the checks (Django is set up on the drill's database by then) ----------------------------


def check_orders(events: list[Event], trainer_id: int, findings: Findings) -> None:
    from marketplace.models import Order

    asked = {e["key"] for e in of_kind(events, "invoke") if e.get("op") == "order"}
    prefixes = {key.rsplit("-", 1)[0] for key in asked}
    orders_by_key: dict[str, list[Order]] = defaultdict(list)
    for order in Order.objects.filter(buyer_id=trainer_id).exclude(idempotency_key=""):
        key = order.idempotency_key.split("@", 1)[0]
        if key.rsplit("-", 1)[0] in prefixes:
            orders_by_key[key].append(order)
    for key, orders in sorted(orders_by_key.items()):
        if len(orders) > 1:
            findings.add(
                "duplicate_order", f"key {key} made {len(orders)} orders: {sorted(o.ref for o in orders)}"
            )
        if key not in asked:
            findings.add(
                "phantom_order", f"order(s) {sorted(o.ref for o in orders)} for key {key} no client sent"
            )
    acks = acknowledged(events, "order")
    refs_given: dict[str, set[str]] = defaultdict(set)
    for ack in acks:
        refs_given[ack["key"]].add(ack["ref"])
    for key, refs in sorted(refs_given.items()):
        if len(refs) > 1:
            findings.add(
                "inconsistent_ack", f"key {key} was acknowledged as different orders: {sorted(refs)}"
            )
        stored = {o.ref for o in orders_by_key.get(key, [])}
        for ref in sorted(refs - stored):
            findings.add("lost_order", f"order {ref} (key {key}) was acknowledged and is not in the database")
    findings.figures.update(orders_acknowledged=len(refs_given), orders_in_database=len(orders_by_key))


def check_usage(events: list[Event], findings: Findings) -> None:
    from custody.models import UsageRecord
    from marketplace.models import Settlement

    acked = {int(e["usage"]) for e in acknowledged(events, "usage")}
    stored = set(UsageRecord.objects.filter(pk__in=acked).values_list("pk", flat=True))
    for usage_id in sorted(acked - stored):
        findings.add("lost_usage", f"usage record {usage_id} was acknowledged and is not in the database")
    settled = Counter(Settlement.objects.filter(usage_id__in=stored).values_list("usage_id", flat=True))
    for usage_id in sorted(stored):
        if settled[usage_id] != 1:
            findings.add(
                "settlement", f"usage record {usage_id} is settled {settled[usage_id]} times, not once"
            )
    unmarked = UsageRecord.objects.filter(pk__in=stored, settled_at__isnull=True).values_list("pk", flat=True)
    for usage_id in unmarked:
        findings.add("settlement", f"usage record {usage_id} is not marked settled in custody")
    findings.figures.update(usage_acknowledged=len(acked), settlements=sum(settled.values()))


def check_ledger(findings: Findings) -> None:
    from common.models import AuditEvent
    from marketplace.ledger import ledger_check
    from marketplace.models import LedgerTransaction, Order, Payout

    for problem in ledger_check():
        findings.add("ledger", problem)
    for order in Order.objects.all():
        _check_escrow(order, findings)
    audited = set(
        AuditEvent.objects.filter(
            object_type="ledger_transaction", action__in=("ledger.post", "ledger.reverse")
        ).values_list("object_id", flat=True)
    )
    transactions = list(LedgerTransaction.objects.values_list("pk", "idempotency_key"))
    for pk, key in transactions:
        if str(pk) not in audited:
            findings.add("unaudited_ledger_entry", f"ledger transaction {pk} ({key}) has no audit event")
    payouts = Counter(
        (organisation, key.split("@", 1)[0])
        for organisation, key in Payout.objects.exclude(idempotency_key="").values_list(
            "organisation_id", "idempotency_key"
        )
    )
    for (organisation, key), count in payouts.items():
        if count > 1:
            findings.add("duplicate_payout", f"organisation {organisation} key {key}: {count} payouts")
    findings.figures["ledger_transactions"] = len(transactions)


def _check_escrow(order: Any, findings: Findings) -> None:
    """The order's escrow was funded by its own keys only, and its releases match its settlements."""
    from django.db.models import Sum

    from marketplace.models import License, Posting, Settlement

    postings = Posting.objects.filter(
        account__kind="escrow", account__ref=order.ref, account__currency=order.currency
    ).select_related("transaction")
    own = f"order:{order.ref}:escrow"
    for posting in postings:
        txn = posting.transaction
        if (
            txn.kind == "escrow.fund"
            and txn.idempotency_key != own
            and not txn.idempotency_key.startswith(f"{own}:period:")
        ):
            findings.add(
                "duplicate_ledger_entry",
                f"order {order.ref}'s escrow funded again by transaction {txn.pk} ({txn.idempotency_key})",
            )
        if txn.kind == "escrow.release" and not Settlement.objects.filter(transaction=txn).exists():
            findings.add("duplicate_ledger_entry", f"release {txn.pk} of order {order.ref} has no settlement")
    license_ = License.objects.filter(order=order).first()
    if license_ is None:
        return
    released = -(
        postings.filter(transaction__kind="escrow.release").aggregate(total=Sum("amount"))["total"] or 0
    )
    reversed_back = postings.filter(transaction__kind="reversal.escrow.release").aggregate(
        total=Sum("amount")
    )
    released -= reversed_back["total"] or 0
    if released != license_.released:
        findings.add(
            "ledger",
            f"license {license_.ref} says it released {license_.released}, its escrow shows {released}",
        )


def check_audit(findings: Findings) -> None:
    from common.audit_verify import audit_verify

    report = audit_verify()
    if not report.ok:
        findings.add("audit_chain", str(report.first_problem))
    findings.figures["audit_events_checked"] = report.events_checked


def check_work(findings: Findings) -> None:
    from common.models import WorkItem, WorkState
    from training.models import ACTIVE_STATES, TrainingJob

    for item in WorkItem.objects.exclude(state=WorkState.DONE).order_by("pk"):
        kind = "work_failed" if item.state == WorkState.FAILED else "work_unfinished"
        findings.add(kind, f"work item {item.pk} {item.kind} {item.ref} is {item.state} after "
                     f"{item.attempts} attempt(s): {item.last_error[:200]}")  # fmt: skip
    for job in TrainingJob.objects.filter(state__in=ACTIVE_STATES):
        findings.add("job_unfinished", f"training job {job.pk} is still {job.state}")
    findings.figures["work_items"] = WorkItem.objects.count()


def find_violations(events: list[Event], trainer_id: int) -> Findings:
    findings = Findings(figures=faults_summary(events))
    check_orders(events, trainer_id, findings)
    check_usage(events, findings)
    check_ledger(findings)
    check_audit(findings)
    check_work(findings)
    return findings


# --- the command ---------------------------------------------------------------------------


def _django_on(manifest: dict[str, Any], database_url: str) -> None:
    for name in [k for k in os.environ if k.startswith(("DATABASE_", "SEALROOM_", "CELERY_"))]:
        del os.environ[name]
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=database_url,
        SEALROOM_VAR_DIR=manifest["var_dir"],
        # The checker reads; it sends nothing and caches nothing that matters.
        CELERY_BROKER_URL="memory://",
        CACHE_URL="",
        SEALROOM_LOG_LEVEL="WARNING",
    )
    sys.path.insert(0, str(BASE_DIR))
    import django

    django.setup()


def deadlocks_logged(postgres: PrivatePostgres) -> int:
    """Deadlocks Postgres detected during the run (each aborted a transaction, which was retried)."""
    log = postgres.root / "postgres.log"
    return log.read_text(errors="replace").count("ERROR:  deadlock detected") if log.exists() else 0


def check(out: Path) -> Findings:
    """Check the drill run in ``out`` and append the ``checked`` event to its history."""
    manifest = json.loads((out / "cluster.json").read_text())
    events = read_history(out / "history.jsonl")
    postgres = PrivatePostgres(Path(manifest["pg_root"]))
    started_here = not postgres.attach()
    if started_here:
        postgres.start()
    try:
        _django_on(manifest, postgres.url)
        findings = find_violations(events, int(manifest["seed"]["trainer_id"]))
        findings.figures["deadlocks"] = deadlocks_logged(postgres)
    finally:
        if started_here:
            postgres.stop()
    with History(out / "history.jsonl") as history:
        history.record("checked", violations=findings.violations, figures=findings.figures)
    return findings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.drills.check", description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="the drill's output folder (history.jsonl, cluster.json, pg/)")
    args = parser.parse_args(argv)
    findings = check(args.out)
    for violation in findings.violations:
        print(f"VIOLATION {violation['kind']}: {violation['detail']}")
    figures = ", ".join(f"{k} {v}" for k, v in findings.figures.items())
    verdict = f"{len(findings.violations)} violation(s)" if findings.violations else "no violations"
    print(f"checked {args.out}: {verdict}; {figures}", flush=True)
    return 1 if findings.violations else 0


if __name__ == "__main__":
    sys.exit(main())
