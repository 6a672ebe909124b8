"""``manage.py work_retry``: re-drive failed work items, by id or every failed item of a kind.

    manage.py work_retry 12 17 --reason "gateway back up"
    manage.py work_retry --kind marketplace.settle_usage --failed --reason "fixed the ledger key bug"

Each item goes back to the queue with a fresh set of attempts and a doorbell
(``common.work.work_retry``); each retry is audited (actor: the command line
and its operating-system user). Items that are not failed are refused and
named; the others are still retried, and the command exits 1 if any was refused.
"""

from __future__ import annotations

from argparse import ArgumentParser, ArgumentTypeError
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from common.exceptions import DomainError, Invalid
from common.ids import parse_id
from common.models import WorkItem, WorkState
from common.work import work_retry


def item_id(raw: str) -> int:
    """A work item id from the command line (a plain error, not a database overflow, for a bad one)."""
    value = parse_id(raw)
    if value is None:
        raise ArgumentTypeError(f"not a work item id: {raw!r}")
    return value


class Command(BaseCommand):
    help = "Queue failed work items again with fresh attempts: by id, or every failed item of a kind."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "item_ids", nargs="*", type=item_id, metavar="ITEM_ID", help="work items to retry"
        )
        parser.add_argument("--kind", default="", help="with --failed: the kind of work to retry")
        parser.add_argument(
            "--failed", action="store_true", help="with --kind: retry every failed item of that kind"
        )
        parser.add_argument("--reason", required=True, help="why (audited)")

    def handle(self, *args: Any, **options: Any) -> None:
        item_ids: list[int] = options["item_ids"]
        kind: str = options["kind"]
        if item_ids and (kind or options["failed"]):
            raise CommandError("Give item ids, or --kind KIND --failed, not both.")
        if not item_ids:
            if not (kind and options["failed"]):
                raise CommandError("Give item ids, or --kind KIND --failed.")
            item_ids = list(
                WorkItem.objects.filter(kind=kind, state=WorkState.FAILED)
                .order_by("pk")
                .values_list("pk", flat=True)
            )
            if not item_ids:
                self.stdout.write(f"no failed {kind} items")
                return
        refused = 0
        for item_id in item_ids:
            try:
                item = work_retry(item_id=item_id, actor=None, reason=options["reason"])
            except Invalid as exc:
                # The same for every item (no reason): say it once.
                raise CommandError(f"{exc.detail} ({exc.code})") from exc
            except DomainError as exc:
                refused += 1
                self.stderr.write(f"work item {item_id}: {exc.detail} ({exc.code})")
                continue
            self.stdout.write(f"work item {item.pk} ({item.kind} {item.ref}) queued again on {item.queue}")
        retried = len(item_ids) - refused
        summary = f"{retried} retried, {refused} refused"
        if refused:
            raise CommandError(summary, returncode=1)
        self.stdout.write(self.style.SUCCESS(summary))
