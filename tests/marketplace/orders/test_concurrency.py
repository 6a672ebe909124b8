"""Concurrent orders on Postgres: threads, each with its own database connection, through the API."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from common.models import IdempotencyRecord
from marketplace.ledger import balance, ledger_check, organisation_balance_account
from marketplace.models import License, Order
from tests.conftest import make_token


def run_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Start ``count`` threads at once (a barrier); each closes its own connection; return their results."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def body(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work(index)
        except Exception as exc:  # noqa: BLE001 - reported as the thread's result
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.fixture
def trainer_token(bob, bolt) -> str:
    return make_token(bob, bolt, ["read", "order"])


def client(token: str) -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return api


@pytest.mark.postgres
class TestConcurrentOrders:
    def test_fifty_orders_on_a_one_license_exclusive_offer_sell_it_once(
        self, transactional_db, market, bolt, fund, trainer_token
    ):
        offer = market("fixed", max_licenses=1)
        fund(bolt, 50 * 50_000)

        def order(index: int) -> tuple[int, str]:
            response = client(trainer_token).post(
                "/api/v1/orders",
                {"offer_id": offer.public_id},
                format="json",
                HTTP_IDEMPOTENCY_KEY=f"race-{index:04d}",
            )
            return response.status_code, response.json().get("code", "")

        results = run_threads(50, order)
        assert Counter(results) == {(201, ""): 1, (409, "marketplace.offer_sold_out"): 49}, results
        assert Order.objects.count() == 1
        assert License.objects.count() == 1
        assert balance(organisation_balance_account(organisation=bolt, currency="EUR")) == 49 * 50_000
        assert ledger_check() == []

    def test_twenty_requests_with_one_key_place_one_order(
        self, transactional_db, market, bolt, fund, trainer_token
    ):
        offer = market("fixed")
        fund(bolt, 20 * 50_000)

        def order(_index: int) -> tuple[int, str]:
            response = client(trainer_token).post(
                "/api/v1/orders",
                {"offer_id": offer.public_id},
                format="json",
                HTTP_IDEMPOTENCY_KEY="one-key-for-all",
            )
            body = response.json()
            return response.status_code, body.get("ref") or body.get("code")

        results = run_threads(20, order)
        assert Order.objects.count() == 1
        ref = Order.objects.get().ref
        assert set(results) <= {(201, ref), (409, "idempotency.in_progress")}, results
        assert (201, ref) in results
        assert IdempotencyRecord.objects.get().state == "done"
        assert balance(organisation_balance_account(organisation=bolt, currency="EUR")) == 19 * 50_000
        assert ledger_check() == []
