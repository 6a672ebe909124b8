"""Escrow per order: funded from the buyer's balance, released to the holders, refunded to the buyer.

Every movement is one ``ledger_post`` whose idempotency key is derived from
the object ids (``order:<ref>:escrow``, ``settle:usage:<id>``, ...), so a
retried call, a second worker or a replayed request returns the first
transaction instead of posting again. Callers hold the license's row lock.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.conf import settings

from common.models import Organisation, User
from marketplace.ledger import (
    escrow_account,
    ledger_post,
    organisation_balance_account,
    payable_account,
    platform_account,
    split,
)
from marketplace.models import AccountKind, LedgerTransaction, Order


def fee_bps_current() -> int:
    """The platform fee a sale made now freezes (``MARKETPLACE_FEE_BPS``)."""
    return int(settings.MARKETPLACE_FEE_BPS)


def escrow_fund(
    *, buyer: Organisation, currency: str, order_ref: str, amount: int, key: str, actor: User | None
) -> LedgerTransaction:
    """Move ``amount`` from the buyer's balance into the order's escrow, once per ``key``.

    :raises InsufficientFunds: the buyer's balance cannot cover it.
    """
    balance = organisation_balance_account(organisation=buyer, currency=currency)
    escrow = escrow_account(order_ref=order_ref, currency=currency)
    return ledger_post(
        kind="escrow.fund",
        postings=[(balance, -amount), (escrow, amount)],
        idempotency_key=key,
        memo=f"Escrow for order {order_ref}",
        actor=actor,
        organisation=buyer,
    )


def escrow_refund(*, order: Order, amount: int, key: str, reason: str) -> LedgerTransaction:
    """Move ``amount`` from the order's escrow back to the buyer's balance, once per ``key``."""
    balance = organisation_balance_account(organisation=order.buyer, currency=order.currency)
    escrow = escrow_account(order_ref=order.ref, currency=order.currency)
    return ledger_post(
        kind="escrow.refund",
        postings=[(escrow, -amount), (balance, amount)],
        idempotency_key=key,
        memo=f"Refund for order {order.ref}: {reason}"[:500],
        organisation=order.buyer,
    )


def escrow_release(
    *, order: Order, amount: int, key: str, memo: str, weights: Mapping[int, int] | None = None
) -> tuple[LedgerTransaction, dict[int, int], int]:
    """Release ``amount`` of the order's escrow to the frozen holders and the fee, once per ``key``.

    The split is the ledger's largest remainder over the allocation and fee
    frozen at the sale, or over ``weights`` ({organisation id: weight}, what a
    metered job read per holder) when given. Returns the transaction, each
    holder's part and the fee.
    """
    parts = split(amount, weights or order.shares, order.fee_bps)
    escrow = escrow_account(order_ref=order.ref, currency=order.currency)
    postings = [(escrow, -amount)]
    holders = {org.pk: org for org in Organisation.objects.filter(pk__in=parts.parts)}
    for holder_id, part in sorted(parts.parts.items()):
        if part:
            postings.append((payable_account(organisation=holders[holder_id], currency=order.currency), part))
    if parts.fee:
        postings.append((platform_account(kind=AccountKind.PLATFORM_FEE, currency=order.currency), parts.fee))
    txn = ledger_post(
        kind="escrow.release",
        postings=postings,
        idempotency_key=key,
        memo=memo[:500],
        organisation=order.listing.provider,
    )
    return txn, {k: v for k, v in parts.parts.items() if v}, parts.fee
