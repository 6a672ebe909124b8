"""Orders, licenses, settlements, top-ups and payouts (DESIGN.md "Money").

An order pins the offer's terms row, the price, the platform fee and the
rights allocation in force at the sale (its id and shares), so later edits
never change what was sold or who is paid. Money moves only through
``marketplace.ledger``; these rows say why it moved and make each movement
happen once (a settlement is unique per custody usage record).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

from common.models import Organisation, User
from common.public_ids import PublicIdField
from custody.models import DatasetVersion, Grant, UsageRecord
from marketplace.models.catalog import Listing, Offer, OfferTerms, PriceModel
from marketplace.models.ledger import LedgerTransaction

__all__ = [
    "License",
    "LicenseState",
    "Order",
    "OrderState",
    "Payout",
    "PayoutState",
    "Settlement",
    "SettlementLine",
    "TopUp",
]


class OrderState(models.TextChoices):
    PENDING = "pending", "Awaiting the provider's approval"
    PAID = "paid", "Paid (license issued)"
    REJECTED = "rejected", "Rejected"
    TIMED_OUT = "timed_out", "Approval timed out"


# States that hold an exclusive offer's slot (a paid order holds it through its license).
SLOT_HOLDING_ORDER_STATES = (OrderState.PENDING, OrderState.PAID)


class Order(models.Model):
    """A trainer organisation's purchase of one offer's terms; its payment waits in escrow."""

    ref = models.CharField(max_length=40, unique=True)
    buyer = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="orders")
    placed_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    listing = models.ForeignKey(Listing, on_delete=models.PROTECT, related_name="orders")
    offer = models.ForeignKey(Offer, on_delete=models.PROTECT, related_name="orders")
    terms = models.ForeignKey(OfferTerms, on_delete=models.PROTECT, related_name="orders")
    # The Idempotency-Key the order was placed with ("" when none): one order per key and buyer.
    idempotency_key = models.CharField(max_length=240, blank=True, default="")
    state = models.CharField(max_length=16, choices=OrderState.choices)
    price_model = models.CharField(max_length=16, choices=PriceModel.choices)
    currency = models.CharField(max_length=3)
    unit_price = models.BigIntegerField()
    # Minor units escrowed at placement (fixed: the price; metered: the cap's price; period: one period).
    escrow_amount = models.BigIntegerField()
    # Metered: the token cap the escrow covers. Period: how many periods were bought.
    tokens_cap = models.BigIntegerField(null=True, blank=True)
    periods = models.PositiveIntegerField(null=True, blank=True)
    period_days = models.PositiveIntegerField(null=True, blank=True)
    # Frozen at the sale: the platform fee and the rights allocation (id and {org id: bps}).
    fee_bps = models.PositiveIntegerField()
    allocation_id = models.BigIntegerField()
    allocation_shares = models.JSONField()
    reject_reason = models.CharField(max_length=300, blank=True)
    approval_deadline = models.DateTimeField(null=True, blank=True)
    decided_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    paid_at = models.DateTimeField(null=True, blank=True)
    # When the buyer explicitly accepted the terms snapshot (``terms``) it was shown before ordering;
    # null for an order placed without that step (the API, where the call itself is the acceptance).
    terms_accepted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["buyer", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="order_unique_idempotency_key",
            ),
            models.CheckConstraint(condition=Q(escrow_amount__gte=0), name="order_escrow_not_negative"),
            models.CheckConstraint(
                condition=Q(fee_bps__gte=0, fee_bps__lte=10_000), name="order_fee_bps_range"
            ),
        ]
        indexes = [
            models.Index(fields=["offer", "state"]),
            models.Index(fields=["buyer", "-created_at"]),
            models.Index(fields=["state", "approval_deadline"]),
        ]

    def __str__(self) -> str:
        return self.ref

    @property
    def shares(self) -> dict[int, int]:
        """The frozen allocation as {organisation id: basis points}."""
        return {int(k): int(v) for k, v in self.allocation_shares.items()}


class LicenseState(models.TextChoices):
    ACTIVE = "active", "Active"
    EXPIRED = "expired", "Expired"
    REVOKED = "revoked", "Revoked"


class License(models.Model):
    """A paid order's right to train; custody's grant (external_ref = ref) is its technical side."""

    ref = models.CharField(max_length=40, unique=True)
    order = models.OneToOneField(Order, on_delete=models.PROTECT, related_name="license")
    licensee = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="licenses")
    version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="licenses")
    grant = models.OneToOneField(Grant, on_delete=models.PROTECT, related_name="license")
    state = models.CharField(max_length=16, choices=LicenseState.choices, default=LicenseState.ACTIVE)
    starts_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    # Escrow bookkeeping in minor units (the ledger holds the truth; these say where it went).
    escrowed = models.BigIntegerField(default=0)
    released = models.BigIntegerField(default=0)
    refunded = models.BigIntegerField(default=0)
    # Metered: platform tokens settled so far. Period: periods escrowed so far.
    tokens_settled = models.BigIntegerField(default=0)
    periods_escrowed = models.PositiveIntegerField(default=0)
    ended_at = models.DateTimeField(null=True, blank=True)
    end_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(released__gte=0, refunded__gte=0, escrowed__gte=0),
                name="license_escrow_amounts_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(escrowed__gte=models.F("released") + models.F("refunded")),
                name="license_never_releases_more_than_escrowed",
            ),
        ]
        indexes = [models.Index(fields=["state", "expires_at"])]

    def __str__(self) -> str:
        return self.ref

    @property
    def escrow_left(self) -> int:
        return self.escrowed - self.released - self.refunded


class Settlement(models.Model):
    """One custody usage record settled: escrow released to the holders and the fee, exactly once."""

    # Named by settlement notifications (``object_id``); the integer key would count settlements.
    public_id = PublicIdField(prefix="stl")
    # What is settled: one custody usage record, or (per-period pricing) one elapsed period.
    usage = models.OneToOneField(
        UsageRecord, on_delete=models.PROTECT, null=True, blank=True, related_name="settlement"
    )
    period = models.PositiveIntegerField(null=True, blank=True)
    license = models.ForeignKey(License, on_delete=models.PROTECT, related_name="settlements")
    amount = models.BigIntegerField()
    fee = models.BigIntegerField()
    # Waived: the job failed through the platform's fault before settling; nothing was released.
    waived = models.BooleanField(default=False)
    transaction = models.OneToOneField(
        LedgerTransaction, on_delete=models.PROTECT, null=True, blank=True, related_name="settlement"
    )
    # Set when a job failed through the platform's fault: its release went back to escrow.
    reversed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(usage__isnull=False, period__isnull=True) | Q(usage__isnull=True, period__gte=1),
                name="settlement_of_usage_or_period",
            ),
            models.UniqueConstraint(
                fields=["license", "period"],
                condition=Q(period__isnull=False),
                name="settlement_unique_period",
            ),
            models.CheckConstraint(condition=Q(amount__gte=0, fee__gte=0), name="settlement_not_negative"),
            models.CheckConstraint(
                condition=Q(amount=0) | Q(transaction__isnull=False), name="settlement_money_has_transaction"
            ),
        ]

    def __str__(self) -> str:
        return f"settlement {self.pk} of license {self.license_id}: {self.amount}"


class SettlementLine(models.Model):
    """One rights holder's part of a settlement (statements add these up)."""

    settlement = models.ForeignKey(Settlement, on_delete=models.PROTECT, related_name="lines")
    holder = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="settlement_lines")
    listing = models.ForeignKey(Listing, on_delete=models.PROTECT, related_name="settlement_lines")
    currency = models.CharField(max_length=3)
    amount = models.BigIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["settlement", "holder"], name="settlementline_unique_holder"),
        ]
        indexes = [models.Index(fields=["holder", "created_at"])]

    def __str__(self) -> str:
        return f"{self.holder_id}: {self.amount} {self.currency}"


