"""``manage.py version_key``: one dataset version's key: status, rewrap, data-key rotation, shred.

    manage.py version_key status  VERSION (dsv_…)
    manage.py version_key rekey   VERSION (dsv_…)                 # rewrap its KEK under the current master
    manage.py version_key rotate-data VERSION (dsv_…)             # re-encrypt under a new data key
    manage.py version_key disable VERSION (dsv_…) --reason "..."  # shred step 1 (reversible)
    manage.py version_key enable  VERSION (dsv_…) [--reason "..."]
    manage.py version_key destroy VERSION (dsv_…) --confirm OWNER/DATASET/vN   # shred step 2, final

``destroy`` needs the version taken down (or rejected), its key disabled for
SHRED_DELAY_SECONDS, and the version's label typed back. Every step is
audited (actor: the command line and its operating-system user).
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from common.exceptions import DomainError
from common.public_ids import cli_argument
from custody import services
from custody.models import DatasetVersion

ACTIONS = ("status", "rekey", "rotate-data", "disable", "enable", "destroy")


class Command(BaseCommand):
    help = "Inspect, rewrap, rotate, disable, enable or destroy (crypto-shred) a dataset version's key."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("action", choices=ACTIONS)
        parser.add_argument("version_id", type=cli_argument("dsv"), help="the version's public id (dsv_…)")
        parser.add_argument("--reason", default="", help="why (required for disable; audited)")
        parser.add_argument(
            "--confirm", default="", help="destroy only: the version's label, owner/dataset/vN"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        version = (
            DatasetVersion.objects.select_related("dataset__owner")
            .filter(public_id=options["version_id"])
            .first()
        )
        if version is None:
            raise CommandError(f"No dataset version {options['version_id']}.")
        action = options["action"]
        try:
            if action == "rekey":
                master = services.version_rekey(actor=None, version=version)
                self.stdout.write(f"rewrapped under master key version {master}")
            elif action == "rotate-data":
                version = services.version_data_key_rotate(actor=None, version=version)
                self.stdout.write(
                    f"data key version {version.key_version}; merkle root {version.merkle_root}"
                )
            elif action == "disable":
                version = services.version_key_disable(actor=None, version=version, reason=options["reason"])
            elif action == "enable":
                version = services.version_key_enable(actor=None, version=version, reason=options["reason"])
            elif action == "destroy":
                if not options["confirm"]:
                    raise CommandError(
                        "This destroys the key for good. "
                        f"Repeat with --confirm {services.version_label(version)}"
                    )
                version = services.version_key_destroy(
                    actor=None, version=version, confirm=options["confirm"]
                )
        except DomainError as exc:
            raise CommandError(f"{exc.detail} ({exc.code})") from exc
        self._status(services.version_key_status(version))

    def _status(self, status: services.VersionKeyStatus) -> None:
        self.stdout.write(f"version {status.version_id} ({status.label}): {status.state}")
        self.stdout.write(
            f"  key: {status.key_state}, master {status.key_master}, data key v{status.key_version}"
        )
        if status.key_disabled_at:
            self.stdout.write(f"  disabled at {status.key_disabled_at.isoformat()}")
        if status.destroy_after:
            self.stdout.write(f"  may be destroyed from {status.destroy_after.isoformat()}")
        if status.key_destroyed_at:
            self.stdout.write(f"  destroyed at {status.key_destroyed_at.isoformat()}")
