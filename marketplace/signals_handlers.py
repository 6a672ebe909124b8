"""Custody's doorbells: settle usage promptly, refund and revoke on a takedown.

Receivers only speed things up: the sweep finds unsettled usage anyway, and a
takedown's refunds are idempotent, so a lost signal delays money but never
loses it.
"""

from __future__ import annotations

import logging
from typing import Any

from custody import signals

logger = logging.getLogger(__name__)


def _on_usage_recorded(sender: Any, *, usage_id: int, grant_id: int, **kwargs: Any) -> None:
    from marketplace.models import License
    from marketplace.tasks import settle_enqueue

    if License.objects.filter(grant_id=grant_id).exists():
        settle_enqueue(usage_id)


def _on_version_taken_down(sender: Any, *, version_id: int, reason: str, **kwargs: Any) -> None:
    from marketplace.services.catalog import listings_withdraw_for_version
    from marketplace.services.settlement import license_refund, licenses_for_version

    listings_withdraw_for_version(version_id=version_id, reason=f"Dataset version taken down: {reason}"[:300])
    for license_ in licenses_for_version(version_id=version_id):
        license_refund(license_=license_, reason=f"Dataset version taken down: {reason}"[:300])


def connect() -> None:
    signals.usage_recorded.connect(_on_usage_recorded, dispatch_uid="marketplace.usage_recorded")
    signals.version_taken_down.connect(_on_version_taken_down, dispatch_uid="marketplace.version_taken_down")
