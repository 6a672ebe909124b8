"""The ledger: double entry in integer minor units, never rewritten, only reversed (promise 4)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from hypothesis import given, settings
from hypothesis import strategies as st

from common.models import AuditEvent
from marketplace.exceptions import (
    IdempotencyKeyReused,
    InsufficientFunds,
    InvalidPosting,
    InvalidSplit,
    ReversalRefused,
    UnbalancedTransaction,
)
from marketplace.ledger import (
    balance,
    escrow_account,
    ledger_account_get,
    ledger_check,
    ledger_post,
    ledger_reverse,
    organisation_balance_account,
    payable_account,
    platform_account,
    split,
    trial_balance,
)
from marketplace.models import AccountKind, LedgerAccount, LedgerTransaction, Posting
from tests.conftest import is_postgres


@contextmanager
def as_database_owner() -> Iterator[None]:
    """Bypass the ledger's and audit log's triggers on Postgres (owner only); a no-op on SQLite."""
    if not is_postgres():
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = DEFAULT")


@pytest.fixture(autouse=True)
def _ledger_sound_after_each_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test on the database, every ledger invariant still holds.

    Transactional tests check inside the test: their rows are gone by teardown.
    """
    if "db" not in request.fixturenames or "transactional_db" in request.fixturenames:
        yield
        return
    request.getfixturevalue("db")  # set up first, so the check runs before the rollback
    yield
    assert ledger_check() == []


@pytest.fixture
def external(db) -> LedgerAccount:
    return platform_account(kind=AccountKind.EXTERNAL_FUNDING, currency="EUR")


def fund(organisation, amount: int, *, key: str = "topup-1", currency: str = "EUR") -> LedgerTransaction:
    return ledger_post(
        kind="funding.topup",
        postings=[
            (platform_account(kind=AccountKind.EXTERNAL_FUNDING, currency=currency), -amount),
            (organisation_balance_account(organisation=organisation, currency=currency), amount),
        ],
        idempotency_key=key,
    )


class TestLedgerAccounts:
    def test_one_account_per_kind_owner_and_currency(self, acme):
        first = organisation_balance_account(organisation=acme, currency="EUR")
        assert organisation_balance_account(organisation=acme, currency="EUR") == first
        assert organisation_balance_account(organisation=acme, currency="USD") != first
        assert payable_account(organisation=acme, currency="EUR") != first
        assert escrow_account(order_ref="o-1", currency="EUR") == escrow_account(
            order_ref="o-1", currency="EUR"
        )

    def test_database_refuses_a_duplicate_platform_account(self, external):
        with pytest.raises(IntegrityError), transaction.atomic():
            LedgerAccount.objects.create(kind=AccountKind.EXTERNAL_FUNDING, currency="EUR")

    @pytest.mark.parametrize("currency", ["eur", "EURO", "", "E1R"])
    def test_rejects_a_malformed_currency(self, acme, currency):
        with pytest.raises(InvalidPosting):
            organisation_balance_account(organisation=acme, currency=currency)

    def test_rejects_an_owner_that_does_not_fit_the_kind(self, acme):
        with pytest.raises(InvalidPosting):
            ledger_account_get(kind=AccountKind.ESCROW, currency="EUR", organisation=acme)
        with pytest.raises(InvalidPosting):
            ledger_account_get(kind=AccountKind.ORGANISATION_BALANCE, currency="EUR")


