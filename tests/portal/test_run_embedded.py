"""``manage.py run_embedded`` (what ``make run`` runs), end to end in a fresh ``var/`` folder.

It runs the embedded default whatever this session uses (no DATABASE_URL,
no CELERY_BROKER_URL): SQLite, the filesystem broker, a worker with beat and
gunicorn, on a free port on loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

EMBEDDED_CLEARED = (
    "DATABASE_URL",
    "DATABASE_TEST_NAME",
    "CELERY_BROKER_URL",
    "CACHE_URL",
    "DJANGO_SETTINGS_MODULE",
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Embedded:
    """The command as a child process, with its output read line by line, never blocking past a deadline."""

    def __init__(self, var_dir: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if k not in EMBEDDED_CLEARED}
        env.update(SEALROOM_VAR_DIR=str(var_dir), PYTHONUNBUFFERED="1")
        self.output: list[str] = []
        self._pending = b""
        self._eof = False
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "run_embedded", f"--port={port}"],
            cwd=settings.BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Unbuffered bytes: select() sees everything there is to read.
            bufsize=0,
            # Its own group, so teardown can reach every child if the test fails.
            start_new_session=True,
        )
        assert self.process.stdout is not None
        self._fd = self.process.stdout.fileno()
        os.set_blocking(self._fd, False)

    def read_until(self, marker: str, timeout: float) -> str:
        """Output lines until one containing ``marker``.

        :raises AssertionError: on timeout, or when the output ends (every
            process holding the pipe has exited) without it.
        """
        deadline = time.monotonic() + timeout
        checked = len(self.output)
        while True:
            for line in self.output[checked:]:
                if marker in line:
                    return line
            checked = len(self.output)
            if self._eof:
                raise AssertionError(f"the output ended with no {marker!r}:\n" + self.tail())
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {marker!r} within {timeout:.0f}s:\n" + self.tail())
            self._read(min(remaining, 0.5))

    def read_to_end(self, timeout: float) -> None:
        """Read until every process holding the output pipe has closed it.

        :raises AssertionError: something (a grandchild the command left
            behind) still holds it after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        while not self._eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"the output is still open {timeout:.0f}s after the command exited: a process it "
                    f"started outlived it:\n{processes_in_group(self.process.pid)}\n{self.tail()}"
                )
            self._read(min(remaining, 0.5))

    def _read(self, wait: float) -> None:
        readable, _, _ = select.select([self._fd], [], [], wait)
        if not readable:
            return
        chunk = os.read(self._fd, 65536)
        if not chunk:
            self._eof = True
            chunk = b"\n" if self._pending else b""
        lines = (self._pending + chunk).split(b"\n")
        self._pending = lines.pop()
        self.output.extend(line.decode("utf-8", "replace") for line in lines)

    def text(self) -> str:
        return "\n".join(self.output)

    def tail(self) -> str:
        return "\n".join(self.output[-60:])

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


def processes_in_group(pgid: int) -> str:
    """``ps`` lines of the processes still in a process group (the test's session)."""
    listing = subprocess.run(
        ["ps", "-o", "pid,ppid,pgid,etime,args", "--no-headers", "-g", str(pgid)],
        capture_output=True,
        text=True,
        check=False,
    )
    return listing.stdout.strip() or "(none)"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.worker
def test_make_run_serves_seeds_and_stops_cleanly_on_ctrl_c(tmp_path):
    port = free_port()
    embedded = Embedded(tmp_path / "var", port)
    try:
        children_line = embedded.read_until("worker pid", timeout=180)
        child_pids = [int(part.split()[-1]) for part in children_line.split(",")]
        up = embedded.read_until("Sealroom is up at", timeout=60)
        assert f"http://127.0.0.1:{port}/" in up
        embedded.read_until("Press Ctrl-C to stop.", timeout=10)
        assert "otpauth://totp/" in embedded.text()
        assert "alice" in embedded.text()

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
            health = json.load(response)
        assert health["status"] == "ok", health
        # The worker consumes. Its "ready." may come before the web server's banner (read past
        # above), so look at everything printed so far before waiting for it.
        if not any(" ready." in line for line in embedded.output):
            embedded.read_until(" ready.", timeout=60)

        keys = list((tmp_path / "var" / "keys").glob("signing-*.pem"))
        assert keys
        assert all(key.stat().st_mode & 0o777 == 0o600 for key in keys)

        # Ctrl-C while the worker is busy: the seeded demo job trains as soon as it is ready.
        embedded.process.send_signal(signal.SIGINT)
        assert embedded.process.wait(timeout=60) == 0, embedded.text()
        embedded.read_to_end(timeout=30)
        assert "Sealroom stopped." in embedded.output, embedded.tail()
        assert not any(pid_alive(pid) for pid in child_pids)
    finally:
        embedded.kill_group()
