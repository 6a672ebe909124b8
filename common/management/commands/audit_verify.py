"""``manage.py audit_verify``: check the audit chain, its checkpoints and the exported copy."""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from common.audit_verify import audit_verify


class Command(BaseCommand):
    help = (
        "Verify the audit log: recompute the hash chain, check every signed checkpoint and the "
        "exported checkpoints. Prints the first bad sequence number and exits 1 if anything is wrong."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--export-file",
            type=Path,
            help="the exported checkpoints to check against (default: AUDIT_EXPORT_DIR/checkpoints.jsonl)",
        )
        parser.add_argument("--chunk-size", type=int, default=2000, help="events fetched per round trip")

    def handle(self, *args: Any, **options: Any) -> None:
        report = audit_verify(chunk_size=options["chunk_size"], export_file=options["export_file"])
        for line in report.summary_lines():
            self.stdout.write(line)
        if not report.ok:
            raise CommandError(
                f"audit log verification failed: {report.problem_count} problem(s)", returncode=1
            )
