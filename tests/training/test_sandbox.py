"""The sandbox's walls, proved from inside.

Production code can only run `python -m training.runner <argv>` (run_runner). To probe the walls
these tests use the private `_run_sandboxed`, the same machinery with another command (`python -c`),
so no debug subcommand widens what a job spec can reach.
"""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from training import sandbox, seccomp
from training.sandbox import Limits, RunResult, output_check, run_runner

REPO = Path(__file__).resolve().parents[2]
LIMITS = Limits(memory_bytes=512 * 1024**2, wall_seconds=60)


def inside(code: str, workdir: Path, limits: Limits = LIMITS, **kwargs: Any) -> RunResult:
    """Run Python code in the sandbox; it reports by printing one JSON event."""
    return sandbox._run_sandboxed(
        [sys.executable, "-c", textwrap.dedent(code)], workdir=workdir, limits=limits, **kwargs
    )


def report(result: RunResult) -> dict[str, Any]:
    assert result.exit_code == 0, result
    (event,) = result.events
    return event


class TestWalls:
    def test_no_network_even_to_loopback(self, tmp_path: Path, listener: Any) -> None:
        port, accepted = listener
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # the socket really listens: a connection from outside succeeds
        code = f"""
            import json, socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=3)
                outcome = "connected"
            except OSError as error:
                outcome = type(error).__name__
            print(json.dumps({{"event": "net", "outcome": outcome}}))
        """
        event = report(inside(code, tmp_path))
        assert event["outcome"] != "connected"
        time.sleep(0.2)
        assert accepted == [True]  # only the outside connection arrived

    def test_environment_holds_no_secrets(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("DATABASE_URL", "postgres://user:hunter2@db/prod")
        monkeypatch.setenv("CELERY_BROKER_URL", "redis://secret@broker/0")
        monkeypatch.setenv("SEALROOM_SECRET_KEY", "s3cret")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "k3y")
        event = report(
            inside('import json, os; print(json.dumps({"event": "env", "env": dict(os.environ)}))', tmp_path)
        )
        env = event["env"]
        assert not {
            "DATABASE_URL",
            "CELERY_BROKER_URL",
            "SEALROOM_SECRET_KEY",
            "AWS_SECRET_ACCESS_KEY",
        } & set(env)
        assert "hunter2" not in json.dumps(env) and "s3cret" not in json.dumps(env)
        assert env["HF_HUB_OFFLINE"] == "1" and env["CUDA_VISIBLE_DEVICES"] == ""
        assert set(env) - {"PWD"} <= set(sandbox.sandbox_environment(LIMITS))

    def test_filesystem_view_is_the_runner_only(self, tmp_path: Path) -> None:
        keys = REPO / "var" / "keys"
        code = f"""
            import json, os
            from pathlib import Path
            def attempt(action):
                try:
                    action()
                    return "ok"
                except OSError as error:
                    return type(error).__name__
            result = {{
                "uid": os.getuid(),
                "cwd": os.getcwd(),
                "keys": attempt(lambda: os.listdir({str(keys)!r})),
                "settings": attempt(lambda: open({str(REPO / "config" / "settings.py")!r}).read()),
                "write_code": attempt(lambda: open({str(REPO / "training" / "runner" / "x.py")!r}, "w")),
                "write_root": attempt(lambda: open("/evil", "w")),
                "write_workdir": attempt(lambda: Path("made.txt").write_text("ok")),
                "runner_code": attempt(lambda: open({str(REPO / "training/runner/spec.py")!r}).read()),
            }}
            print(json.dumps({{"event": "fs", **result}}))
        """
        event = report(inside(code, tmp_path))
        assert event["uid"] == sandbox.NOBODY and event["cwd"] == sandbox.SANDBOX_WORKDIR
        assert event["keys"] == "FileNotFoundError" and event["settings"] == "FileNotFoundError"
        assert event["write_code"] in ("OSError", "PermissionError") and event["write_root"] != "ok"
        assert event["write_workdir"] == "ok" and (tmp_path / "made.txt").read_text() == "ok"
        assert event["runner_code"] == "ok"

    def test_records_arrive_on_stdin_and_events_stream_back(self, tmp_path: Path) -> None:
        code = """
            import json, sys
            for line in sys.stdin:
                print(json.dumps({"event": "seen", "n": len(json.loads(line)["text"])}), flush=True)
        """
        seen: list[dict[str, Any]] = []
        threads: set[int] = set()

        def stream() -> Any:  # like a database-backed stream: must run on the caller's thread
            for i in range(5):
                threads.add(threading.get_ident())
                yield {"text": "x" * i}

        result = inside(code, tmp_path, stdin_records=stream(), on_event=seen.append)
        assert result.exit_code == 0 and result.reason is None
        assert [e["n"] for e in seen] == [0, 1, 2, 3, 4] and result.events == seen
        assert threads == {threading.get_ident()}
        assert list(tmp_path.iterdir()) == []  # nothing of the records written to disk

    def test_many_records_stream_through(self, tmp_path: Path) -> None:
        code = """
            import json, sys
            total = sum(len(json.loads(line)["text"]) for line in sys.stdin)
            print(json.dumps({"event": "total", "chars": total}))
        """
        records = ({"text": "y" * 100} for _ in range(20_000))
        started = time.monotonic()
        event = report(inside(code, tmp_path, stdin_records=records))
        assert event["chars"] == 2_000_000 and time.monotonic() - started < 30

    def test_gpu_runs_keep_the_driver_library_path_only(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("LD_LIBRARY_PATH", "/usr/local/nvidia/lib64")
        gpu = sandbox.sandbox_environment(Limits(memory_bytes=1, wall_seconds=1, gpu_index=1))
        cpu = sandbox.sandbox_environment(LIMITS)
        assert gpu["LD_LIBRARY_PATH"] == "/usr/local/nvidia/lib64" and "CUDA_VISIBLE_DEVICES" not in gpu
        assert "LD_LIBRARY_PATH" not in cpu and cpu["CUDA_VISIBLE_DEVICES"] == ""
        nodes = sandbox._bwrap_base(gpu_index=1)
        assert "/dev/nvidia1" in nodes and "/dev/nvidiactl" in nodes and "/dev/nvidia0" not in nodes


class TestLimits:
    def test_memory_limit_kills_with_a_clear_reason(self, tmp_path: Path) -> None:
        code = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))"
        result = inside(code, tmp_path, Limits(memory_bytes=256 * 1024**2, wall_seconds=60))
        assert result.exit_code != 0 and result.reason == "out of memory (limit 256 MiB)"

    def test_memory_watchdog_fallback_without_cgroups(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(sandbox, "_CGROUPS_ENABLED", False)
        code = (
            "import time\nkept = []\nwhile True:\n    kept.append(bytearray(16 << 20))\n    time.sleep(0.01)"
        )
        result = inside(code, tmp_path, Limits(memory_bytes=256 * 1024**2, wall_seconds=60))
        assert result.exit_code != 0 and result.reason == "out of memory (limit 256 MiB)"

    @pytest.mark.parametrize("version", [2, 1])
    def test_the_kernel_enforces_the_limit_through_a_cgroup(
        self, version: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The cgroup path for real: the limit written to the kernel, the OOM kill read back from it."""
        parents = [parent for found, parent in sandbox._cgroup_parents() if found == version]
        if not parents:
            pytest.skip(
                f"no writable cgroup v{version} with the memory controller delegated to this process "
                "(v2: memory in cgroup.subtree_control of our cgroup or its parent; v1: a writable memory "
                "hierarchy); the sandbox uses another version or the watchdog here"
            )
        if version == 1:
            # Take the v1 path even where v2 would be preferred.
            monkeypatch.setattr(sandbox, "_cgroup_parents", lambda: [(1, parents[0])])
        guards: list[Any] = []

        class Recorded(sandbox._MemoryGuard):
            def __init__(self, limit: int, pids: int | None = None) -> None:
                super().__init__(limit, pids)
                guards.append(self)

        monkeypatch.setattr(sandbox, "_MemoryGuard", Recorded)
        code = "chunks = []\nwhile True:\n    chunks.append(bytearray(16 * 1024 * 1024))"
        result = inside(code, tmp_path, Limits(memory_bytes=256 * 1024**2, wall_seconds=60))
        (guard,) = guards
        assert guard.mode == f"cgroup v{version}" and not guard.watchdog_fired
        assert result.exit_code != 0 and result.reason == "out of memory (limit 256 MiB)"
        assert guard.path is not None and not guard.path.exists()  # removed after the run

    def test_wall_time_kills_the_whole_tree(self, tmp_path: Path) -> None:
        code = """
            import json, subprocess, sys, time
            # A grandchild that keeps writing: it must die with the runner.
            subprocess.Popen([sys.executable, "-c",
                "import time\\nwhile True:\\n    open('tick', 'a').write('.'); time.sleep(0.05)"])
            print(json.dumps({"event": "started"}), flush=True)
            time.sleep(600)
        """
        started = time.monotonic()
        result = inside(code, tmp_path, Limits(memory_bytes=512 * 1024**2, wall_seconds=2))
        assert result.reason == "timed out after 2 s" and result.events == [{"event": "started"}]
        assert time.monotonic() - started < 15
        time.sleep(0.3)
        size = (tmp_path / "tick").stat().st_size
        time.sleep(0.5)
        assert (tmp_path / "tick").stat().st_size == size

    def test_cancel_stops_it(self, tmp_path: Path) -> None:
        code = 'import time\nwhile True:\n    print(\'{"event": "p"}\', flush=True)\n    time.sleep(0.1)'
        seen: list[dict[str, Any]] = []
        result = inside(code, tmp_path, on_event=seen.append, should_cancel=lambda: len(seen) >= 3)
        assert result.reason == "cancelled" and result.exit_code != 0 and len(seen) >= 3


def outside(code: str, cwd: Path) -> dict[str, Any]:
    """The same probe run as a plain subprocess: the positive control for each wall."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, cwd=cwd, timeout=60, check=True
    )
    return dict(json.loads(result.stdout.splitlines()[-1]))


FORK_BOMB = """
    import json, os
    read, write = os.pipe()
    made, error = 0, None
    for _ in range(300):
        try:
            pid = os.fork()
        except OSError as failure:
            error = failure.errno
            break
        if pid == 0:
            os.close(write); os.read(read, 1); os._exit(0)
        made += 1
    os.close(write)
    for _ in range(made):
        os.wait()
    print(json.dumps({"event": "forks", "made": made, "error": error}))
"""

SYSCALLS = """
    import ctypes, errno, json, os, socket
    libc = ctypes.CDLL(None, use_errno=True)
    def attempt(call):
        try:
            if call() == -1:
                return errno.errorcode[ctypes.get_errno()]
            return "ok"
        except OSError as error:
            return errno.errorcode[error.errno]
    result = {
        "inet_socket": attempt(lambda: socket.socket(socket.AF_INET).close()),
        "unix_socketpair": attempt(lambda: [s.close() for s in socket.socketpair()]),
        "unshare_user": attempt(lambda: libc.unshare(0x10000000)),  # CLONE_NEWUSER
        "keyctl": attempt(lambda: libc.syscall(KEYCTL, 0, -3, 0)),  # the session keyring's id
        "bpf": attempt(lambda: libc.syscall(BPF, 0, None, 0)),
        "mount": attempt(lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)),
        "fork": attempt(lambda: os._exit(0) if os.fork() == 0 else os.wait()),
        # Last: once traced, any signal (a child's SIGCHLD) would stop this process for its tracer.
        "ptrace": attempt(lambda: libc.ptrace(0, 0, None, None)),  # PTRACE_TRACEME
    }
    print(json.dumps({"event": "syscalls", **result}))
"""


def _syscalls_code() -> str:
    machine = platform.machine()
    numbers = {"x86_64": {"keyctl": 250, "bpf": 321}, "aarch64": {"keyctl": 219, "bpf": 280}}[machine]
    return SYSCALLS.replace("KEYCTL", str(numbers["keyctl"])).replace("BPF", str(numbers["bpf"]))


needs_bwrap = pytest.mark.skipif(
    not shutil.which("bwrap"), reason="bubblewrap is not installed (the seccomp filter needs it)"
)


class TestDefenceInDepth:
    def test_a_fork_bomb_stops_at_the_process_limit(self, tmp_path: Path) -> None:
        if os.geteuid() == 0 and sandbox._pids_v1_parent() is None and not sandbox._cgroup_parents():
            pytest.skip("running as root with no pids cgroup to use: RLIMIT_NPROC spares root's uid")
        assert outside(FORK_BOMB, tmp_path) == {"event": "forks", "made": 300, "error": None}
        limits = Limits(memory_bytes=1024**3, wall_seconds=60, max_processes=64)
        event = report(inside(FORK_BOMB, tmp_path, limits))
        assert event["made"] < 64 and event["error"] == errno.EAGAIN

    @needs_bwrap
    @pytest.mark.skipif(platform.machine() not in seccomp.ARCHITECTURES, reason="no seccomp filter here")
    def test_denied_system_calls_fail_inside(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        denied = ("inet_socket", "ptrace", "unshare_user", "keyctl", "bpf", "mount")
        event = report(inside(_syscalls_code(), tmp_path))
        assert {name: event[name] for name in denied} == dict.fromkeys(denied, "EPERM")
        assert event["unix_socketpair"] == "ok" and event["fork"] == "ok"
        # Positive controls: outside, and inside without the filter, the same calls work.
        control = outside(_syscalls_code(), tmp_path)
        assert control["inet_socket"] == control["ptrace"] == control["unshare_user"] == "ok"
        monkeypatch.setattr(seccomp, "filter_program", lambda machine=None: None)
        unfiltered = report(inside(_syscalls_code(), tmp_path))
        assert unfiltered["inet_socket"] == unfiltered["ptrace"] == "ok"

    def test_the_filter_assembles_for_each_architecture(self) -> None:
        for machine in seccomp.ARCHITECTURES:
            program = seccomp.filter_program(machine)
            assert program is not None and len(program) % 8 == 0 and 40 * 8 < len(program) < 255 * 8
        assert seccomp.filter_program("ppc64le") is None

    def test_a_big_file_fails_at_the_disk_limit(self, tmp_path: Path) -> None:
        code = """
            import json, os
            def write(path):
                try:
                    with open(path, "wb") as out:
                        out.seek(2 * 1024**3)  # a 2 GiB file (sparse: costs the test no disk)
                        out.write(b"x")
                    return "ok"
                except OSError as error:
                    return error.strerror
            def fill(directory):  # 96 MiB in 4 MiB files: each under the per-file limit
                try:
                    for i in range(24):
                        with open(f"{directory}/part-{i}", "wb") as out:
                            out.write(b"x" * (4 << 20))
                    return "ok"
                except OSError as error:
                    return error.strerror
            tmp = "/tmp" if os.getcwd() == "/job" else "."  # outside: not the host's /tmp
            result = {"job": write("big"), "tmp": write("/tmp/big"), "fill": fill(tmp)}
            print(json.dumps({"event": "write", **result}))
        """
        control = outside(code, tmp_path)
        assert control["job"] == control["fill"] == "ok"
        for written in tmp_path.iterdir():
            written.unlink()
        limits = Limits(memory_bytes=512 * 1024**2, wall_seconds=60, disk_bytes=64 * 1024**2)
        event = report(inside(code, tmp_path, limits))
        assert event["job"] == event["tmp"] == "File too large"
        assert event["fill"] == "No space left on device"  # the sandbox's /tmp is a capped tmpfs

    def test_many_files_over_the_disk_limit_stop_the_run(self, tmp_path: Path) -> None:
        code = """
            import json, os, time
            for i in range(24):
                with open(f"part-{i}", "wb") as out:
                    out.write(b"x" * (4 << 20))
            if os.getcwd() == "/job":
                time.sleep(3)  # inside: give the watch (every second) its look
            print(json.dumps({"event": "wrote", "bytes": 24 << 22}))
        """
        assert outside(code, tmp_path) == {"event": "wrote", "bytes": 96 * 1024**2}
        for part in tmp_path.glob("part-*"):
            part.unlink()
        limits = Limits(memory_bytes=512 * 1024**2, wall_seconds=60, disk_bytes=64 * 1024**2)
        result = inside(code, tmp_path, limits)
        assert result.exit_code != 0 and result.reason == "disk quota exceeded (limit 64 MiB)"


class TestRunner:
    def test_runner_errors_come_back_as_a_reason(self, tmp_path: Path) -> None:
        (tmp_path / "spec.json").write_text(json.dumps({"template": "nope"}))
        result = run_runner(["train", "--spec", "spec.json", "--out", "out"], workdir=tmp_path, limits=LIMITS)
        assert result.exit_code == 2
        assert (
            result.reason == "runner error: template: must be one of "
            "causal_lm, causal_lm_lora, seq_classification, token_classification, valuation, "
            "distill_causal_lm, distill_classification"
        )

    def test_a_crash_reports_the_exception_type_not_its_message(self, tmp_path: Path) -> None:
        result = inside("raise ValueError('record text SECRET-42')", tmp_path)
        assert result.reason == "runner error: exited with code 1 (ValueError)"

    def test_unshare_fallback_still_has_no_network(
        self, tmp_path: Path, listener: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        port, _ = listener
        monkeypatch.setattr(sandbox, "_sandbox_tool", lambda: "unshare")
        code = f"""
            import json, os, socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=3); outcome = "connected"
            except OSError as error:
                outcome = type(error).__name__
            print(json.dumps({{"event": "net", "outcome": outcome, "db": "DATABASE_URL" in os.environ}}))
        """
        monkeypatch.setenv("DATABASE_URL", "postgres://x")
        event = report(inside(code, tmp_path))
        assert event["outcome"] != "connected" and event["db"] is False

    def test_unavailable_when_no_tool_works(self, monkeypatch: pytest.MonkeyPatch) -> None:
        sandbox._sandbox_tool.cache_clear()
        monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
        try:
            with pytest.raises(sandbox.SandboxUnavailable):
                sandbox._sandbox_tool()
        finally:
            sandbox._sandbox_tool.cache_clear()


def _save_tiny(directory: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(
        GPT2Config(vocab_size=50, n_positions=32, n_layer=2, n_head=2, n_embd=16)
    ).save_pretrained(directory, safe_serialization=True)
    (directory / "tokenizer.json").write_text("{}")


class TestOutputCheck:
    def test_a_saved_model_passes(self, tmp_path: Path) -> None:
        _save_tiny(tmp_path)
        assert output_check(tmp_path, max_bytes=10 * 1024**2) == []

    def test_pickles_extra_files_subdirectories_and_links_fail(self, tmp_path: Path) -> None:
        _save_tiny(tmp_path)
        (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04.")
        (tmp_path / "README.md").write_text("hi")
        (tmp_path / "sub").mkdir()
        (tmp_path / "link.json").symlink_to(tmp_path / "config.json")
        assert output_check(tmp_path, max_bytes=10 * 1024**2) == [
            "README.md: only .safetensors and .json files are allowed",
            "link.json: links are not allowed",
            "pytorch_model.bin: only .safetensors and .json files are allowed",
            "sub: subdirectories are not allowed",
        ]

    def test_size_header_and_shape_problems(self, tmp_path: Path) -> None:
        _save_tiny(tmp_path)
        assert output_check(tmp_path, max_bytes=1000)[0].startswith("output is ")
        config = json.loads((tmp_path / "config.json").read_text())
        (tmp_path / "config.json").write_text(json.dumps({**config, "n_layer": 3, "n_embd": 32}))
        problems = output_check(tmp_path, max_bytes=10 * 1024**2)
        assert "no embedding of shape [50, 32] as config.json says" in problems
        assert "weights hold 2 layers, config.json says 3" in problems
        (tmp_path / "model.safetensors").write_bytes(b"\xff" * 8 + b"{}")
        assert output_check(tmp_path, max_bytes=10 * 1024**2) == [
            "model.safetensors: header length out of bounds"
        ]


@pytest.mark.skipif(not os.path.exists("/usr/bin/bwrap"), reason="bubblewrap is not installed")
def test_the_runner_trains_inside_the_sandbox(tmp_path: Path) -> None:
    """End to end: a tiny causal LM trained in bubblewrap, records piped, output checked."""
    spec = {
        "template": "causal_lm",
        "base": {"kind": "builtin", "name": "gpt2-tiny"},
        "hyperparameters": {
            "learning_rate": 0.001,
            "epochs": 1,
            "batch_size": 2,
            "max_seq_len": 16,
            "seed": 1,
            "precision": "fp32",
            "validation_fraction": 0.25,
            "max_steps": 2,
        },
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    records = [{"text": f"record {i} about the river"} for i in range(12)]
    result = run_runner(
        ["train", "--spec", "spec.json", "--out", "out"],
        workdir=tmp_path,
        limits=Limits(memory_bytes=3 * 1024**3, wall_seconds=280),
        stdin_records=records,
    )
    assert result.exit_code == 0 and result.reason is None, result
    assert result.events[-1]["event"] == "done" and result.events[-1]["steps"] == 2
    assert output_check(tmp_path / "out", max_bytes=100 * 1024**2) == []


def test_sandbox_module_imports_neither_django_nor_torch() -> None:
    code = "import sys, training.sandbox; print(sorted({'django', 'torch'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, cwd=REPO, check=True, timeout=60
    )
    assert result.stdout.strip() == b"[]"
