"""The double-entry ledger's services (DESIGN.md promise 4 and "Money").

Every movement is a ``LedgerTransaction`` whose postings sum to zero per
currency, in integer minor units. Posting is idempotent per key, atomic and
audited in the same database transaction, in five statements (docs/money.md,
"Posting, locks and throughput"): the transaction row (``ON CONFLICT`` on its
key: a twin in flight is waited for and returned), the postings in one
insert, the pending audit event, then one conditional ``UPDATE`` per guarded
account (organisation balances) in primary-key order, which locks it, checks
the funds and moves the cached balance in one step; then the commit. So a
balance's lock is held only from its update to the commit, two posts can
never deadlock on each other, and none takes a balance below zero. The
platform's own accounts are never locked: every sale touches the fee
account, and a lock there would queue all posts behind one another.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Generic, TypeVar

from django.db import connection, transaction
from django.db.models import Sum

from common.audit import audit_record
from common.models import Organisation, User
from common.money import format_money
from marketplace.exceptions import (
    IdempotencyKeyReused,
    InsufficientFunds,
    InvalidPosting,
    InvalidSplit,
    ReversalRefused,
    UnbalancedTransaction,
)
from marketplace.models import (
    GUARDED_KINDS,
    ORGANISATION_KINDS,
    PLATFORM_KINDS,
    REFERENCE_KINDS,
    AccountKind,
    LedgerAccount,
    LedgerTransaction,
    Posting,
)

CURRENCY_CODE = re.compile(r"[A-Z]{3}")
BASIS_POINTS = 10_000

PostingLine = tuple[LedgerAccount, int]


# --- accounts -----------------------------------------------------------------------------------


def ledger_account_get(
    *, kind: str, currency: str, organisation: Organisation | None = None, ref: str = ""
) -> LedgerAccount:
    """The account of this kind, owner and currency, created on first use.

    :raises InvalidPosting: the currency is not an ISO 4217 code, or the owner does not fit the kind.
    """
    if not isinstance(currency, str) or not CURRENCY_CODE.fullmatch(currency):
        raise InvalidPosting(f"{currency!r} is not an ISO 4217 currency code (three capital letters).")
    if kind in ORGANISATION_KINDS:
        if organisation is None or ref:
            raise InvalidPosting(f"A {kind} account belongs to an organisation and has no reference.")
    elif kind in REFERENCE_KINDS:
        if organisation is not None or not ref:
            raise InvalidPosting(f"A {kind} account is named by a reference, not an organisation.")
    elif kind in PLATFORM_KINDS:
        if organisation is not None or ref:
            raise InvalidPosting(f"A {kind} account is the platform's: no organisation, no reference.")
    else:
        raise InvalidPosting(f"{kind!r} is not a ledger account kind.")
    account, _created = LedgerAccount.objects.get_or_create(
        kind=kind, organisation=organisation, ref=ref, currency=currency
    )
    return account


def organisation_balance_account(*, organisation: Organisation, currency: str) -> LedgerAccount:
    """The organisation's spendable balance in this currency."""
    return ledger_account_get(
        kind=AccountKind.ORGANISATION_BALANCE, organisation=organisation, currency=currency
    )


def escrow_account(*, order_ref: str, currency: str) -> LedgerAccount:
    """The escrow account holding an order's payment."""
    return ledger_account_get(kind=AccountKind.ESCROW, ref=order_ref, currency=currency)


def payable_account(*, organisation: Organisation, currency: str) -> LedgerAccount:
    """What the platform owes a rights holder, until paid out."""
    return ledger_account_get(
        kind=AccountKind.RIGHTS_HOLDER_PAYABLE, organisation=organisation, currency=currency
    )


def platform_account(*, kind: str, currency: str) -> LedgerAccount:
    """One of the platform's own accounts: fee, payouts or external funding."""
    return ledger_account_get(kind=kind, currency=currency)


# --- posting ------------------------------------------------------------------------------------