class TestLedgerPost:
    def test_moves_money_and_keeps_balances_equal_to_postings(self, acme, external):
        fund(acme, 5_000)
        account = organisation_balance_account(organisation=acme, currency="EUR")
        account.refresh_from_db()
        assert (account.balance, balance(account)) == (5_000, 5_000)
        assert balance(external) == -5_000
        assert trial_balance() == {"EUR": 0}

    def test_refuses_postings_that_do_not_sum_to_zero(self, acme, external):
        account = organisation_balance_account(organisation=acme, currency="EUR")
        with pytest.raises(UnbalancedTransaction) as caught:
            ledger_post(kind="funding.topup", postings=[(external, -100), (account, 99)], idempotency_key="k")
        assert caught.value.code == "marketplace.unbalanced_transaction"
        assert not LedgerTransaction.objects.exists()

    def test_refuses_balance_in_total_but_not_per_currency(self, acme):
        eur = platform_account(kind=AccountKind.EXTERNAL_FUNDING, currency="EUR")
        usd = organisation_balance_account(organisation=acme, currency="USD")
        with pytest.raises(UnbalancedTransaction):
            ledger_post(kind="funding.topup", postings=[(eur, -100), (usd, 100)], idempotency_key="k")

    @pytest.mark.parametrize("amount", [0, 1.5, True, "100"])
    def test_refuses_amounts_that_are_not_non_zero_integers(self, acme, external, amount):
        account = organisation_balance_account(organisation=acme, currency="EUR")
        with pytest.raises(InvalidPosting):
            ledger_post(
                kind="funding.topup", postings=[(external, amount), (account, amount)], idempotency_key="k"
            )

    def test_refuses_a_single_posting(self, external):
        with pytest.raises(UnbalancedTransaction):
            ledger_post(kind="noop", postings=[(external, 0)], idempotency_key="k")

    def test_is_idempotent_per_key(self, acme):
        first = fund(acme, 700, key="topup-a")
        again = fund(acme, 700, key="topup-a")
        assert again.pk == first.pk
        assert again.created_at == first.created_at
        assert LedgerTransaction.objects.count() == 1
        assert balance(organisation_balance_account(organisation=acme, currency="EUR")) == 700

    def test_a_reused_key_with_other_postings_is_a_conflict(self, acme):
        fund(acme, 700, key="topup-a")
        with pytest.raises(IdempotencyKeyReused):
            fund(acme, 800, key="topup-a")

    def test_a_retried_spend_returns_the_spend_rather_than_failing_for_funds(self, acme):
        fund(acme, 100)
        postings = [
            (organisation_balance_account(organisation=acme, currency="EUR"), -100),
            (escrow_account(order_ref="o-1", currency="EUR"), 100),
        ]
        first = ledger_post(kind="order.escrow", postings=postings, idempotency_key="pay-o-1")
        assert ledger_post(kind="order.escrow", postings=postings, idempotency_key="pay-o-1") == first

    def test_refuses_to_overdraw_an_organisation(self, acme):
        fund(acme, 100)
        account = organisation_balance_account(organisation=acme, currency="EUR")
        with pytest.raises(InsufficientFunds) as caught:
            ledger_post(
                kind="order.escrow",
                postings=[(account, -101), (escrow_account(order_ref="o-1", currency="EUR"), 101)],
                idempotency_key="pay-o-1",
            )
        assert caught.value.code == "marketplace.insufficient_funds"
        assert balance(account) == 100
        assert LedgerTransaction.objects.count() == 1

    def test_a_refused_post_leaves_no_row_and_the_callers_transaction_goes_on(self, acme):
        fund(acme, 100)
        account = organisation_balance_account(organisation=acme, currency="EUR")
        escrow = escrow_account(order_ref="o-1", currency="EUR")
        events = AuditEvent.objects.count()
        with transaction.atomic():
            with pytest.raises(InsufficientFunds, match="cannot cover"):
                ledger_post(
                    kind="order.escrow", postings=[(account, -101), (escrow, 101)], idempotency_key="k"
                )
            # The refusal came after the rows were written: they went with it, the key too.
            assert not LedgerTransaction.objects.filter(idempotency_key="k").exists()
            assert not Posting.objects.filter(account=escrow).exists()
            assert AuditEvent.objects.count() == events
            ledger_post(kind="order.escrow", postings=[(account, -100), (escrow, 100)], idempotency_key="k")
        account.refresh_from_db()
        assert (account.balance, balance(account), balance(escrow)) == (0, 0, 100)

    def test_a_move_between_two_organisations_checks_and_updates_both(self, acme, bolt):
        fund(acme, 100, key="topup-acme")
        acme_account = organisation_balance_account(organisation=acme, currency="EUR")
        bolt_account = organisation_balance_account(organisation=bolt, currency="EUR")
        ledger_post(kind="transfer", postings=[(acme_account, -60), (bolt_account, 60)], idempotency_key="t1")
        with pytest.raises(InsufficientFunds):
            ledger_post(
                kind="transfer", postings=[(bolt_account, -61), (acme_account, 61)], idempotency_key="t2"
            )
        acme_account.refresh_from_db()
        bolt_account.refresh_from_db()
        assert (acme_account.balance, bolt_account.balance) == (40, 60)

    def test_records_each_post_in_the_audit_log(self, acme, alice):
        txn = fund(acme, 100)
        event = AuditEvent.objects.get(action="ledger.post")
        assert event.object_id == str(txn.pk)
        assert event.details["idempotency_key"] == "topup-1"
        assert sorted(p["amount"] for p in event.details["postings"]) == [-100, 100]

    def test_an_organisation_balance_may_not_go_negative_in_the_database(self, acme):
        account = organisation_balance_account(organisation=acme, currency="EUR")
        with pytest.raises(IntegrityError), transaction.atomic():
            LedgerAccount.objects.filter(pk=account.pk).update(balance=-1)


