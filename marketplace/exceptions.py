"""Marketplace's domain errors; codes are ``marketplace.*``."""

from __future__ import annotations

from common.exceptions import Conflict, Invalid, NotFound, NotPermitted
from common.idempotency import IdempotencyInProgress, IdempotencyKeyInvalid, IdempotencyKeyMismatch


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


# --- catalog: listings, offers, terms, prices, quotes, rights -----------------------------


class ListingNotFound(NotFound):
    default_code = "marketplace.listing_not_found"
    title = "Listing not found"


class OfferNotFound(NotFound):
    default_code = "marketplace.offer_not_found"
    title = "Offer not found"


class AllocationNotFound(NotFound):
    default_code = "marketplace.allocation_not_found"
    title = "Rights allocation not found"


class TermsInvalid(Invalid):
    """A license terms document breaks the schema or the version's limits."""

    default_code = "marketplace.terms_invalid"
    title = "Invalid license terms"


class PriceInvalid(Invalid):
    """A price is negative, malformed or incomplete for its price model."""

    default_code = "marketplace.price_invalid"
    title = "Invalid price"


class QuoteInvalid(Invalid):
    """The usage asked for cannot be quoted under these terms."""

    default_code = "marketplace.quote_invalid"
    title = "Invalid quote request"


class ListingInvalid(Invalid):
    default_code = "marketplace.listing_invalid"
    title = "Invalid listing"


class ListingStateConflict(Conflict):
    """The listing's state does not allow this (withdrawn, not a draft, no offers, ...)."""

    default_code = "marketplace.listing_state"
    title = "Listing state conflict"


class PreviewUnsafe(Invalid):
    """The strict detector found what may be personal data in a preview record."""

    default_code = "marketplace.preview_unsafe"
    title = "Preview may hold personal data"


class VersionNotSealed(Conflict):
    default_code = "marketplace.version_not_sealed"
    title = "Version not sealed"


class AllocationInvalid(Invalid):
    """Proposed shares do not sum to 10,000 basis points or name a non-contributor."""

    default_code = "marketplace.allocation_invalid"
    title = "Invalid rights allocation"


class AllocationStateConflict(Conflict):
    default_code = "marketplace.allocation_state"
    title = "Rights allocation state conflict"


# --- orders, licenses, escrow, payouts (helper "orders") ---------------------------------------


class OrderingRefused(Conflict):
    """The listing or offer cannot be ordered now (withdrawn, unpublished, retired)."""

    default_code = "marketplace.not_orderable"
    title = "Not orderable"


class TermsChanged(Conflict):
    """The offer's terms changed after the buyer read and accepted them."""

    default_code = "marketplace.terms_changed"
    title = "Terms changed"


class OfferSoldOut(Conflict):
    """An exclusive offer has no license slot left."""

    default_code = "marketplace.offer_sold_out"
    title = "Offer sold out"


class OrderNotFound(NotFound):
    default_code = "marketplace.order_not_found"
    title = "Order not found"


class LicenseNotFound(NotFound):
    default_code = "marketplace.license_not_found"
    title = "License not found"


class OrderStateConflict(Conflict):
    """The order is not in a state that allows this (approve a paid order, ...)."""

    default_code = "marketplace.order_state"
    title = "Order state conflict"


class LicenseStateConflict(Conflict):
    default_code = "marketplace.license_state"
    title = "License state conflict"


class AmountInvalid(Invalid):
    """A sum of money is not a positive integer of minor units, or the currency is unknown."""

    default_code = "marketplace.amount_invalid"
    title = "Invalid amount"


class NotATrainer(NotPermitted):
    default_code = "marketplace.not_a_trainer"
    title = "Not a trainer organisation"


class NotAProvider(NotPermitted):
    default_code = "marketplace.not_a_provider"
    title = "Not a provider organisation"


class PayoutExceedsPayable(Conflict):
    default_code = "marketplace.payout_exceeds_payable"
    title = "Payout exceeds what is owed"


__all__ = [
    "AllocationInvalid",
    "AllocationNotFound",
    "AllocationStateConflict",
    "AmountInvalid",
    "Conflict",
    "IdempotencyInProgress",
    "IdempotencyKeyInvalid",
    "IdempotencyKeyMismatch",
    "IdempotencyKeyReused",
    "InsufficientFunds",
    "Invalid",
    "InvalidPosting",
    "InvalidSplit",
    "LicenseNotFound",
    "LicenseStateConflict",
    "ListingInvalid",
    "ListingNotFound",
    "ListingStateConflict",
    "NotAProvider",
    "NotATrainer",
    "NotFound",
    "NotPermitted",
    "OfferNotFound",
    "OfferSoldOut",
    "OrderNotFound",
    "OrderStateConflict",
    "OrderingRefused",
    "PayoutExceedsPayable",
    "PreviewUnsafe",
    "PriceInvalid",
    "QuoteInvalid",
    "ReversalRefused",
    "TermsChanged",
    "TermsInvalid",
    "UnbalancedTransaction",
    "VersionNotSealed",
]