class TopUp(models.Model):
    """Money that entered an organisation's balance through the payment gateway."""

    ref = models.CharField(max_length=40, unique=True)
    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="topups")
    currency = models.CharField(max_length=3)
    amount = models.BigIntegerField()
    gateway = models.CharField(max_length=40)
    # The gateway's (or the bank transfer's) reference: one top-up per reference and gateway.
    external_ref = models.CharField(max_length=120)
    recorded_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    transaction = models.OneToOneField(LedgerTransaction, on_delete=models.PROTECT, related_name="topup")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["gateway", "external_ref"], name="topup_unique_external_ref"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="topup_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.ref}: {self.amount} {self.currency}"


class PayoutState(models.TextChoices):
    REQUESTED = "requested", "Requested"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed (returned to the payable)"


class Payout(models.Model):
    """Money moved out of a rights holder's payable, sent through the payment gateway."""

    ref = models.CharField(max_length=40, unique=True)
    organisation = models.ForeignKey(Organisation, on_delete=models.PROTECT, related_name="payouts")
    currency = models.CharField(max_length=3)
    amount = models.BigIntegerField()
    state = models.CharField(max_length=16, choices=PayoutState.choices, default=PayoutState.REQUESTED)
    idempotency_key = models.CharField(max_length=240, blank=True, default="")
    requested_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    gateway = models.CharField(max_length=40)
    gateway_ref = models.CharField(max_length=120, blank=True)
    failure_reason = models.CharField(max_length=300, blank=True)
    transaction = models.OneToOneField(LedgerTransaction, on_delete=models.PROTECT, related_name="payout")
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="payout_amount_positive"),
            models.UniqueConstraint(
                fields=["organisation", "idempotency_key"],
                condition=~Q(idempotency_key=""),
                name="payout_unique_idempotency_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.ref}: {self.amount} {self.currency} ({self.state})"