class TestLedgerReverse:
    def test_posts_the_negation_once(self, acme):
        txn = fund(acme, 300)
        reversal = ledger_reverse(transaction=txn, reason="card charge disputed")
        assert ledger_reverse(transaction=txn, reason="again") == reversal
        assert reversal.reverses == txn
        assert sorted(reversal.postings.values_list("amount", flat=True)) == [-300, 300]
        assert balance(organisation_balance_account(organisation=acme, currency="EUR")) == 0
        assert LedgerTransaction.objects.count() == 2
        assert AuditEvent.objects.filter(action="ledger.reverse").count() == 1

    def test_refuses_to_reverse_a_reversal(self, acme):
        reversal = ledger_reverse(transaction=fund(acme, 300), reason="mistake")
        with pytest.raises(ReversalRefused) as caught:
            ledger_reverse(transaction=reversal, reason="undo the undo")
        assert caught.value.code == "marketplace.reversal_of_reversal"

    def test_refuses_to_reverse_money_already_spent(self, acme):
        topup = fund(acme, 300)
        ledger_post(
            kind="order.escrow",
            postings=[
                (organisation_balance_account(organisation=acme, currency="EUR"), -300),
                (escrow_account(order_ref="o-1", currency="EUR"), 300),
            ],
            idempotency_key="pay-o-1",
        )
        with pytest.raises(InsufficientFunds):
            ledger_reverse(transaction=topup, reason="chargeback")


class TestLedgerCheck:
    def test_reports_a_cached_balance_that_drifted_from_its_postings(self, acme):
        fund(acme, 100)
        account = organisation_balance_account(organisation=acme, currency="EUR")
        LedgerAccount.objects.filter(pk=account.pk).update(balance=150)
        assert ledger_check() == [f"account {account.pk} shows 150 but its postings sum to 100"]
        LedgerAccount.objects.filter(pk=account.pk).update(balance=100)

    def test_reports_an_unbalanced_transaction_written_behind_its_back(self, acme, external):
        txn = fund(acme, 100)
        with as_database_owner():
            Posting.objects.filter(transaction=txn, account=external).update(amount=-90)
        problems = ledger_check()
        assert f"transaction {txn.pk} sums to 10 EUR" in problems
        assert "currency EUR sums to 10, not 0" in problems
        with as_database_owner():
            Posting.objects.filter(transaction=txn, account=external).update(amount=-100)


