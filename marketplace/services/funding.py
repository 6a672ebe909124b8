"""Balances funded through the payment gateway (marketplace/gateway.py).

A top-up moves money from the platform's external-funding account into an
organisation's balance, once per gateway reference: the same bank transfer
recorded twice is one top-up.
"""

from __future__ import annotations

import secrets

from django.db import transaction

from common.audit import audit_record
from common.models import Organisation, User
from marketplace.exceptions import AmountInvalid
from marketplace.gateway import payment_gateway
from marketplace.ledger import CURRENCY_CODE, ledger_post, organisation_balance_account, platform_account
from marketplace.models import AccountKind, TopUp

# A single top-up above this (minor units) is a typo, not a transfer.
MAX_TOPUP = 10**12


def amount_check(amount: object, *, pointer: str = "/amount") -> int:
    """:raises AmountInvalid: not a positive integer of minor units (bools, floats and strings refused)."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1 or amount > MAX_TOPUP:
        raise AmountInvalid(
            f"An amount is a positive integer of minor units up to {MAX_TOPUP}, not {amount!r}.",
            errors=[{"pointer": pointer, "code": "invalid", "detail": "A positive integer (minor units)."}],
        )
    return amount


def currency_check(currency: object, *, pointer: str = "/currency") -> str:
    if not isinstance(currency, str) or not CURRENCY_CODE.fullmatch(currency):
        raise AmountInvalid(
            f"{currency!r} is not an ISO 4217 currency code.",
            errors=[{"pointer": pointer, "code": "invalid", "detail": "Three capital letters, e.g. EUR."}],
        )
    return currency


@transaction.atomic
def topup_record(
    *, organisation: Organisation, amount: int, currency: str, external_ref: str, actor: User | None
) -> TopUp:
    """Credit the organisation's balance with money the gateway received, once per ``external_ref``.

    :raises AmountInvalid: a malformed amount, currency or reference, or the gateway does not confirm it.
    """
    amount_check(amount)
    currency_check(currency)
    if not external_ref or len(external_ref) > 120:
        raise AmountInvalid(
            "A top-up needs the gateway's or bank transfer's reference (up to 120 characters).",
            errors=[{"pointer": "/external_ref", "code": "invalid", "detail": "Required."}],
        )
    gateway = payment_gateway()
    existing = TopUp.objects.filter(gateway=gateway.name, external_ref=external_ref).first()
    if existing is not None:
        if (existing.organisation_id, existing.amount, existing.currency) != (
            organisation.pk,
            amount,
            currency,
        ):
            raise AmountInvalid(
                f"Reference {external_ref!r} was already recorded for another top-up.",
                code="marketplace.topup_ref_taken",
                errors=[{"pointer": "/external_ref", "code": "taken", "detail": "Already recorded."}],
            )
        return existing
    gateway.topup_verify(external_ref=external_ref, amount=amount, currency=currency)
    txn = ledger_post(
        kind="funding.topup",
        postings=[
            (platform_account(kind=AccountKind.EXTERNAL_FUNDING, currency=currency), -amount),
            (organisation_balance_account(organisation=organisation, currency=currency), amount),
        ],
        idempotency_key=f"topup:{gateway.name}:{external_ref}",
        memo=f"Top-up {external_ref}",
        actor=actor,
        organisation=organisation,
    )
    topup = TopUp.objects.create(
        ref=f"top_{secrets.token_hex(8)}",
        organisation=organisation,
        currency=currency,
        amount=amount,
        gateway=gateway.name,
        external_ref=external_ref,
        recorded_by=actor,
        transaction=txn,
    )
    audit_record(
        action="marketplace.topup",
        actor=actor,
        organisation=organisation,
        object_type="topup",
        object_id=topup.ref,
        details={
            "amount": amount,
            "currency": currency,
            "gateway": gateway.name,
            "external_ref": external_ref,
        },
    )
    return topup
