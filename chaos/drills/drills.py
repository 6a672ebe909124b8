"""The crash drills: one workload (:mod:`chaos.drills.stream`), three ways to break the platform under it.

- ``web-orders``: SIGKILL a gunicorn worker that is serving a request; the
  master starts a new one.
- ``postgres-restart``: crash-restart the drill's Postgres
  (``pg_ctl restart -m immediate``): every backend dies mid-transaction and
  the cluster recovers from its WAL.
- ``redis-restart``: SIGKILL the drill's Redis and start an empty one: every
  queued doorbell is lost, and the sweeper must ring them again.

A run: copy the template into DIR and start the platform; write the seeded
fault schedule; run the stream and strike at each scheduled moment (the fault
event names the operations in flight and the work items not yet finished);
stop the stream, letting operations under way resolve; give the worker time
to finish every work item; stop web, worker and Redis; run the offline
checker (:mod:`chaos.drills.check`) on the history and the still-running
database; stop Postgres. The exit status is the checker's.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import psutil
import psycopg

from chaos.drills.cluster import WEB_WORKERS, ClusterError, Platform, wait_for
from chaos.drills.stream import Stream
from chaos.history import History, fault_schedule

# The workload lasts this long plus a few seconds per fault, so faults have room.
WORKLOAD_BASE_SECONDS = 12.0
WORKLOAD_PER_FAULT_SECONDS = 3.0
# Faults strike no earlier than this into the workload, and this long before its end.
FAULT_MARGIN_SECONDS = 3.0
# How long, after the stream stops, every work item has to reach done or failed.
SETTLE_SECONDS = 90.0
RECOVERY_TIMEOUT_SECONDS = 90.0


@dataclass
class Drill:
    name: str
    target: str
    # Strikes, calling ``mark`` (which records the fault event) at the moment of the blow.
    strike: Callable[[Platform, random.Random, Mark], None]
    summary: str


Mark = Callable[..., None]


def _kill_busy_web_worker(platform: Platform, rng: random.Random, mark: Mark) -> None:
    """SIGKILL a gunicorn worker while it serves a request (any worker if none is busy within 3 s)."""
    busy: list[psutil.Process] = []
    deadline = time.monotonic() + 3
    while not busy and time.monotonic() < deadline:
        busy = platform.busy_web_workers()
        if not busy:
            time.sleep(0.01)
    victims = busy or platform.web_workers()
    if not victims:
        raise ClusterError("gunicorn has no worker to kill")
    victim = rng.choice(sorted(victims, key=lambda p: p.pid))
    mark(pid=victim.pid, serving=bool(busy))
    os.kill(victim.pid, signal.SIGKILL)


def _restart_postgres(platform: Platform, rng: random.Random, mark: Mark) -> None:
    mark(pid=_postmaster_pid(platform), mode="immediate")
    platform.postgres.restart_immediate()


def _restart_redis(platform: Platform, rng: random.Random, mark: Mark) -> None:
    mark(pid=platform.redis.process.pid if platform.redis.process is not None else None)
    platform.redis.restart()


def _postmaster_pid(platform: Platform) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int((platform.postgres.data / "postmaster.pid").read_text().split()[0])
    return None


DRILLS = {
    drill.name: drill
    for drill in (
        Drill(
            "web-orders", "gunicorn worker", _kill_busy_web_worker, "gunicorn workers SIGKILLed mid-request"
        ),
        Drill("postgres-restart", "postgres", _restart_postgres, "Postgres crash-restarted (immediate)"),
        Drill("redis-restart", "redis", _restart_redis, "Redis killed and restarted empty"),
    )
}


# --- the database, peeked at without Django -------------------------------------------------


def _scalar(platform: Platform, sql: str) -> int | None:
    """One number from the drill's database, or None while it does not answer."""
    try:
        with psycopg.connect(platform.postgres.url, connect_timeout=2) as conn:
            row = conn.execute(sql).fetchone()
    except psycopg.Error:
        return None
    return int(row[0]) if row else None


def work_unfinished(platform: Platform) -> int | None:
    return _scalar(platform, "SELECT count(*) FROM common_workitem WHERE state NOT IN ('done', 'failed')")


# --- Django in the drill process, for the usage step ------------------------------------------


def _django_for(platform: Platform) -> Callable[[str, str], int]:
    """Set up Django on the drill's database and return the usage recorder the stream calls."""
    os.environ.update(platform.env())
    import django

    django.setup()
    from django.db import connection

    from custody import services as custody
    from custody.models import UsageKind
    from marketplace.models import License

    def record_usage(license_ref: str, consumer_ref: str) -> int:
        try:
            license_ = License.objects.select_related("grant").get(ref=license_ref)
            usage = custody.usage_record(
                grant=license_.grant, consumer_ref=consumer_ref, kind=UsageKind.JOB_STARTED, quantity=1
            )
        except Exception:
            # A connection a restart broke stays broken in a thread outside a request: drop it.
            connection.close()
            raise
        return usage.pk

    return record_usage


# --- a run ---------------------------------------------------------------------------------------


def workload_seconds(faults: int) -> float:
    return WORKLOAD_BASE_SECONDS + WORKLOAD_PER_FAULT_SECONDS * faults


