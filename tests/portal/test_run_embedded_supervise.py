"""``run_embedded`` supervises its children: a dead worker is started again, a dead web server stops all.

Real child processes (tiny Python programs), not the platform: what is under
test is the supervision loop, which the full ``make run`` test cannot kill its
way through in reasonable time.
"""

from __future__ import annotations

import io
import sys
import threading
import time
from pathlib import Path

from portal.management.commands import run_embedded
from portal.management.commands.run_embedded import Child, Command


def supervisor() -> tuple[Command, io.StringIO]:
    out = io.StringIO()
    command = Command(stdout=out)
    command.stopping = False
    return command, out


def program(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_dying_worker_is_restarted_until_it_dies_too_often(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(run_embedded, "WORKER_RESTARTS", 3)
    # The worker counts its starts in a file and exits at once with code 3.
    starts = tmp_path / "starts"
    worker = Child(
        "worker",
        program(f"open({str(starts)!r}, 'a').write('x'); raise SystemExit(3)"),
        cwd=tmp_path,
        restartable=True,
    )
    web = Child("web", program("import time; time.sleep(60)"), cwd=tmp_path)
    command, out = supervisor()
    for child in (worker, web):
        child.start()
    try:
        dead = command.supervise([worker, web])
    finally:
        command.stop([worker, web])
    assert dead is worker
    assert starts.read_text() == "xxxx"  # the first start and three restarts
    assert out.getvalue().count("the worker process exited with code 3; restarting it") == 3


def test_a_dead_web_server_is_not_restarted(tmp_path: Path) -> None:
    web = Child("web", program("raise SystemExit(4)"), cwd=tmp_path)
    worker = Child("worker", program("import time; time.sleep(60)"), cwd=tmp_path, restartable=True)
    command, out = supervisor()
    for child in (worker, web):
        child.start()
    try:
        dead = command.supervise([worker, web])
    finally:
        command.stop([worker, web])
    assert dead is web
    assert web.exit_code == 4
    assert "restarting" not in out.getvalue()


def test_a_worker_that_dies_once_is_back_and_the_platform_keeps_running(tmp_path: Path) -> None:
    marker = tmp_path / "second-start"
    # First start: exit 1. Second start: stay up (as a worker does after a broker blip).
    code = (
        "import os, time, sys\n"
        f"m = {str(marker)!r}\n"
        "if not os.path.exists(m):\n"
        "    open(m, 'w').close(); sys.exit(1)\n"
        "time.sleep(60)\n"
    )
    worker = Child("worker", program(code), cwd=tmp_path, restartable=True)
    command, out = supervisor()
    worker.start()
    result: list[Child | None] = []
    thread = threading.Thread(target=lambda: result.append(command.supervise([worker])))
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while "restarting it" not in out.getvalue() and time.monotonic() < deadline:
            thread.join(0.1)
        assert "restarting it" in out.getvalue()
        thread.join(1.0)
        assert thread.is_alive(), "the supervisor kept running after the restart"
        assert worker.exit_code is None
    finally:
        command.stopping = True
        thread.join(5)
        command.stop([worker])
    assert result == [None]
