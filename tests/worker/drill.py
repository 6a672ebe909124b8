"""Seeded kill -9 drills against the real Celery worker: the schedule, the history, the checks.

A :class:`KillDrill` SIGKILLs the test worker (:mod:`tests.worker.harness`) at
the moments of :func:`chaos.history.fault_schedule`, counted in *work
seconds*: a clock that runs only while a live worker has the drill's work
outstanding and is not on an item's last attempt, so restarts and idle gaps
never bunch the kills together. A kill that falls due strikes at the next
moment the worker is seen running the drill's work (its ``busy``); when the
work runs out before the schedule does, the drill's ``feed`` adds more. Every acknowledged
operation, every kill (with the dead worker's pid and what it interrupted)
and every restart goes to ``var/test-output/chaos/<drill>-<seed>.jsonl``;
the verdict comes from the offline checkers of :mod:`chaos.checks`, which
read that file back.

The seed comes from ``SEALROOM_CHAOS_SEED`` (default :data:`DEFAULT_SEED`)
and is printed with the schedule, so a failing drill replays with
``SEALROOM_CHAOS_SEED=<seed> pytest ...``. While it waits, the drill runs
``recover`` (the sweeps that beat runs every 30 s) every ``sweep_every``
seconds.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from django.db.models import F, QuerySet

from chaos.checks import Check, run_checks
from chaos.history import Event, History, fault_schedule, read_history
from common.models import WorkItem, WorkState
from tests.worker.harness import TEST_LEASE_SECONDS, WorkerProcess

SEED_ENV = "SEALROOM_CHAOS_SEED"
DEFAULT_SEED = 20240607
HISTORY_DIR = Path(__file__).resolve().parents[2] / "var" / "test-output" / "chaos"


def use_worker_dirs(settings: Any, worker: WorkerProcess) -> None:
    """Point this process (``settings``: pytest-django's fixture) at the worker's data directories.

    The audit export is emptied first: the database was flushed after the
    last test, but the session's worker keeps its export directory, whose
    checkpoints would name events that are gone and fail ``check_audit_chain``.
    """
    settings.BLOB_DIR = Path(worker.env["SEALROOM_BLOB_DIR"])
    settings.KEY_DIR = Path(worker.env["SEALROOM_KEY_DIR"])
    settings.AUDIT_EXPORT_DIR = Path(worker.env["SEALROOM_AUDIT_EXPORT_DIR"])
    for exported in settings.AUDIT_EXPORT_DIR.glob("*"):
        exported.unlink()


def chaos_seed() -> int:
    """The seed of this run. :raises ValueError: ``SEALROOM_CHAOS_SEED`` is not an integer."""
    raw = os.environ.get(SEED_ENV, "").strip()
    if not raw:
        return DEFAULT_SEED
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{SEED_ENV} must be an integer, not {raw!r}") from None


class KillDrill:
    """One drill run: kills the worker on schedule and records what happened."""

    def __init__(
        self,
        name: str,
        worker: WorkerProcess,
        *,
        kinds: Sequence[str],
        faults: int,
        earliest: float,
        latest: float,
        recover: Callable[[], object],
        sweep_every: float = 0.5,
    ) -> None:
        self.name = name
        self.worker = worker
        self.kinds = list(kinds)
        self.recover = recover
        self.sweep_every = sweep_every
        self.seed = chaos_seed()
        self.schedule = fault_schedule(self.seed, faults, earliest=earliest, latest=latest)
        self.path = self._claim_history_path(HISTORY_DIR / f"{name}-{self.seed}.jsonl")
        self.path.unlink(missing_ok=True)  # the same seed replays: one history per drill and seed
        self.history = History(self.path)
        self.kills = 0
        self._work = 0.0
        self._working_since: float | None = None
        self._swept_at = 0.0
        print(
            f"\nchaos drill {name}: seed {self.seed} ({SEED_ENV}); {faults} kill(s) at "
            f"{', '.join(f'{m:g}' for m in self.schedule)} work seconds; history {self.path}"
        )
        self.history.record(
            "schedule", drill=name, seed=self.seed, moments=self.schedule, clock="work seconds"
        )

    def _claim_history_path(self, path: Path) -> Path:
        """``path``, locked for this run; a pid-suffixed name if another live run holds it.

        Two sessions in one checkout may run the same drill with the same seed;
        without the lock one would replace the other's history and check it
        against the wrong database.
        """
        HISTORY_DIR.mkdir(parents=True, exist_ok=True)
        self._lock: IO[str] | None = path.with_suffix(".lock").open("a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            self._lock = None
            return path.with_name(f"{path.stem}-{os.getpid()}{path.suffix}")
        return path

    def __enter__(self) -> KillDrill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.history.close()
        if self._lock is not None:
            self._lock.close()  # releases the lock

    # --- the clock and the history -------------------------------------------------------------

    def _work_seconds(self, working: bool) -> float:
        """Advance the clock by the time since the last look if the worker was working then and now."""
        now = time.monotonic()
        if working and self._working_since is not None:
            self._work += now - self._working_since
        self._working_since = now if working else None
        return self._work

    def invoke(self, op: str, **fields: Any) -> None:
        self.history.record("invoke", op=op, **fields)

    def ok(self, op: str, **fields: Any) -> None:
        """Record that the platform acknowledged ``op``; the checkers hold it to that."""
        self.history.record("ok", op=op, **fields)

    def events(self) -> list[Event]:
        return read_history(self.path)

    # --- striking --------------------------------------------------------------------------------

    def _running(self) -> QuerySet[WorkItem]:
        """The drill's items that the live worker is running now."""
        owner = f"{socket.gethostname()}:{self.worker.pid}:"
        return WorkItem.objects.filter(
            kind__in=self.kinds, state=WorkState.RUNNING, lease_owner__startswith=owner
        )

    def holding(self) -> WorkItem | None:
        """The drill's item that the live worker is running now, unless it is on its last attempt.

        A kill during an item's last attempt makes the sweeper give it up, as
        it should for work that keeps killing its worker; the drills test
        recovery, so they strike only where another attempt is left.
        """
        if not self.worker.alive:
            return None
        return self._running().filter(attempts__lt=F("max_attempts")).order_by("pk").first()

    def _working(self, done: Callable[[], bool]) -> bool:
        """Whether the clock runs: a live worker, work outstanding, and no item on its last attempt."""
        if not self.worker.alive or done():
            return False
        return not self._running().filter(attempts__gte=F("max_attempts")).exists()

    def sweep(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._swept_at >= self.sweep_every:
            self.recover()
            self._swept_at = now

    def strike_all(
        self,
        *,
        busy: Callable[[], str | None],
        feed: Callable[[], None],
        done: Callable[[], bool],
        timeout: float = 180,
        poll: float = 0.05,
    ) -> None:
        """Make every scheduled kill, each once its moment has passed and ``busy`` names work in flight.

        ``busy`` returns a short description of what a kill would interrupt
        (usually from :meth:`holding`), or None; ``done`` says whether all the
        work fed so far is finished; ``feed`` is called whenever nothing is in
        flight and must itself add work only when none is outstanding.

        :raises TimeoutError: no work was in flight within ``timeout`` seconds of a kill falling due.
        """
        for moment in self.schedule:
            during = self._wait_for_work(moment, busy, feed, done, timeout, poll)
            self._kill(moment, during)
            self._restart()

    def _wait_for_work(
        self,
        moment: float,
        busy: Callable[[], str | None],
        feed: Callable[[], None],
        done: Callable[[], bool],
        timeout: float,
        poll: float,
    ) -> str:
        deadline = time.monotonic() + timeout
        while True:
            self.sweep()
            during = busy()
            clock = self._work_seconds(during is not None or self._working(done))
            if during is not None and clock >= moment:
                return during
            if during is None:
                feed()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name} (seed {self.seed}): kill {self.kills + 1} at {moment} work seconds "
                    f"found no work in flight for {timeout}s"
                )
            time.sleep(poll)

    def _kill(self, moment: float, during: str) -> None:
        pid = self.worker.pid
        self.worker.kill()
        self._working_since = None
        self.kills += 1
        self.history.record(
            "fault",
            action="kill",
            signal="SIGKILL",
            target="celery-worker",
            pid=pid,
            n=self.kills,
            moment=moment,
            work_s=round(self._work, 3),
            during=during,
        )

    def _restart(self) -> None:
        time.sleep(TEST_LEASE_SECONDS + 0.5)  # let the dead worker's lease expire
        self.worker.restart()
        self.history.record("recovered", target="celery-worker", pid=self.worker.pid, n=self.kills)

    # --- the verdict -------------------------------------------------------------------------------

    def finish(self, done: Callable[[], bool], *, what: str, timeout: float = 300, poll: float = 0.5) -> None:
        """Run the sweeps until ``done()``. :raises TimeoutError: naming ``what`` and the seed."""
        deadline = time.monotonic() + timeout
        while True:
            self.sweep(force=True)
            if done():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} (seed {self.seed}): waited {timeout}s for {what}")
            time.sleep(poll)

    def check(self, checks: Sequence[Check]) -> list[str]:
        """Run the offline checkers on the history as written, and append their verdict to it."""
        violations = run_checks(self.events(), checks)
        self.history.record(
            "checked",
            checks=[getattr(c, "__name__", repr(c)) for c in checks],
            kills=self.kills,
            violations=violations,
        )
        return violations