def raw_unbalanced_insert(debit: LedgerAccount, credit: LedgerAccount) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO marketplace_ledgertransaction (kind, idempotency_key, memo, created_at)"
            " VALUES ('raw', 'raw-1', '', now()) RETURNING id"
        )
        (txn_id,) = cursor.fetchone()
        cursor.execute(
            "INSERT INTO marketplace_posting (transaction_id, account_id, amount)"
            " VALUES (%s, %s, %s), (%s, %s, %s)",
            [txn_id, debit.pk, -100, txn_id, credit.pk, 99],
        )


@pytest.mark.postgres
class TestDatabaseKeepsTheLedger:
    def test_an_unbalanced_transaction_fails_at_commit(self, acme, external):
        account = organisation_balance_account(organisation=acme, currency="EUR")
        with pytest.raises(IntegrityError, match="unbalanced in EUR"), transaction.atomic():
            raw_unbalanced_insert(external, account)
            # Deferred: the statement itself passed; the check runs when the transaction ends.
            with connection.cursor() as cursor:
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        assert not LedgerTransaction.objects.exists()

    def test_a_transaction_without_postings_fails_at_commit(self, db):
        with pytest.raises(IntegrityError, match="no postings"), transaction.atomic():
            LedgerTransaction.objects.create(kind="raw", idempotency_key="empty")
            with connection.cursor() as cursor:
                cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")

    def test_refuses_to_update_a_posting(self, acme):
        txn = fund(acme, 100)
        with pytest.raises(DatabaseError, match="append-only: UPDATE"), transaction.atomic():
            Posting.objects.filter(transaction=txn).update(amount=5)
        assert sorted(txn.postings.values_list("amount", flat=True)) == [-100, 100]

    def test_refuses_to_delete_a_posting_or_a_transaction(self, acme):
        txn = fund(acme, 100)
        with pytest.raises(DatabaseError, match="append-only: DELETE"), transaction.atomic():
            Posting.objects.filter(transaction=txn).delete()
        with pytest.raises(DatabaseError, match="append-only: UPDATE"), transaction.atomic():
            LedgerTransaction.objects.filter(pk=txn.pk).update(memo="rewritten")
        assert txn.postings.count() == 2


@pytest.fixture
def committed(transactional_db) -> Iterator[None]:
    """Real commits (threads need them); ledger and audit rows removed as the owner before the flush."""
    yield
    with as_database_owner():
        Posting.objects.all().delete()
        LedgerTransaction.objects.all().delete()
        LedgerAccount.objects.all().delete()
        AuditEvent.objects.all().delete()


