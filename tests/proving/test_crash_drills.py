"""Crash drills (chaos/drills): the real platform on its own Postgres and Redis, faults at seeded moments.

Each drill runs as ``python -m chaos.drills`` in a child process: it starts a
private Postgres 15 and Redis on free loopback ports, gunicorn and a Celery
worker with beat, streams orders over HTTP (and the jobs' usage, which the
worker settles), strikes its faults, and runs the offline checker. The quick
profile strikes once per drill; the ``proof`` profile twenty times. The
positive controls tamper with a finished drill's database through raw SQL
and show the checker reports it.

These tests need the Postgres 15 server binaries and ``redis-server``. They
are marked ``worker`` (they run real processes), so on a machine without them
they skip, and with ``SEALROOM_REQUIRE_REAL=1`` (CI) that skip fails the run.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings

from chaos.drills.cluster import PrivatePostgres, missing_tools
from chaos.history import Event, of_kind, read_history

BASE_DIR = Path(settings.BASE_DIR)
# Not pytest's tmp_path: the postgres OS user must be able to reach the cluster folder. Not under
# var/test-output either: a run holds its platform's keys and the client's API token, which are
# state, not output (tests/proving/test_hardening.py scans the output for secrets).
OUTPUT = BASE_DIR / "var" / "chaos" / "runs"
FIGURES = BASE_DIR / "var" / "test-output" / "proving"
QUICK_SEED = 11
PROOF_SEED = 2024
DRILLS = ("web-orders", "postgres-restart", "redis-restart")

pytestmark = [pytest.mark.worker]


def _needs_tools() -> None:
    missing = missing_tools()
    if missing:
        pytest.skip(f"crash drills need the Postgres 15 server binaries and redis-server; missing {missing}")


def drill_run(name: str, *, faults: int, seed: int) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = OUTPUT / f"{name}-{faults}"
    shutil.rmtree(out, ignore_errors=True)
    command = [
        sys.executable,
        "-m",
        "chaos.drills",
        name,
        f"--faults={faults}",
        f"--seed={seed}",
        f"--out={out}",
    ]
    result = subprocess.run(command, cwd=BASE_DIR, capture_output=True, text=True, check=False, timeout=1500)
    return result, out


def checked(out: Path) -> Event:
    return list(of_kind(read_history(out / "history.jsonl"), "checked"))[-1]


def assert_clean_run(name: str, faults: int, result: subprocess.CompletedProcess[str], out: Path) -> Event:
    """The checker found nothing, every fault struck, at least one with work in flight; the verdict."""
    tail = (result.stdout + result.stderr)[-4000:]
    assert result.returncode == 0, f"drill {name} failed (exit {result.returncode}):\n{tail}"
    events = read_history(out / "history.jsonl")
    verdict = checked(out)
    assert verdict["violations"] == [], tail
    strikes = list(of_kind(events, "fault"))
    assert len(strikes) == faults
    assert any(any(strike["in_flight"].values()) for strike in strikes), (
        "no fault struck while work was in flight"
    )
    figures = verdict["figures"]
    assert figures["orders_acknowledged"] > 0
    assert figures["settlements"] == figures["usage_acknowledged"] > 0
    assert result.stdout.strip().splitlines()[-1].startswith(f"drill {name}: PASS")
    return verdict


def write_figures(name: str, profile: str, seed: int, verdict: Event) -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Any] = {"drill": name, "profile": profile, "seed": seed, **verdict["figures"]}
    figures["violations"] = len(verdict["violations"])
    (FIGURES / f"drill-{name}-{profile}.json").write_text(json.dumps(figures, indent=2))


@pytest.fixture(scope="module")
def web_orders_quick() -> tuple[subprocess.CompletedProcess[str], Path]:
    _needs_tools()
    return drill_run("web-orders", faults=1, seed=QUICK_SEED)


class TestQuickDrills:
    def test_web_orders_loses_nothing_when_a_gunicorn_worker_is_killed_mid_request(self, web_orders_quick):
        result, out = web_orders_quick
        verdict = assert_clean_run("web-orders", 1, result, out)
        strike = next(of_kind(read_history(out / "history.jsonl"), "fault"))
        assert strike["serving"], "the killed gunicorn worker was serving no request"
        write_figures("web-orders", "quick", QUICK_SEED, verdict)

    @pytest.mark.parametrize("name", ["postgres-restart", "redis-restart"])
    def test_loses_nothing_and_repeats_nothing(self, name):
        _needs_tools()
        result, out = drill_run(name, faults=1, seed=QUICK_SEED)
        write_figures(name, "quick", QUICK_SEED, assert_clean_run(name, 1, result, out))


def _tamper(out: Path, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Run raw SQL on a finished drill's database, around the services (and their triggers' FK checks)."""
    manifest = json.loads((out / "cluster.json").read_text())
    postgres = PrivatePostgres(Path(manifest["pg_root"]))
    postgres.start()
    try:
        with psycopg.connect(postgres.url) as conn:
            conn.execute("SET session_replication_role = replica")
            for sql, params in statements:
                conn.execute(sql, params)
    finally:
        postgres.stop()


def _check(out: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "chaos.drills.check", str(out)]
    return subprocess.run(command, cwd=BASE_DIR, capture_output=True, text=True, check=False, timeout=300)


class TestCheckerPositiveControls:
    """The checker is not blind: tampering with a clean drill's database makes it report violations."""

    def test_reports_an_acknowledged_order_deleted_and_a_duplicated_ledger_entry(self, web_orders_quick):
        result, out = web_orders_quick
        assert result.returncode == 0, result.stdout[-2000:]
        acks = [e for e in of_kind(read_history(out / "history.jsonl"), "ok") if e.get("op") == "order"]
        lost, doubled = acks[0]["ref"], acks[-1]["ref"]

        _tamper(out, ("DELETE FROM marketplace_order WHERE ref = %s", (lost,)))
        found = _check(out)
        assert found.returncode == 1, found.stdout
        assert {v["kind"] for v in checked(out)["violations"]} >= {"lost_order"}
        assert f"VIOLATION lost_order: order {lost}" in found.stdout

        # The same escrow movement again under another key: balanced, so Postgres accepts it.
        _tamper(
            out,
            (
                "WITH original AS (SELECT id FROM marketplace_ledgertransaction WHERE idempotency_key = %s),"
                " copy AS (INSERT INTO marketplace_ledgertransaction"
                " (kind, idempotency_key, memo, created_at) VALUES ('escrow.fund', %s, 'injected', now())"
                " RETURNING id)"
                " INSERT INTO marketplace_posting (transaction_id, account_id, amount)"
                " SELECT copy.id, p.account_id, p.amount FROM marketplace_posting p, copy, original"
                " WHERE p.transaction_id = original.id",
                (f"order:{doubled}:escrow", f"order:{doubled}:escrow:again"),
            ),
        )
        found = _check(out)
        assert found.returncode == 1, found.stdout
        kinds = {v["kind"] for v in checked(out)["violations"]}
        assert {"duplicate_ledger_entry", "unaudited_ledger_entry", "ledger"} <= kinds, found.stdout
        assert f"order {doubled}'s escrow funded again" in found.stdout


@pytest.mark.proof
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("name", DRILLS)
def test_twenty_faults_lose_nothing_and_repeat_nothing(name):
    _needs_tools()
    result, out = drill_run(name, faults=20, seed=PROOF_SEED)
    write_figures(name, "proof", PROOF_SEED, assert_clean_run(name, 20, result, out))
