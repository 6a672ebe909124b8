"""Marketplace fixtures: after every marketplace test on the database, the ledger is sound."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from marketplace.ledger import ledger_check


@pytest.fixture(autouse=True)
def _marketplace_ledger_sound(request: pytest.FixtureRequest) -> Iterator[None]:
    """``ledger_check() == []`` after each test (transactional tests check inside: rows vanish)."""
    if "db" not in request.fixturenames or "transactional_db" in request.fixturenames:
        yield
        return
    request.getfixturevalue("db")  # set up first, so the check runs before the rollback
    yield
    assert ledger_check() == []
