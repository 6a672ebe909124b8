"""``manage.py audit_checkpoint``: what the beat tick does, on demand."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from common.audit_checkpoints import checkpoint_export, checkpoint_tick, export_read
from common.models import AuditCheckpoint


class Command(BaseCommand):
    help = (
        "Sign an audit checkpoint if events arrived since the last one, then append every "
        "checkpoint missing from the export file (AUDIT_EXPORT_DIR)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        checkpoint = checkpoint_tick()
        if checkpoint is None:
            self.stdout.write("no new events since the last checkpoint")
        else:
            self.stdout.write(f"signed checkpoint at seq {checkpoint.seq} (key {checkpoint.key_id})")
        # The tick exports after commit; exporting again is idempotent and
        # makes the count below true even when run inside a transaction.
        checkpoint_export()
        exported = export_read()
        self.stdout.write(
            f"export {exported.path}: {len(exported.checkpoints)} checkpoint(s); "
            f"database: {AuditCheckpoint.objects.count()}"
        )
