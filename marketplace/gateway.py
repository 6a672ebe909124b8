"""The payment-gateway interface: how money enters balances and leaves payables.

The platform never holds card numbers or bank details: a gateway does. The
embedded default, :class:`OperatorGateway`, is a bank transfer an operator
records by hand (the operator top-up page and API) and payouts an operator
sends by hand from the payout list; a real gateway (Stripe, Adyen, ...)
implements the same two calls. ``MARKETPLACE_PAYMENT_GATEWAY`` names the class.

Both calls must be idempotent per reference: the payout work item may run
twice (a worker killed after sending, before recording), and the gateway is
what makes the second send a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Protocol

from django.conf import settings
from django.utils.module_loading import import_string


@dataclass(frozen=True)
class PayoutResult:
    """What the gateway says about a payout: sent (with its reference) or refused for good."""

    sent: bool
    gateway_ref: str = ""
    failure: str = ""


class PaymentGateway(Protocol):
    """A payment provider. ``name`` is stored with each top-up and payout."""

    name: str

    def topup_verify(self, *, external_ref: str, amount: int, currency: str) -> None:
        """Check that the gateway really received ``amount`` under ``external_ref``.

        :raises AmountInvalid: it did not (the top-up is refused).
        """

    def payout_send(
        self, *, payout_ref: str, organisation_id: int, amount: int, currency: str
    ) -> PayoutResult:
        """Send a payout, once per ``payout_ref`` (a repeat returns the first result).

        Raise any exception for a transient failure (the work item retries).
        """


class OperatorGateway:
    """Bank transfers an operator records: top-ups are taken as recorded; payouts are manual.

    A payout is "sent" when the platform has moved it to the payouts account;
    the operator makes the transfer from the list of sent payouts, whose
    reference (``manual:<payout ref>``) goes in the transfer's description.
    """

    name = "operator"

    def topup_verify(self, *, external_ref: str, amount: int, currency: str) -> None:
        # The operator saw the transfer on the bank statement; nothing to ask.
        return None

    def payout_send(
        self, *, payout_ref: str, organisation_id: int, amount: int, currency: str
    ) -> PayoutResult:
        return PayoutResult(sent=True, gateway_ref=f"manual:{payout_ref}")


@cache
def _gateway_class(path: str) -> type[PaymentGateway]:
    gateway_class: type[PaymentGateway] = import_string(path)
    return gateway_class


def payment_gateway() -> PaymentGateway:
    """The configured gateway (``MARKETPLACE_PAYMENT_GATEWAY``), a fresh instance per call."""
    return _gateway_class(settings.MARKETPLACE_PAYMENT_GATEWAY)()
