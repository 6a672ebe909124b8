"""Custody's doorbells, sent only after the transaction that caused them commits.

Receivers must not rely on them for correctness: marketplace settles from a
periodic sweep over unsettled usage records, so a lost signal delays money but
never loses it.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.dispatch import Signal

usage_recorded = Signal()  # kwargs: usage_id, grant_id
grant_revoked = Signal()  # kwargs: grant_id, reason
version_taken_down = Signal()  # kwargs: version_id, reason


def send_after_commit(signal: Signal, **kwargs: Any) -> None:
    transaction.on_commit(lambda: signal.send_robust(sender=None, **kwargs))