def _validated(postings: Sequence[PostingLine]) -> dict[int, int]:
    """Net amount per account id; raises unless the postings are well formed and balanced."""
    if len(postings) < 2:
        raise UnbalancedTransaction("A transaction needs at least two postings.")
    per_currency: dict[str, int] = defaultdict(int)
    net: dict[int, int] = defaultdict(int)
    for account, amount in postings:
        if not isinstance(account, LedgerAccount) or account.pk is None:
            raise InvalidPosting("Each posting needs a saved ledger account.")
        # bool is an int subclass; True is not a sum of money.
        if not isinstance(amount, int) or isinstance(amount, bool) or amount == 0:
            raise InvalidPosting(f"Amounts are non-zero integers in minor units, not {amount!r}.")
        per_currency[account.currency] += amount
        net[account.pk] += amount
    unbalanced = {currency: total for currency, total in per_currency.items() if total != 0}
    if unbalanced:
        raise UnbalancedTransaction(f"Postings must sum to zero per currency; they sum to {unbalanced}.")
    return dict(net)


def _same_postings(txn: LedgerTransaction, postings: Sequence[PostingLine]) -> bool:
    stored = sorted(txn.postings.values_list("account_id", "amount"))
    return stored == sorted((account.pk, amount) for account, amount in postings)


def _existing(
    *, idempotency_key: str, kind: str, postings: Sequence[PostingLine]
) -> LedgerTransaction | None:
    txn = LedgerTransaction.objects.filter(idempotency_key=idempotency_key).first()
    if txn is None:
        return None
    if txn.kind != kind or not _same_postings(txn, postings):
        raise IdempotencyKeyReused(f"Idempotency key {idempotency_key!r} already posted something else.")
    return txn


# The overdraft check and the balance change in one statement: the UPDATE takes the row
# lock, waits for a concurrent poster's commit and re-reads the balance after it, so
# nothing can spend between the check and the write. No row when the funds do not cover it.
MOVE_GUARDED_BALANCE = (
    "UPDATE marketplace_ledgeraccount SET balance = balance + %s WHERE id = %s AND balance + %s >= 0"
)


def _move_guarded_balances(guarded: dict[int, int]) -> None:
    """Apply each guarded account's net change, refusing any that would go below zero.

    :raises InsufficientFunds: an account's balance cannot cover its debit (the caller rolls back).
    """
    with connection.cursor() as cursor:
        # Primary-key order: every poster takes the locks in the same order, so none deadlock.
        for pk in sorted(guarded):
            cursor.execute(MOVE_GUARDED_BALANCE, [guarded[pk], pk, guarded[pk]])
            if cursor.rowcount != 1:
                account = LedgerAccount.objects.get(pk=pk)
                raise InsufficientFunds(
                    f"Balance {format_money(account.balance, account.currency)} cannot cover "
                    f"{format_money(-guarded[pk], account.currency)}."
                )


# One statement, no savepoint: a twin's key makes the insert a no-op instead of an error
# (Postgres, and SQLite from 3.35). Django's ORM cannot say "ON CONFLICT ... RETURNING".
INSERT_TRANSACTION = (
    "INSERT INTO marketplace_ledgertransaction (kind, idempotency_key, memo, reverses_id, created_at)"
    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (idempotency_key) DO NOTHING RETURNING id"
)


def _create_transaction(
    *, kind: str, idempotency_key: str, memo: str, reverses: LedgerTransaction | None
) -> LedgerTransaction | None:
    """The new transaction row, or None when a twin with the same key committed first."""
    txn = LedgerTransaction(kind=kind, idempotency_key=idempotency_key, memo=memo, reverses=reverses)
    created_at = connection.ops.adapt_datetimefield_value(txn.created_at)
    with connection.cursor() as cursor:
        cursor.execute(INSERT_TRANSACTION, [kind, idempotency_key, memo, txn.reverses_id, created_at])
        row = cursor.fetchone()
    if row is None:
        return None
    txn.pk = row[0]
    txn._state.adding = False
    return txn