@pytest.mark.postgres
class TestConcurrentPosts:
    def test_an_unbalanced_raw_insert_is_refused_on_commit(self, committed, acme):
        external = platform_account(kind=AccountKind.EXTERNAL_FUNDING, currency="EUR")
        account = organisation_balance_account(organisation=acme, currency="EUR")
        with pytest.raises(IntegrityError, match="unbalanced"), transaction.atomic():
            raw_unbalanced_insert(external, account)
        assert not LedgerTransaction.objects.exists()

    def test_two_threads_spending_one_balance_never_overdraw_it(self, committed, acme):
        fund(acme, 100)
        account = organisation_balance_account(organisation=acme, currency="EUR")
        outcomes: list[str] = []
        barrier = threading.Barrier(2)

        def spend(thread: int) -> None:
            barrier.wait()
            try:
                for n in range(8):
                    escrow = escrow_account(order_ref=f"o-{thread}-{n}", currency="EUR")
                    try:
                        ledger_post(
                            kind="order.escrow",
                            postings=[(account, -10), (escrow, 10)],
                            idempotency_key=f"pay-{thread}-{n}",
                        )
                        outcomes.append("paid")
                    except InsufficientFunds:
                        outcomes.append("refused")
            finally:
                connection.close()

        threads = [threading.Thread(target=spend, args=(t,)) for t in (1, 2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(outcomes) == ["paid"] * 10 + ["refused"] * 6
        account.refresh_from_db()
        assert (account.balance, balance(account)) == (0, 0)
        assert ledger_check() == []


@pytest.mark.postgres
class TestConcurrentTransfers:
    def test_posts_locking_two_balances_in_opposite_directions_never_deadlock(self, committed, acme, bolt):
        # Each post moves both organisations' balances; the locks go in primary-key order.
        fund(acme, 50, key="topup-acme")
        fund(bolt, 50, key="topup-bolt")
        accounts = [organisation_balance_account(organisation=org, currency="EUR") for org in (acme, bolt)]
        outcomes: list[str] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(4)

        def transfer(thread: int) -> None:
            source, target = accounts[thread % 2], accounts[1 - thread % 2]
            barrier.wait()
            try:
                for n in range(15):
                    try:
                        ledger_post(
                            kind="transfer",
                            postings=[(source, -7), (target, 7)],
                            idempotency_key=f"t-{thread}-{n}",
                        )
                        outcomes.append("moved")
                    except InsufficientFunds:
                        outcomes.append("refused")
            except DatabaseError as exc:  # a deadlock surfaces here
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=transfer, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert len(outcomes) == 60
        balances = [balance(account) for account in accounts]
        assert sum(balances) == 100
        assert min(balances) >= 0
        assert ledger_check() == []


@pytest.mark.postgres
class TestConcurrentIdempotency:
    def test_eight_threads_with_one_key_post_once(self, committed, acme):
        fund(acme, 100)
        account = organisation_balance_account(organisation=acme, currency="EUR")
        escrow = escrow_account(order_ref="o-1", currency="EUR")
        posted: list[int] = []
        barrier = threading.Barrier(8)

        def pay() -> None:
            barrier.wait()
            try:
                txn = ledger_post(
                    kind="order.escrow", postings=[(account, -60), (escrow, 60)], idempotency_key="pay-o-1"
                )
                posted.append(txn.pk)
            finally:
                connection.close()

        threads = [threading.Thread(target=pay) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(posted) == 8
        assert len(set(posted)) == 1
        assert balance(account) == 40
        assert ledger_check() == []


def exact_share(amount: int, weight: int, total_weight: int, fee_bps: int) -> Fraction:
    return Fraction(amount * (10_000 - fee_bps), 10_000) * weight / total_weight


class TestSplit:
    def test_takes_the_fee_inside_the_same_split(self):
        result = split(1_000, {"acme": 6_000, "bolt": 4_000}, fee_bps=1_000)
        assert (result.fee, result.parts) == (100, {"acme": 540, "bolt": 360})

    def test_breaks_ties_by_key_and_gives_the_fee_ties_last(self):
        result = split(2, {"b": 1, "a": 1, "c": 1}, fee_bps=0)
        assert result.parts == {"a": 1, "b": 1, "c": 0}
        assert split(1, {"a": 1}, fee_bps=5_000).parts == {"a": 1}

    @pytest.mark.parametrize(
        ("amount", "shares", "fee_bps"),
        [(-1, {"a": 1}, 0), (10, {}, 0), (10, {"a": 0}, 0), (10, {"a": 1}, 10_001)],
    )
    def test_rejects_bad_input(self, amount, shares, fee_bps):
        with pytest.raises(InvalidSplit):
            split(amount, shares, fee_bps)

    @settings(max_examples=300, deadline=None)
    @given(
        amount=st.integers(min_value=0, max_value=10**15),
        weights=st.lists(st.integers(min_value=1, max_value=10_000), min_size=1, max_size=50),
        fee_bps=st.integers(min_value=0, max_value=10_000),
    )
    def test_sums_exactly_and_each_part_is_within_one_unit(self, amount, weights, fee_bps):
        shares = {f"holder-{i:02d}": w for i, w in enumerate(weights)}
        result = split(amount, shares, fee_bps)
        assert result.fee + sum(result.parts.values()) == amount
        assert abs(result.fee - Fraction(amount * fee_bps, 10_000)) < 1
        total = sum(weights)
        for key, weight in shares.items():
            assert abs(result.parts[key] - exact_share(amount, weight, total, fee_bps)) < 1
        assert split(amount, dict(reversed(list(shares.items()))), fee_bps) == result
