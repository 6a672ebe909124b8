"""Training's reactions to custody's doorbells (after commit; the launcher re-checks anyway).

A revoked license cancels its queued jobs (running ones stop at the
launcher's next cancel check, which also sees the revocation); a version taken
down enqueues its side of the takedown as leased work items
(:mod:`training.takedown`: cancel queued jobs, destroy withheld artifacts),
which the training sweep also finds if this bell is lost.
"""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from custody import signals
from training import (
    takedown,  # registers the training.takedown_job work handler
    withdrawal,  # registers the training.withdrawal_notice work handler
)
from training.services.jobs import jobs_license_revoked


@receiver(signals.grant_revoked, dispatch_uid="training.grant_revoked")
def _on_grant_revoked(sender: Any, grant_id: int, reason: str, **kwargs: Any) -> None:
    jobs_license_revoked(grant_id=grant_id, reason=reason)


@receiver(signals.version_taken_down, dispatch_uid="training.version_taken_down")
def _on_version_taken_down(sender: Any, version_id: int, reason: str, **kwargs: Any) -> None:
    takedown.takedown_enqueue(version_id=version_id)


@receiver(signals.contribution_withdrawn, dispatch_uid="training.contribution_withdrawn")
def _on_contribution_withdrawn(sender: Any, withdrawal_id: int, **kwargs: Any) -> None:
    withdrawal.withdrawal_notice_enqueue(withdrawal_id=withdrawal_id)
