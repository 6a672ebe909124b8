"""Custody's doorbells, sent only after the transaction that caused them commits.

Receivers must not rely on them for correctness: marketplace settles from a
periodic sweep over unsettled usage records, and each app's takedown sweep
finds what a lost ``version_taken_down`` left undone, so a lost signal delays
work but never loses it. A receiver that raises is logged, not propagated:
the caller's transaction has committed already.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction
from django.dispatch import Signal

logger = logging.getLogger(__name__)

usage_recorded = Signal()  # kwargs: usage_id, grant_id
grant_revoked = Signal()  # kwargs: grant_id, reason
version_taken_down = Signal()  # kwargs: version_id, reason
contribution_withdrawn = Signal()  # kwargs: withdrawal_id, from_version_id, to_version_id


def _send(signal: Signal, **kwargs: Any) -> None:
    for receiver, result in signal.send_robust(sender=None, **kwargs):
        if isinstance(result, Exception):
            # Only the ids: a receiver's message is not ours to vouch for.
            logger.error(
                "receiver %s of a custody doorbell failed (%s); its sweep picks the work up: %s",
                getattr(receiver, "__qualname__", receiver),
                type(result).__name__,
                {k: v for k, v in kwargs.items() if k.endswith("_id")},
            )


def send_after_commit(signal: Signal, **kwargs: Any) -> None:
    transaction.on_commit(lambda: _send(signal, **kwargs))