def _insert_postings(txn: LedgerTransaction, postings: Sequence[PostingLine]) -> None:
    """All the transaction's postings in one INSERT (the ORM's bulk_create costs more per call)."""
    values = ", ".join(["(%s, %s, %s)"] * len(postings))
    sql = f"INSERT INTO marketplace_posting (transaction_id, account_id, amount) VALUES {values}"  # noqa: S608 - placeholders only
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for account, amount in postings for value in (txn.pk, account.pk, amount)])


@transaction.atomic
def _post(
    *,
    kind: str,
    postings: Sequence[PostingLine],
    idempotency_key: str,
    memo: str,
    reverses: LedgerTransaction | None,
    actor: User | None,
    organisation: Organisation | None,
) -> LedgerTransaction:
    net = _validated(postings)
    if not idempotency_key:
        raise InvalidPosting("A ledger transaction needs an idempotency key.")
    # The key first: a twin in flight makes this insert wait for its commit and then
    # yield to it, before this post holds any account's lock.
    txn = _create_transaction(kind=kind, idempotency_key=idempotency_key, memo=memo, reverses=reverses)
    if txn is None:
        twin = _existing(idempotency_key=idempotency_key, kind=kind, postings=postings)
        assert twin is not None  # the insert met its key
        return twin
    _insert_postings(txn, postings)
    audit_record(
        action="ledger.reverse" if reverses is not None else "ledger.post",
        actor=actor,
        organisation=organisation,
        object_type="ledger_transaction",
        object_id=txn.pk,
        details=_audit_details(txn, postings),
    )
    # Only guarded accounts are locked, and last, so a lock is held only from its UPDATE
    # to the commit: the platform's hot accounts (fee, funding) never queue posts, and
    # posts that spend one organisation's balance queue for as short a time as they can.
    _move_guarded_balances(
        {
            account.pk: net[account.pk]
            for account, _amount in postings
            if account.kind in GUARDED_KINDS and net[account.pk]
        }
    )
    return txn


def _audit_details(txn: LedgerTransaction, postings: Sequence[PostingLine]) -> dict[str, Any]:
    return {
        "kind": txn.kind,
        "idempotency_key": txn.idempotency_key,
        "reverses": txn.reverses_id,
        "postings": [
            {"account": account.pk, "kind": account.kind, "currency": account.currency, "amount": amount}
            for account, amount in postings
        ],
    }


def ledger_post(
    *,
    kind: str,
    postings: Sequence[PostingLine],
    idempotency_key: str,
    memo: str = "",
    actor: User | None = None,
    organisation: Organisation | None = None,
) -> LedgerTransaction:
    """Post one balanced transaction, once per ``idempotency_key``; return it.

    A repeat with the same key and postings returns the first transaction.

    :raises UnbalancedTransaction: the postings do not sum to zero per currency.
    :raises InvalidPosting: an amount is not a non-zero integer, or an account is unsaved.
    :raises InsufficientFunds: an organisation's balance would go negative.
    :raises IdempotencyKeyReused: the key already names a different transaction.
    """
    return _post(
        kind=kind,
        postings=postings,
        idempotency_key=idempotency_key,
        memo=memo,
        reverses=None,
        actor=actor,
        organisation=organisation,
    )


def ledger_reverse(
    *, transaction: LedgerTransaction, reason: str, actor: User | None = None
) -> LedgerTransaction:
    """Post the negation of ``transaction``, once; return the reversal.

    :raises ReversalRefused: ``transaction`` is itself a reversal.
    :raises InsufficientFunds: the money has been spent since.
    """
    if transaction.reverses_id is not None:
        raise ReversalRefused(f"Transaction {transaction.pk} is a reversal; post a new transaction instead.")
    postings = [(p.account, -p.amount) for p in transaction.postings.select_related("account")]
    return _post(
        kind=f"reversal.{transaction.kind}"[:64],
        postings=postings,
        idempotency_key=f"reversal:{transaction.pk}",
        memo=reason,
        reverses=transaction,
        actor=actor,
        organisation=None,
    )


# --- reading and checking -----------------------------------------------------------------------


def balance(account: LedgerAccount) -> int:
    """The account's balance: the sum of its postings, in minor units."""
    total = Posting.objects.filter(account=account).aggregate(total=Sum("amount"))["total"]
    return int(total or 0)


