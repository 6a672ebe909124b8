"""Custody's domain errors; codes are ``custody.*``."""

from __future__ import annotations

from common.exceptions import Conflict, Invalid, NotFound, NotPermitted


class IntegrityFailure(Conflict):
    """Stored custody data failed an integrity check (tampered, swapped, truncated)."""

    default_code = "custody.integrity_failure"
    title = "Integrity check failed"


class KeyUnavailable(Conflict):
    """The key needed is disabled or destroyed (crypto-shredded)."""

    default_code = "custody.key_unavailable"
    title = "Key unavailable"


class ResidualRiskUnconfirmed(Conflict):
    """The residual-risk estimate is above the confirmation threshold and sealing was not confirmed."""

    default_code = "custody.residual_risk_unconfirmed"
    title = "Residual risk not confirmed"


__all__ = [
    "Conflict",
    "IntegrityFailure",
    "Invalid",
    "KeyUnavailable",
    "NotFound",
    "NotPermitted",
    "ResidualRiskUnconfirmed",
]
