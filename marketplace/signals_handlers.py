"""Custody's doorbells: settle usage promptly; on a takedown, enqueue what must be undone.

Receivers only speed things up: the sweep finds unsettled usage anyway, and
the takedown's listings, pending orders and licenses become leased work items
(``marketplace.services.takedown``) that the sweep also enqueues, so a lost
signal delays money but never loses it, and a failing refund is retried.
"""

from __future__ import annotations

from typing import Any

from custody import signals


def _on_usage_recorded(sender: Any, *, usage_id: int, grant_id: int, **kwargs: Any) -> None:
    from marketplace.models import License
    from marketplace.tasks import settle_enqueue

    if License.objects.filter(grant_id=grant_id).exists():
        settle_enqueue(usage_id)


def _on_version_taken_down(sender: Any, *, version_id: int, reason: str, **kwargs: Any) -> None:
    from marketplace.services.takedown import takedown_enqueue

    takedown_enqueue(version_id=version_id)


def _on_contribution_withdrawn(sender: Any, *, withdrawal_id: int, **kwargs: Any) -> None:
    from marketplace.services.withdrawal import withdrawal_follow

    withdrawal_follow(withdrawal_id=withdrawal_id)


def connect() -> None:
    # Registers the takedown work handlers in every process (web, worker, tests).
    from marketplace.services import takedown  # noqa: F401

    signals.usage_recorded.connect(_on_usage_recorded, dispatch_uid="marketplace.usage_recorded")
    signals.version_taken_down.connect(_on_version_taken_down, dispatch_uid="marketplace.version_taken_down")
    signals.contribution_withdrawn.connect(
        _on_contribution_withdrawn, dispatch_uid="marketplace.contribution_withdrawn"
    )
