"""Kill drill: the audit sequencer SIGKILLed mid-batch loses nothing, skips nothing, integrates nothing twice.

A real sequencer process (``manage.py audit_integrate`` on the test database)
integrates thousands of committed pending events in batches. The drill waits
until the process is inside a batch's transaction (it holds the chain head:
Postgres's row lock, SQLite's write lock), SIGKILLs it there, waits for the
database to drop the dead transaction, and checks: only whole batches were
integrated, the chain verifies with no gap, and after a restart every event
is integrated exactly once. The quick profile kills once; the proof profile
kills at several seeded moments (``SEALROOM_CHAOS_SEED``) in a longer run.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from common.audit import audit_pending, chain_head_lock
from common.audit_verify import audit_verify
from common.models import AuditChainHead, AuditEvent
from tests.conftest import is_postgres
from tests.worker.drill import chaos_seed

BASE_DIR = Path(__file__).resolve().parents[2]
BUSY_TIMEOUT_SECONDS = 120


def pending_events(count: int) -> None:
    """``count`` committed pending events, as writers leave them when no sequencer runs."""
    at = timezone.now()
    for start in range(0, count, 2000):
        AuditEvent.objects.bulk_create(
            AuditEvent(
                at=at,
                actor_name="drill",
                action="drill.event",
                object_type="drill",
                object_id=str(n),
                details={"n": n},
            )
            for n in range(start, min(start + 2000, count))
        )


def start_sequencer(tmp_path: Path, batch_size: int) -> subprocess.Popen[bytes]:
    """``manage.py audit_integrate`` in its own process, on this test's database, keys and export."""
    broker = tmp_path / "broker"
    broker.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.worker.settings",
        "SEALROOM_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "SEALROOM_TEST_BROKER_DIR": str(broker),
        "SEALROOM_KEY_DIR": str(settings.KEY_DIR),
        "SEALROOM_AUDIT_EXPORT_DIR": str(settings.AUDIT_EXPORT_DIR),
        "SEALROOM_AUDIT_CHECKPOINT_EVERY": str(settings.AUDIT_CHECKPOINT_EVERY),
    }
    # Fixed arguments and this interpreter, not outside input.
    return subprocess.Popen(
        [sys.executable, str(BASE_DIR / "manage.py"), "audit_integrate", "--batch-size", str(batch_size)],
        cwd=BASE_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def sequencer_mid_batch() -> bool:
    """Whether some process holds the chain head inside a transaction right now (never waits)."""
    if is_postgres():
        try:
            with transaction.atomic():
                AuditChainHead.objects.select_for_update(nowait=True).get(pk=1)
        except DatabaseError:
            return True
        return False
    probe = sqlite3.connect(str(connection.settings_dict["NAME"]), timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError:
        return True
    finally:
        probe.close()


def head_seq() -> int:
    """The committed chain head (a plain read: neither backend makes it wait for the sequencer)."""
    return AuditChainHead.objects.values_list("seq", flat=True).get(pk=1)


def kill_mid_batch(process: subprocess.Popen[bytes], *, after_seq: int, delay: float) -> None:
    """SIGKILL ``process`` ``delay`` s into a batch open once the head reached ``after_seq``; wait for the DB.

    :raises AssertionError: the process finished first, or never opened a batch.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_SECONDS
    while head_seq() < after_seq or not sequencer_mid_batch():
        assert process.poll() is None, f"the sequencer finished before the kill: {output_of(process)}"
        assert time.monotonic() < deadline, "the sequencer never opened a batch"
        time.sleep(0.002)
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)
    # Postgres rolls the dead session back once it notices the closed socket.
    while sequencer_mid_batch():
        assert time.monotonic() < deadline, "the killed sequencer's transaction never ended"
        time.sleep(0.05)


def output_of(process: subprocess.Popen[bytes]) -> str:
    return process.stdout.read().decode(errors="replace") if process.stdout is not None else ""


def assert_whole_batches_gap_free(batch_size: int, total: int) -> int:
    """The state after a kill: whole batches integrated, seq 1..n with no gap, the chain verifies."""
    seqs = list(AuditEvent.objects.filter(seq__isnull=False).order_by("seq").values_list("seq", flat=True))
    integrated = len(seqs)
    assert integrated % batch_size == 0, f"{integrated} events integrated: a batch was cut in half"
    assert seqs == list(range(1, integrated + 1))
    assert AuditChainHead.objects.get().seq == integrated
    assert audit_pending().count == total - integrated
    report = audit_verify()
    assert report.ok, report.summary_lines()
    return integrated


def run_drill(tmp_path: Path, *, total: int, batch_size: int, kills: int, seed: int) -> list[int]:
    """Kill the sequencer ``kills`` times, then let one finish; returns the events integrated at each kill."""
    pending_events(total)
    with transaction.atomic():
        chain_head_lock()  # the head exists, so "busy" means a sequencer holds it
    rng = random.Random(seed)
    # Seeded batches to strike, in order (never the last: a batch must still be open after it).
    targets = sorted(rng.sample(range(total // batch_size - 1), kills))
    at_kill = []
    for target in targets:
        after_seq = max(head_seq(), target * batch_size)
        process = start_sequencer(tmp_path, batch_size)
        kill_mid_batch(process, after_seq=after_seq, delay=rng.uniform(0, 0.05))
        integrated = assert_whole_batches_gap_free(batch_size, total)
        assert integrated < total, "the kill came after the last batch"
        at_kill.append(integrated)
    process = start_sequencer(tmp_path, batch_size)
    assert process.wait(BUSY_TIMEOUT_SECONDS) == 0, output_of(process)
    assert assert_whole_batches_gap_free(batch_size, total) == total
    # Every event exactly once: each of the appended objects holds one seq.
    assert AuditEvent.objects.filter(seq__isnull=False).values("object_id").distinct().count() == total
    return at_kill


def test_a_sequencer_killed_mid_batch_leaves_whole_batches_and_restarts_gap_free(
    transactional_db, tmp_path, settings
):
    settings.AUDIT_CHECKPOINT_EVERY = 5000
    seed = chaos_seed()
    at_kill = run_drill(tmp_path, total=8_000, batch_size=1000, kills=1, seed=seed)
    print(f"audit sequencer kill drill (seed {seed}): killed with {at_kill} events integrated")


@pytest.mark.proof
def test_a_sequencer_killed_again_and_again_loses_and_repeats_nothing(transactional_db, tmp_path, settings):
    settings.AUDIT_CHECKPOINT_EVERY = 5000
    seed = chaos_seed()
    at_kill = run_drill(tmp_path, total=40_000, batch_size=2000, kills=5, seed=seed)
    print(f"audit sequencer kill drill (seed {seed}): killed with {at_kill} events integrated")
