"""A real ``celery -A config worker`` subprocess for tests (no pytest here; see tests/plugins/worker.py).

The worker runs ``tests.worker.settings``: the project's settings pointed at
the test database and the test broker. It loads the drill handlers of
``tests.worker.handlers`` with ``--include`` and writes a ready file when its
consumer is up (the ``worker_ready`` signal), which :meth:`WorkerProcess.start`
waits for.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from common.processes import die_with_parent

QUEUES = "default,custody,training,serving"
# Short leases, so a crash drill waits seconds, not minutes, for a dead
# worker's lease to lapse; the heartbeat renews every third of it.
TEST_LEASE_SECONDS = 3


def filesystem_broker_options(root: Path) -> dict[str, object]:
    """Transport options of kombu's filesystem broker rooted at ``root`` (one folder in and out)."""
    for name in ("out", "processed", "control"):
        (root / name).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(root / "out"),
        "data_folder_out": str(root / "out"),
        "processed_folder": str(root / "processed"),
        "control_folder": str(root / "control"),
        "store_processed": False,
        # The test worker polls its folder often, so a doorbell rings quickly.
        "polling_interval": 0.1,
    }


class WorkerError(RuntimeError):
    """The worker did not start, or died where it should not have."""


class WorkerProcess:
    """One Celery worker subprocess: start, stop, kill (SIGKILL) and restart it."""

    def __init__(
        self, *, cwd: Path, env: Mapping[str, str], log_dir: Path, ready_timeout: float = 60
    ) -> None:
        self.cwd = cwd
        self.log_dir = log_dir
        self.ready_timeout = ready_timeout
        self.ready_file = log_dir / "ready"
        self.env = {**env, "SEALROOM_TEST_WORKER_READY_FILE": str(self.ready_file)}
        self.starts = 0
        self.log_path: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self, *, purge: bool) -> list[str]:
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--loglevel=INFO",
            "--pool=solo",
            "--concurrency=1",
            f"--queues={QUEUES}",
            "--include=tests.worker.handlers",
            f"--hostname=test-{os.getpid()}-{self.starts}@%h",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        return [*cmd, "--purge"] if purge else cmd

    def start(self) -> None:
        """Start the worker and wait until it consumes. :raises WorkerError: it did not get ready."""
        if self.alive:
            raise WorkerError("worker already running")
        self.ready_file.unlink(missing_ok=True)
        self.starts += 1
        self.log_path = self.log_dir / f"worker-{self.starts}.log"
        with open(self.log_path, "wb") as log:
            # Its own session, so kill() reaches any child process too.
            self._proc = subprocess.Popen(
                self.command(purge=self.starts == 1),
                cwd=self.cwd,
                env=dict(self.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.ready_file.exists():
                return
            if not self.alive:
                raise WorkerError(
                    f"worker exited with {self._proc_returncode()} before ready:\n{self.log_tail()}"
                )
            time.sleep(0.05)
        self.kill()
        raise WorkerError(f"worker not ready after {self.ready_timeout}s:\n{self.log_tail()}")

    def _proc_returncode(self) -> int | None:
        return self._proc.returncode if self._proc is not None else None

    def _signal_group(self, signum: int) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL the worker (and anything it started), as a crash would, and reap it."""
        if self._proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self._proc.wait(timeout=30)

    def stop(self, timeout: float = 15) -> None:
        """Warm shutdown (SIGTERM); SIGKILL if it has not exited after ``timeout`` seconds."""
        if not self.alive or self._proc is None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> None:
        """Stop the worker if it runs, then start a fresh one and wait until it is ready."""
        self.stop()
        self.start()

    def log_text(self) -> str:
        """Everything the current worker process has logged so far."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:]) or "(no log)"