def schedule_for(seed: int, faults: int) -> list[float]:
    total = workload_seconds(faults)
    return fault_schedule(seed, faults, earliest=FAULT_MARGIN_SECONDS, latest=total - FAULT_MARGIN_SECONDS)


class Supervisor:
    """Restart the Celery worker when it exits on its own, as systemd's ``Restart=always`` would.

    Each exit is written to the history (``info``, ``what: "worker exited"``),
    so a drill shows it: the checker's promises are about data, and a
    deployment runs its workers under a supervisor.
    """

    def __init__(self, platform: Platform, history: History) -> None:
        self.platform = platform
        self.history = history
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="drill-supervisor", daemon=True)

    def __enter__(self) -> Supervisor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _watch(self) -> None:
        worker = self.platform.worker
        while worker is not None and not self._stop.wait(0.5):
            if worker.alive:
                continue
            code = worker.process.returncode if worker.process is not None else None
            self.restarts += 1
            self.history.record("info", what="worker exited", code=code, restarted=True)
            print(f"  the Celery worker exited ({code}); restarted, as a supervisor would", flush=True)
            worker.start()


class _Stopped(Exception):
    """SIGTERM or SIGINT: tear everything down."""


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise _Stopped(signal.Signals(signum).name)


def run(name: str, *, faults: int, seed: int, out: Path) -> int:
    """Run drill ``name`` into ``out``; the checker's exit status (0: no violation)."""
    drill = DRILLS[name]
    schedule = schedule_for(seed, faults)
    print(f"drill {name}: seed {seed}, {faults} fault(s) ({drill.summary}) at {schedule} s of a "
          f"{workload_seconds(faults):.0f} s workload; output in {out}", flush=True)  # fmt: skip
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _raise_stopped)
    platform = Platform.prepare(out)
    history = History(out / "history.jsonl")
    history.record(
        "schedule", drill=name, seed=seed, faults=schedule, workload_seconds=workload_seconds(faults)
    )
    try:
        platform.start()
        history.record("info", what="platform up", web=platform.base_url, pg_port=platform.postgres.port)
        stream = Stream(
            base_url=platform.base_url,
            token=platform.seed["token"],
            offer_id=platform.seed["offer_id"],
            history=history,
            key_prefix=f"drill-{name}-{seed}",
            record_usage=_django_for(platform),
        )
        with Supervisor(platform, history):
            _workload(drill, platform, stream, history, schedule, random.Random(seed))
            _settle(platform, history)
    except BaseException:
        platform.stop()
        raise
    finally:
        history.close()
    for child in (platform.web, platform.worker):
        if child is not None:
            child.stop()
    platform.redis.kill()
    try:
        status = _check(out)
    finally:
        platform.postgres.stop()
    return status


def _workload(
    drill: Drill,
    platform: Platform,
    stream: Stream,
    history: History,
    schedule: list[float],
    rng: random.Random,
) -> None:
    started = time.monotonic()
    history.record("info", what="stream started")
    stream.start()
    for moment in schedule:
        time.sleep(max(0.0, started + moment - time.monotonic()))
        _strike(drill, platform, stream, history, rng)
    time.sleep(max(0.0, started + workload_seconds(len(schedule)) - time.monotonic()))
    history.record("info", what="stream stopping", acknowledged=stream.acknowledged)
    stream.stop()
    history.record(
        "info", what="stream stopped", acknowledged=stream.acknowledged, usage=stream.usage_recorded,
        unresolved=stream.unresolved,
    )  # fmt: skip


def _strike(drill: Drill, platform: Platform, stream: Stream, history: History, rng: random.Random) -> None:
    work = work_unfinished(platform)
    struck_at = time.monotonic()

    def mark(**details: Any) -> None:
        nonlocal struck_at
        in_flight = stream.in_flight_now()
        struck_at = time.monotonic()
        history.record("fault", target=drill.target, in_flight=in_flight, work_unfinished=work, **details)
        print(
            f"  fault: {drill.target} {details}; in flight {in_flight}, work items unfinished {work}",
            flush=True,
        )

    drill.strike(platform, rng, mark)
    wait_for(
        lambda: _recovered(platform), what="the platform to answer again", timeout=RECOVERY_TIMEOUT_SECONDS
    )
    history.record("recovered", target=drill.target, after=round(time.monotonic() - struck_at, 3))


def _recovered(platform: Platform) -> bool:
    if len(platform.web_workers()) < WEB_WORKERS:
        return False
    return platform.web_healthy()


def _settle(platform: Platform, history: History) -> None:
    """Wait until every work item is done or failed (the checker reports any that is not)."""
    started = time.monotonic()
    left = work_unfinished(platform)
    while left and time.monotonic() - started < SETTLE_SECONDS:
        time.sleep(0.5)
        left = work_unfinished(platform)
    history.record("info", what="settled", work_unfinished=left, waited=round(time.monotonic() - started, 1))


def _check(out: Path) -> int:
    command = [sys.executable, "-m", "chaos.drills.check", str(out)]
    return subprocess.run(command, check=False).returncode
