"""``manage.py audit_integrate``: what the sequencer's beat sweep does, on demand."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from common.audit import audit_integrate, audit_pending


class Command(BaseCommand):
    help = (
        "Integrate pending audit events into the hash chain (sequence numbers, chain hashes, "
        "checkpoints when due), a batch per transaction, until none is left."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help="events per transaction (default AUDIT_SEQUENCER_BATCH)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size = options["batch_size"]
        if batch_size is not None and batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        # Waits for a sequencer at work elsewhere, then integrates what it left.
        result = audit_integrate(batch_size=batch_size, wait=True)
        self.stdout.write(
            f"integrated {result.integrated} event(s) in {result.batches} batch(es); "
            f"chain head at seq {result.head_seq if result.head_seq is not None else 'none'}"
        )
        pending = audit_pending()
        self.stdout.write(f"pending: {pending.count}")
