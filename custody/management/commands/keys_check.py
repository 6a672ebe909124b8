"""``manage.py keys_check [--fix]``: compare the key provider with the database after a restore.

Run it after restoring the database or the key directory from a backup
(docs/operations.md). It lists every key whose state differs from what the
database recorded; ``--fix`` destroys again each key that the database says
was destroyed but a restored key backup brought back. Exits 1 when a mismatch
is left that needs a person.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from custody import services


class Command(BaseCommand):
    help = "List keys whose state differs from the database; --fix destroys resurrected keys again."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--fix", action="store_true", help="destroy again the keys recorded as destroyed")

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(f"current master key: version {services.master_key_version()}")
        mismatches = services.keys_reconcile(actor=None, fix=options["fix"])
        for mismatch in mismatches:
            self.stdout.write(str(mismatch))
        left = [m for m in mismatches if not m.fixed]
        if left:
            raise CommandError(f"{len(left)} keys differ from the database; see docs/operations.md")
        self.stdout.write(self.style.SUCCESS(f"keys match the database ({len(mismatches)} fixed)"))
