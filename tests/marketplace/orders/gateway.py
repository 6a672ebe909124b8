"""A test payment gateway: records what it was asked, refuses or fails on demand.

It is a real implementation of ``marketplace.gateway.PaymentGateway`` (what a
Stripe adapter would be), not a mock of our code: tests point
``MARKETPLACE_PAYMENT_GATEWAY`` at it.
"""

from __future__ import annotations

from typing import ClassVar

from marketplace.exceptions import AmountInvalid
from marketplace.gateway import PayoutResult


class RecordingGateway:
    name = "test"
    # Shared across instances (the service makes a fresh one per call); tests reset it.
    confirmed: ClassVar[dict[str, int]] = {}
    sent: ClassVar[dict[str, int]] = {}
    refuse: ClassVar[set[str]] = set()
    fail_transiently: ClassVar[int] = 0

    @classmethod
    def reset(cls) -> None:
        cls.confirmed, cls.sent, cls.refuse, cls.fail_transiently = {}, {}, set(), 0

    def topup_verify(self, *, external_ref: str, amount: int, currency: str) -> None:
        if self.confirmed.get(external_ref) != amount:
            raise AmountInvalid(f"The gateway has no payment {external_ref} of {amount} {currency}.")

    def payout_send(
        self, *, payout_ref: str, organisation_id: int, amount: int, currency: str
    ) -> PayoutResult:
        if RecordingGateway.fail_transiently:
            RecordingGateway.fail_transiently -= 1
            raise ConnectionError("gateway unreachable")
        if payout_ref in self.refuse:
            return PayoutResult(sent=False, failure="account closed")
        # Idempotent per reference, as a real gateway is.
        self.sent.setdefault(payout_ref, amount)
        return PayoutResult(sent=True, gateway_ref=f"test:{payout_ref}")
