"""Child processes that never outlive their purpose: polling, dying with the parent, stopping a tree.

Used by ``make run`` (``portal/management/commands/run_embedded.py``), the
crash drills (``chaos/drills``) and the worker test harness: each starts
servers as children and must leave none behind, whether it stops in order
or is killed. Free of Django, so any of them can import it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_PR_SET_PDEATHSIG = 1


def wait_until(
    predicate: Callable[[], T],
    *,
    what: str,
    timeout: float = 30,
    interval: float = 0.05,
    error: type[Exception] = TimeoutError,
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that.

    :raises error: (TimeoutError by default) naming what was awaited, after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise error(f"waited {timeout:.0f}s for {what}")
        time.sleep(interval)


def die_with_parent() -> None:
    """In a child, before exec (``preexec_fn``): be SIGKILLed when the parent dies (Linux only).

    A test or drill killed by a timeout then leaves no server behind holding
    its ports, database or queues.
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def kill_group(pgid: int) -> None:
    """SIGKILL every process left in a process group; nothing happens if it is empty."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def stop_group(process: subprocess.Popen[bytes], *, deadline: float) -> None:
    """Wait for a group leader that was asked to stop, then kill whatever is left of its group.

    ``process`` must have been started as the leader of its own group
    (``process_group=0`` or ``start_new_session=True``). The leader gets until
    ``deadline`` (a ``time.monotonic()`` value) to exit after its SIGTERM;
    then the whole group is SIGKILLed. The group is killed after a clean exit
    too: a Celery worker killed mid-task, or one that exits before its pool,
    leaves pool processes that still hold the parent's output pipe. The
    leader is reaped only after that, so its pid (the group's id) cannot have
    been reused by then.
    """
    pgid = process.pid
    while process.returncode is None and not _exited(process.pid):
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    kill_group(pgid)
    process.wait()


def _exited(pid: int) -> bool:
    """Whether a child has exited, without reaping it (it stays a zombie holding its pid)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped elsewhere already
        return True