def trial_balance() -> dict[str, int]:
    """The sum of all postings per currency; every value is 0 in a sound ledger."""
    rows = Posting.objects.values("account__currency").annotate(total=Sum("amount")).order_by()
    return {row["account__currency"]: int(row["total"]) for row in rows}


def ledger_check() -> list[str]:
    """Every broken ledger invariant, as sentences; empty when the ledger is sound."""
    problems = [
        f"currency {currency} sums to {total}, not 0" for currency, total in trial_balance().items() if total
    ]
    unbalanced = (
        Posting.objects.values("transaction_id", "account__currency")
        .annotate(total=Sum("amount"))
        .exclude(total=0)
        .order_by("transaction_id")
    )
    problems += [
        f"transaction {row['transaction_id']} sums to {row['total']} {row['account__currency']}"
        for row in unbalanced
    ]
    empty = LedgerTransaction.objects.filter(postings__isnull=True).values_list("pk", flat=True)
    problems += [f"transaction {pk} has no postings" for pk in empty]
    guarded = LedgerAccount.objects.filter(kind__in=GUARDED_KINDS)
    for account in guarded.annotate(posted=Sum("postings__amount")).order_by("pk"):
        posted = int(account.posted or 0)
        if account.balance != posted:
            problems.append(f"account {account.pk} shows {account.balance} but its postings sum to {posted}")
        if posted < 0:
            problems.append(f"{account.kind} account {account.pk} is negative ({posted})")
    return problems


# --- splitting ----------------------------------------------------------------------------------

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Split(Generic[K]):
    """An amount divided: the platform fee and each holder's part; they sum to the amount."""

    fee: int
    parts: dict[K, int]


def split(amount: int, shares: Mapping[K, int], fee_bps: int) -> Split[K]:
    """Divide ``amount`` among the fee and the holders' ``shares`` (weights) by largest remainder.

    The fee is ``fee_bps`` basis points of the amount and the holders share the
    rest in proportion to their weights, all in one largest-remainder pass, so
    the parts sum exactly to ``amount`` and each is within one minor unit of
    its exact share. Ties in remainder go to holders in ascending key order,
    the platform fee last; the result does not depend on the mapping's order.

    :raises InvalidSplit: a negative amount, no holders, a weight below 1, or a fee outside 0..10,000.
    """
    _check_split_input(amount, shares, fee_bps)
    total_weight = sum(shares.values())
    holders_total = Fraction(amount * (BASIS_POINTS - fee_bps), BASIS_POINTS)
    ordered = sorted(shares, key=_sort_key)
    exact: list[Fraction] = [holders_total * shares[key] / total_weight for key in ordered]
    exact.append(Fraction(amount * fee_bps, BASIS_POINTS))  # the fee, last in ties
    floors = [int(value) for value in exact]  # exact values are non-negative: int() floors
    leftover = amount - sum(floors)
    by_remainder = sorted(range(len(exact)), key=lambda i: (-(exact[i] - floors[i]), i))
    for index in by_remainder[:leftover]:
        floors[index] += 1
    return Split(fee=floors[-1], parts={key: floors[i] for i, key in enumerate(ordered)})


def _sort_key(key: Any) -> tuple[str, Any]:
    # Keys of one type sort naturally (2 before 10); the type name keeps mixed keys comparable.
    return (type(key).__name__, key)


def _check_split_input(amount: int, shares: Mapping[Any, int], fee_bps: int) -> None:
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
        raise InvalidSplit(f"The amount must be a non-negative integer in minor units, not {amount!r}.")
    if not shares:
        raise InvalidSplit("A split needs at least one holder.")
    if any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in shares.values()):
        raise InvalidSplit("Each share is a positive integer (basis points or a weight).")
    if not isinstance(fee_bps, int) or isinstance(fee_bps, bool) or not 0 <= fee_bps <= BASIS_POINTS:
        raise InvalidSplit(f"The fee is 0..10,000 basis points, not {fee_bps!r}.")
