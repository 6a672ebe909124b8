"""``manage.py keys_rotate``: make a new master key current, and rewrap the KEKs under it.

    manage.py keys_rotate                # new master; KEKs keep their old master until rewrapped
    manage.py keys_rotate --rewrap-all   # new master, then every live KEK rewrapped under it
    manage.py keys_rotate --rewrap-only  # no new master: finish an interrupted rewrap

Every step is audited (actor: the command line and its operating-system user).
Back up the key directory after a rotation (docs/operations.md).
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from common.exceptions import DomainError
from custody import services


class Command(BaseCommand):
    help = "Rotate the master key (new version current) and optionally rewrap every KEK under it."

    def add_arguments(self, parser: ArgumentParser) -> None:
        group = parser.add_mutually_exclusive_group()
        group.add_argument(
            "--rewrap-all", action="store_true", help="rewrap every version and quarantine KEK afterwards"
        )
        group.add_argument(
            "--rewrap-only", action="store_true", help="do not rotate; rewrap under the current master"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["rewrap_only"]:
                master = services.master_key_version()
            else:
                previous = services.master_key_version()
                master = services.master_key_rotate(actor=None)
                self.stdout.write(f"master key: version {previous} -> {master}")
            if options["rewrap_all"] or options["rewrap_only"]:
                summary = services.kek_rewrap_all(actor=None)
                self.stdout.write(
                    f"rewrapped under master {summary.master}: {summary.versions} version keys, "
                    f"{summary.quarantine} quarantine keys; {summary.current} already current; "
                    f"{summary.destroyed} destroyed (skipped)"
                )
            else:
                self.stdout.write("existing keys keep their old master until rewrapped (--rewrap-only)")
        except DomainError as exc:
            raise CommandError(f"{exc.detail} ({exc.code})") from exc
        self.stdout.write(self.style.SUCCESS(f"current master key: version {master}"))
