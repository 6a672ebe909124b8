"""The double-entry ledger (DESIGN.md promise 4, "Money").

Amounts are integer minor units of an ISO 4217 currency. An account's balance
is the sum of its postings. For the guarded kinds (organisation balances,
which may not go negative) ``LedgerAccount.balance`` caches that sum, changed
only by ``marketplace.ledger`` under the account's row lock, and
``ledger_check`` proves the two agree; other accounts keep it at 0, so that
posting to them takes no lock. Transactions and postings are never
updated or deleted (on Postgres a trigger refuses it, and a deferred
constraint trigger refuses a transaction whose postings do not sum to zero per
currency); a mistake is undone by posting its reversal.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.db.models.functions import Length
from django.db.models.lookups import Exact
from django.utils import timezone

from common.models import Organisation

__all__ = [
    "GUARDED_KINDS",
    "ORGANISATION_KINDS",
    "PLATFORM_KINDS",
    "REFERENCE_KINDS",
    "AccountKind",
    "LedgerAccount",
    "LedgerTransaction",
    "Posting",
]


class AccountKind(models.TextChoices):
    ORGANISATION_BALANCE = "organisation_balance", "Organisation balance"
    ESCROW = "escrow", "Escrow"
    RIGHTS_HOLDER_PAYABLE = "rights_holder_payable", "Rights-holder payable"
    PLATFORM_FEE = "platform_fee", "Platform fee"
    PAYOUTS = "payouts", "Payouts"
    EXTERNAL_FUNDING = "external_funding", "External funding"


# Which kinds belong to an organisation, which to an order (by reference), and
# which are the platform's own (one per currency).
ORGANISATION_KINDS = (AccountKind.ORGANISATION_BALANCE, AccountKind.RIGHTS_HOLDER_PAYABLE)
REFERENCE_KINDS = (AccountKind.ESCROW,)
PLATFORM_KINDS = (AccountKind.PLATFORM_FEE, AccountKind.PAYOUTS, AccountKind.EXTERNAL_FUNDING)
# Accounts whose balance may not go negative: locked while posting, balance cached.
GUARDED_KINDS = (AccountKind.ORGANISATION_BALANCE,)


class LedgerAccount(models.Model):
    """One account in one currency: an organisation's balance, an order's escrow, the fee pot, ..."""

    kind = models.CharField(max_length=32, choices=AccountKind.choices)
    organisation = models.ForeignKey(
        Organisation, on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_accounts"
    )
    # The order reference an escrow account holds money for; empty for other kinds.
    ref = models.CharField(max_length=100, blank=True, default="")
    currency = models.CharField(max_length=3)
    # The sum of the postings, cached for guarded kinds only (0 for the others).
    balance = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            # Two constraints because NULL organisations never collide in a plain unique index.
            models.UniqueConstraint(
                fields=["kind", "organisation", "ref", "currency"],
                condition=Q(organisation__isnull=False),
                name="ledgeraccount_unique_per_organisation",
            ),
            models.UniqueConstraint(
                fields=["kind", "ref", "currency"],
                condition=Q(organisation__isnull=True),
                name="ledgeraccount_unique_without_organisation",
            ),
            models.CheckConstraint(
                condition=Exact(Length("currency"), 3), name="ledgeraccount_currency_code"
            ),
            models.CheckConstraint(
                condition=(
                    Q(kind__in=ORGANISATION_KINDS, organisation__isnull=False, ref="")
                    | Q(kind__in=REFERENCE_KINDS, organisation__isnull=True) & ~Q(ref="")
                    | Q(kind__in=PLATFORM_KINDS, organisation__isnull=True, ref="")
                ),
                name="ledgeraccount_owner_matches_kind",
            ),
            models.CheckConstraint(
                condition=~Q(kind=AccountKind.ORGANISATION_BALANCE) | Q(balance__gte=0),
                name="ledgeraccount_organisation_balance_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=GUARDED_KINDS) | Q(balance=0),
                name="ledgeraccount_balance_cached_for_guarded_kinds_only",
            ),
        ]

    def __str__(self) -> str:
        owner = self.organisation.name if self.organisation is not None else self.ref or "platform"
        return f"{self.get_kind_display()} {owner} {self.currency}"


class LedgerTransaction(models.Model):
    """A set of postings that moves money; they sum to zero per currency."""

    kind = models.CharField(max_length=64)
    idempotency_key = models.CharField(max_length=200, unique=True)
    memo = models.TextField(blank=True, default="")
    # Set on the reversal, pointing at what it undoes; unique, so nothing is reversed twice.
    reverses = models.OneToOneField(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="reversal"
    )
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"


class Posting(models.Model):
    """One leg of a transaction: a signed amount on one account (positive raises its balance)."""

    transaction = models.ForeignKey(LedgerTransaction, on_delete=models.PROTECT, related_name="postings")
    account = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="postings")
    amount = models.BigIntegerField()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=~Q(amount=0), name="posting_amount_not_zero"),
        ]

    def __str__(self) -> str:
        return f"{self.amount:+d} on account {self.account_id}"
