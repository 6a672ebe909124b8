"""Signed checkpoints of the audit chain (filled in by the audit work)."""

from __future__ import annotations

from common.models import AuditChainHead


def checkpoint_if_due(head: AuditChainHead) -> None:
    return None
