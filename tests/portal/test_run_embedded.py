"""``manage.py run_embedded`` (what ``make run`` runs), end to end in a fresh ``var/`` folder.

It runs the embedded default whatever this session uses (no DATABASE_URL,
no CELERY_BROKER_URL): SQLite, the filesystem broker, a worker with beat and
gunicorn, on a free port on loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
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
    """The command as a child process, with its output read line by line."""

    def __init__(self, var_dir: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if k not in EMBEDDED_CLEARED}
        env.update(SEALROOM_VAR_DIR=str(var_dir), PYTHONUNBUFFERED="1")
        self.output: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "run_embedded", f"--port={port}"],
            cwd=settings.BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            # Its own group, so teardown can reach every child if the test fails.
            start_new_session=True,
        )
        self._selector = selectors.DefaultSelector()
        assert self.process.stdout is not None
        self._selector.register(self.process.stdout, selectors.EVENT_READ)

    def read_until(self, marker: str, timeout: float) -> str:
        """Output lines until one containing ``marker``. :raises AssertionError: on timeout or exit."""
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                # Exited: the rest may sit in the text wrapper's buffer, where select cannot see it.
                return self._read_rest(marker)
            if not self._selector.select(timeout=0.5):
                continue
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line.rstrip("\n"))
            if marker in line:
                return line
        raise AssertionError(f"no {marker!r} in the output:\n" + "\n".join(self.output[-60:]))

    def _read_rest(self, marker: str) -> str:
        assert self.process.stdout is not None
        for line in self.process.stdout.read().splitlines():
            self.output.append(line)
            if marker in line:
                return line
        raise AssertionError(f"no {marker!r} in the output:\n" + "\n".join(self.output[-60:]))

    def text(self) -> str:
        return "\n".join(self.output)

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)


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
        embedded.read_until(" ready.", timeout=60)  # the worker consumes

        keys = list((tmp_path / "var" / "keys").glob("signing-*.pem"))
        assert keys
        assert all(key.stat().st_mode & 0o777 == 0o600 for key in keys)

        embedded.process.send_signal(signal.SIGINT)
        assert embedded.process.wait(timeout=60) == 0, embedded.text()
        embedded.read_until("Sealroom stopped.", timeout=5)
        assert not any(pid_alive(pid) for pid in child_pids)
    finally:
        embedded.kill_group()
