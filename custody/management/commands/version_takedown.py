"""``manage.py version_takedown VERSION (dsv_…) --reason "..."``: take a dataset version down.

The version is withdrawn, every active grant on it revoked (open streams stop
at their next batch), its quarantine copies shredded, and marketplace and
training are told (``version_taken_down``). The key is kept: shred it
afterwards with ``version_key disable`` and, after the delay, ``version_key destroy``.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from common.exceptions import DomainError
from common.public_ids import cli_argument
from custody import services
from custody.models import DatasetVersion, Grant


class Command(BaseCommand):
    help = "Take a dataset version down: revoke its grants and tell marketplace and training."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("version_id", type=cli_argument("dsv"), help="the version's public id (dsv_…)")
        parser.add_argument(
            "--reason", required=True, help="why (audited, and passed on to the grant holders)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        version = (
            DatasetVersion.objects.select_related("dataset__owner")
            .filter(public_id=options["version_id"])
            .first()
        )
        if version is None:
            raise CommandError(f"No dataset version {options['version_id']}.")
        try:
            version = services.version_takedown(actor=None, version=version, reason=options["reason"])
        except DomainError as exc:
            raise CommandError(f"{exc.detail} ({exc.code})") from exc
        revoked = Grant.objects.filter(version=version, revoked_at__isnull=False).count()
        self.stdout.write(
            self.style.SUCCESS(
                f"version {version.public_id} is {version.state}; {revoked} grants revoked in all"
            )
        )
