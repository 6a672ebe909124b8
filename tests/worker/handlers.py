"""Work handlers for drills, loaded by the test worker with ``--include=tests.worker.handlers``.

Each handler writes its side effects as rows in a plain table that the test
then counts, so "exactly once" is checked in the database, not in memory.
The table is created by the test session (it is not a model: test-only code
stays in tests/ and needs no migration), and Django's flush between
transactional tests leaves it alone, so each test uses a fresh ``ref``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from celery.signals import worker_ready
from django.db import connection

from common.models import WorkItem
from common.work import PermanentWorkError, work_handler
from tests.worker.harness import TEST_LEASE_SECONDS

EFFECTS_TABLE = "tests_worker_effect"
# A blocked handler gives up after this long, so a failed drill cannot hang a worker forever.
BLOCK_LIMIT_SECONDS = 120


def effects_table_create() -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"CREATE TABLE IF NOT EXISTS {EFFECTS_TABLE} "
            "(ref VARCHAR(120) NOT NULL, phase VARCHAR(20) NOT NULL, pid INTEGER NOT NULL)"
        )


def effect_record(ref: str, phase: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {EFFECTS_TABLE} (ref, phase, pid) VALUES (%s, %s, %s)",  # noqa: S608
            [ref, phase, os.getpid()],
        )


def effect_count(ref: str, phase: str = "effect") -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COUNT(*) FROM {EFFECTS_TABLE} WHERE ref = %s AND phase = %s",  # noqa: S608
            [ref, phase],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def gate_path(ref: str) -> Path:
    """While this file exists, a ``test.block`` item with this ref stays blocked."""
    return Path(os.environ["SEALROOM_TEST_GATE_DIR"]) / ref


@work_handler("test.record")
def record(item: WorkItem) -> None:
    effect_record(item.ref, "effect")


@work_handler("test.block")
def block(item: WorkItem) -> None:
    effect_record(item.ref, "started")
    deadline = time.monotonic() + BLOCK_LIMIT_SECONDS
    while gate_path(item.ref).exists():
        if time.monotonic() > deadline:
            raise PermanentWorkError("blocked too long: the drill never opened the gate")
        time.sleep(0.05)
    effect_record(item.ref, "effect")


@work_handler("test.slow")
def slow(item: WorkItem) -> None:
    # Runs well past one lease: only the heartbeat keeps the sweeper off it.
    effect_record(item.ref, "started")
    time.sleep(TEST_LEASE_SECONDS * 2.5)
    effect_record(item.ref, "effect")


@work_handler("test.flaky")
def flaky(item: WorkItem) -> None:
    if item.attempts == 1:
        raise RuntimeError("first attempt fails")
    effect_record(item.ref, "effect")


@work_handler("test.doomed")
def doomed(item: WorkItem) -> None:
    raise PermanentWorkError("cannot ever work")


@worker_ready.connect
def _write_ready_file(**kwargs: Any) -> None:
    ready_file = os.environ.get("SEALROOM_TEST_WORKER_READY_FILE")
    if ready_file:
        Path(ready_file).write_text(str(os.getpid()))
