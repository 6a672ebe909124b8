"""Marketplace's domain errors; codes are ``marketplace.*``."""

from __future__ import annotations

from common.exceptions import Conflict, Invalid, NotFound, NotPermitted


class UnbalancedTransaction(Invalid):
    """A transaction's postings do not sum to zero in some currency."""

    default_code = "marketplace.unbalanced_transaction"
    title = "Unbalanced transaction"


class InvalidPosting(Invalid):
    """A posting, account or amount is malformed (not an integer, zero, unsaved account)."""

    default_code = "marketplace.invalid_posting"
    title = "Invalid posting"


class InsufficientFunds(Conflict):
    """An organisation's balance would go negative."""

    default_code = "marketplace.insufficient_funds"
    title = "Insufficient funds"


class IdempotencyKeyReused(Conflict):
    """An idempotency key already names a different transaction."""

    default_code = "marketplace.idempotency_key_reused"
    title = "Idempotency key reused"


class ReversalRefused(Invalid):
    """A reversal cannot itself be reversed."""

    default_code = "marketplace.reversal_of_reversal"
    title = "Reversal refused"


class InvalidSplit(Invalid):
    """A split's amount, shares or fee are out of range."""

    default_code = "marketplace.invalid_split"
    title = "Invalid split"


__all__ = [
    "Conflict",
    "IdempotencyKeyReused",
    "InsufficientFunds",
    "Invalid",
    "InvalidPosting",
    "InvalidSplit",
    "NotFound",
    "NotPermitted",
    "ReversalRefused",
    "UnbalancedTransaction",
]
