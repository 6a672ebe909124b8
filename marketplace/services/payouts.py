"""Payouts: a provider admin moves what the platform owes it out through the payment gateway.

A request moves the amount from the organisation's rights-holder payable to
the platform's payouts account at once (so it cannot be requested twice) and
enqueues a work item that asks the gateway to send it. The gateway call is
idempotent per payout reference; a refusal reverses the ledger transaction,
so the money is owed again.
"""

from __future__ import annotations

import secrets

from django.db import transaction
from django.utils import timezone

from common.audit import audit_record
from common.models import Organisation, User, WorkItem
from common.money import format_money, major_amount
from common.notifications import notify_event
from common.work import PermanentWorkError, work_enqueue, work_handler
from marketplace.exceptions import NotAProvider, PayoutExceedsPayable
from marketplace.gateway import payment_gateway
from marketplace.ledger import balance, ledger_post, ledger_reverse, payable_account, platform_account
from marketplace.models import AccountKind, LedgerAccount, Payout, PayoutState
from marketplace.services.funding import amount_check, currency_check

PAYOUT_WORK = "marketplace.payout_send"


@transaction.atomic
def payout_request(
    *, organisation: Organisation, amount: int, currency: str, actor: User | None, idempotency_key: str = ""
) -> Payout:
    """Request a payout of ``amount`` from what the organisation is owed; once per idempotency key.

    :raises AmountInvalid: malformed amount or currency.
    :raises PayoutExceedsPayable: more than the payable holds.
    """
    amount_check(amount)
    currency_check(currency)
    if idempotency_key:
        existing = Payout.objects.filter(organisation=organisation, idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing
    payable = payable_account(organisation=organisation, currency=currency)
    # Payables are not guarded by the ledger: this lock keeps two requests from spending one balance.
    LedgerAccount.objects.select_for_update().get(pk=payable.pk)
    owed = balance(payable)
    if amount > owed:
        raise PayoutExceedsPayable(
            f"{organisation.name} is owed {format_money(owed, currency)}; "
            f"{format_money(amount, currency)} was asked."
        )
    ref = f"pay_{secrets.token_hex(8)}"
    txn = ledger_post(
        kind="payout",
        postings=[
            (payable, -amount),
            (platform_account(kind=AccountKind.PAYOUTS, currency=currency), amount),
        ],
        idempotency_key=f"payout:{ref}",
        memo=f"Payout {ref}",
        actor=actor,
        organisation=organisation,
    )
    payout = Payout.objects.create(
        ref=ref,
        organisation=organisation,
        currency=currency,
        amount=amount,
        idempotency_key=idempotency_key,
        requested_by=actor,
        gateway=payment_gateway().name,
        transaction=txn,
    )
    audit_record(
        action="marketplace.payout_request",
        actor=actor,
        organisation=organisation,
        object_type="payout",
        object_id=ref,
        details={"amount": amount, "currency": currency},
    )
    work_enqueue(kind=PAYOUT_WORK, ref=ref, queue="default")
    return payout


@transaction.atomic
def payout_send(*, payout_ref: str) -> Payout:
    """Ask the gateway to send a requested payout and record the answer; a no-op once decided."""
    payout = Payout.objects.select_for_update(of=("self",)).select_related("organisation").get(ref=payout_ref)
    if payout.state != PayoutState.REQUESTED:
        return payout
    if not payout.organisation.is_provider:
        raise NotAProvider("Only provider organisations are paid out.")
    result = payment_gateway().payout_send(
        payout_ref=payout.ref,
        organisation_id=payout.organisation_id,
        amount=payout.amount,
        currency=payout.currency,
    )
    if result.sent:
        payout.state, payout.gateway_ref, payout.sent_at = (
            PayoutState.SENT,
            result.gateway_ref,
            timezone.now(),
        )
        payout.save(update_fields=["state", "gateway_ref", "sent_at"])
        notify_event(
            organisation=payout.organisation,
            kind="payout.sent",
            subject=f"Payout {payout.ref} of {format_money(payout.amount, payout.currency)} sent",
            payload={
                "payout": payout.ref,
                "amount": major_amount(payout.amount, payout.currency),
                "amount_minor": payout.amount,
                "currency": payout.currency,
            },
            object_type="payout",
            object_id=payout.ref,
        )
    else:
        ledger_reverse(transaction=payout.transaction, reason=f"Payout refused: {result.failure}"[:300])
        payout.state, payout.failure_reason = PayoutState.FAILED, result.failure[:300]
        payout.save(update_fields=["state", "failure_reason"])
    audit_record(
        action="marketplace.payout_sent" if result.sent else "marketplace.payout_failed",
        organisation=payout.organisation,
        object_type="payout",
        object_id=payout.ref,
        details={"gateway_ref": result.gateway_ref, "failure": result.failure[:300]},
    )
    return payout


@work_handler(PAYOUT_WORK)
def _payout_work(item: WorkItem) -> None:
    try:
        payout_send(payout_ref=item.ref)
    except Payout.DoesNotExist as exc:
        raise PermanentWorkError(f"no payout {item.ref}") from exc
