"""Run the training runner in a sandbox; check what it leaves behind. Django-free, torch-free.

`run_runner` starts `python -m training.runner <argv>` inside bubblewrap: new user, network,
PID, IPC and UTS namespaces (no network at all: even 127.0.0.1 is the sandbox's own, unconfigured
loopback), uid/gid 65534, a read-only view of the interpreter, the virtual environment and the
runner's own code (not the rest of the project: no settings, no `var/`, no keys), a tmpfs for /tmp
and HOME, the job's working directory bind-mounted read-write as cwd, and only the assigned GPU's
device nodes. The environment is built from scratch (never inherited): no DATABASE_URL, broker
URLs, secrets or keys. Memory is limited by a cgroup (v2 where delegated, else v1 where writable);
where neither is available a watchdog sums the resident memory of the sandbox's processes and
kills them (not RLIMIT_AS: CUDA reserves huge address ranges). Wall time is enforced by killing the
whole tree. Records go to the runner's stdin from a thread, never to disk.

Defence in depth behind those walls: a seccomp filter (training/seccomp.py, loaded by bubblewrap)
refuses ptrace, mounts, namespaces, keyrings, BPF, perf events, io_uring, kexec, modules and any
socket but AF_UNIX (a multi-process DDP job's filter also allows AF_INET and route netlink, for
gloo/NCCL over the sandbox's own loopback; `Limits.devices`); --disable-userns where bubblewrap has
it; a process limit (RLIMIT_NPROC set inside the new user namespace, and pids.max where a pids
cgroup is ours: RLIMIT_NPROC spares a host uid of root); a disk limit (RLIMIT_FSIZE per file, a
size-capped /tmp, and a watch on the working directory's blocks that kills the run past
``Limits.disk_bytes``).

Where bubblewrap is missing, `unshare -n -r` gives the network wall, the process and disk limits
but no seccomp filter (no filesystem view, no
uid change): a weaker fallback that the operations docs flag; neither available raises
SandboxUnavailable.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import json
import math
import os
import queue
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from training import seccomp

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SANDBOX_WORKDIR = "/job"
# The sandbox's own private tmpfs (not the host's /tmp).
SANDBOX_TMP = "/tmp"  # noqa: S108
SANDBOX_HOME = f"{SANDBOX_TMP}/home"
NOBODY = 65534
_POLL_SECONDS = 0.1
_GRACE_SECONDS = 5.0


class SandboxUnavailable(RuntimeError):
    """Neither bubblewrap nor unshare can build a sandbox on this machine."""


@dataclass(frozen=True)
class Limits:
    """What one job may use. Memory and tasks are per training process: a job of `devices`
    processes (DDP ranks, training/runner/distributed.py) gets `devices` times both, enforced on
    all of its ranks together (one cgroup, one watchdog sum, one RLIMIT_NPROC)."""

    memory_bytes: int
    wall_seconds: float
    gpu_index: int | None = None
    # Tasks (processes and threads: torch starts a few dozen) the sandbox may hold at once.
    max_processes: int = 512
    # Bytes the job may hold in its working directory, and in its private /tmp (each).
    disk_bytes: int = 16 * 1024**3
    # Training processes (ranks): GPUs gpu_index .. gpu_index + devices - 1 when gpu_index is set.
    devices: int = 1

    @property
    def total_memory_bytes(self) -> int:
        return self.memory_bytes * self.devices

    @property
    def total_processes(self) -> int:
        return self.max_processes * self.devices


@dataclass
class RunResult:
    exit_code: int
    reason: str | None
    events: list[dict[str, Any]] = field(default_factory=list)


def _human_bytes(count: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:g} {unit}"
    return f"{count} B"


# ---------------------------------------------------------------------------------------------
# The sandbox command line


@functools.cache
def _sandbox_tool() -> str:
    """ "bwrap" or "unshare", whichever works here (checked once per process)."""
    bwrap = shutil.which("bwrap")
    if bwrap and _works([bwrap, *_bwrap_base(gpu_index=None), "--", "/usr/bin/true"]):
        return "bwrap"
    unshare = shutil.which("unshare")
    if unshare and _works([unshare, "-n", "-r", "--", "/usr/bin/true"]):
        return "unshare"
    raise SandboxUnavailable("neither bubblewrap (bwrap) nor unshare can create namespaces here")


def _works(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=30, check=False).returncode == 0  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return False


def _bwrap_base(*, gpu_index: int | None, tmp_bytes: int | None = None, gpus: int = 1) -> list[str]:
    args = [
        "--unshare-all",
        "--unshare-user",
        "--uid",
        str(NOBODY),
        "--gid",
        str(NOBODY),
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--hostname",
        "sandbox",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64"):
        path = Path(top)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), top]
        elif path.is_dir():
            args += ["--ro-bind", top, top]
    for etc in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives"):
        args += ["--ro-bind-try", etc, etc]
    args += ["--proc", "/proc", "--dev", "/dev"]
    if tmp_bytes is not None:
        args += ["--size", str(tmp_bytes)]
    args += ["--tmpfs", SANDBOX_TMP, "--dir", SANDBOX_HOME]
    if gpu_index is not None:
        cards = [f"/dev/nvidia{index}" for index in range(gpu_index, gpu_index + gpus)]
        for node in (*cards, "/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"):
            args += ["--dev-bind-try", node, node]
    return args


def _interpreter_binds() -> list[str]:
    """Read-only: the Python installation, the virtual environment, the runner's code only."""
    paths = {Path(sys.base_prefix).resolve(), Path(sys.prefix)}
    paths.add(Path(sys.executable).resolve().parent)
    args: list[str] = []
    for path in sorted(paths):
        if path == Path("/usr") or Path("/usr") in path.parents:
            continue
        args += ["--ro-bind", str(path), str(path)]
    runner = PROJECT_ROOT / "training" / "runner"
    package = PROJECT_ROOT / "training" / "__init__.py"
    args += ["--ro-bind", str(package), str(package), "--ro-bind", str(runner), str(runner)]
    return args


def sandbox_environment(limits: Limits) -> dict[str, str]:
    """The runner's whole environment: built from nothing, never copied from the worker's."""
    threads = str(max(1, min(os.cpu_count() or 1, 16)))
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": SANDBOX_HOME,
        "USER": "nobody",
        "LOGNAME": "nobody",
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(PROJECT_ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONNOUSERSITE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HOME": f"{SANDBOX_TMP}/hf",
        "TORCHINDUCTOR_CACHE_DIR": f"{SANDBOX_TMP}/inductor",
        "TRITON_CACHE_DIR": f"{SANDBOX_TMP}/triton",
        "MPLCONFIGDIR": f"{SANDBOX_TMP}/mpl",
        "TOKENIZERS_PARALLELISM": "false",
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    # Correctness switches for OpenBLAS on some processors (see DESIGN.md): not secrets.
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if name in os.environ:
            env[name] = os.environ[name]
    if limits.gpu_index is None:
        env["CUDA_VISIBLE_DEVICES"] = ""
    elif "LD_LIBRARY_PATH" in os.environ:
        # GPU hosts often find the driver's libcuda through it (e.g. /usr/local/nvidia/lib64).
        env["LD_LIBRARY_PATH"] = os.environ["LD_LIBRARY_PATH"]
    return env


# Runs first inside the sandbox (in its own user namespace, so the process count is the sandbox's
# alone): caps processes, file size and core dumps, then execs the real command. For a DDP job
# (argv[3] "1") it brings the namespace's loopback up where it is down: bubblewrap brings it up
# itself; `unshare -n` leaves it down (and the shim, root of its user namespace there, may).
_RLIMIT_SHIM = (
    "import os, resource as r, sys\n"
    "def cap(kind, value):\n"
    "    hard = r.getrlimit(kind)[1]\n"
    "    value = value if hard == r.RLIM_INFINITY else min(value, hard)\n"
    "    r.setrlimit(kind, (value, value))\n"
    "cap(r.RLIMIT_NPROC, int(sys.argv[1]))\n"
    "cap(r.RLIMIT_FSIZE, int(sys.argv[2]))\n"
    "cap(r.RLIMIT_CORE, 0)\n"
    "if sys.argv[3] == '1':\n"
    "    import fcntl, socket, struct\n"
    "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "    flags = struct.unpack('16sH', fcntl.ioctl(s, 0x8913, struct.pack('16sH22x', b'lo', 0))[:18])[1]\n"
    "    if not flags & 1:\n"
    "        fcntl.ioctl(s, 0x8914, struct.pack('16sH22x', b'lo', flags | 1))\n"
    "    s.close()\n"
    "os.execv(sys.argv[4], sys.argv[4:])\n"
)


@functools.cache
def _bwrap_options() -> frozenset[str]:
    """The options this bubblewrap knows (--size, --disable-userns and --seccomp vary by version)."""
    bwrap = shutil.which("bwrap")
    if not bwrap:
        return frozenset()
    try:
        result = subprocess.run([bwrap, "--help"], capture_output=True, timeout=30, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    found = re.findall(rb"^\s+(--[a-z-]+)", result.stdout + result.stderr, re.M)
    return frozenset(option.decode() for option in found)


def _confined(inner: list[str], limits: Limits) -> list[str]:
    return [
        sys.executable,
        "-I",
        "-S",
        "-c",
        _RLIMIT_SHIM,
        str(limits.total_processes),
        str(limits.disk_bytes),
        "1" if limits.devices > 1 else "0",
        *inner,
    ]


def _command(
    inner: list[str], *, workdir: Path, limits: Limits, seccomp_fd: int | None
) -> tuple[list[str], Path | None]:
    """The full command line and the cwd to start it in."""
    tool = _sandbox_tool()
    inner = _confined(inner, limits)
    if tool == "bwrap":
        bwrap = shutil.which("bwrap") or "bwrap"
        options = _bwrap_options()
        # A size-capped /tmp: a tmpfs is memory, which the watchdog fallback would not see.
        tmp_bytes = limits.disk_bytes if "--size" in options else None
        base = _bwrap_base(gpu_index=limits.gpu_index, tmp_bytes=tmp_bytes, gpus=limits.devices)
        args = [bwrap, *base, *_interpreter_binds()]
        if "--disable-userns" in options:
            args += ["--disable-userns"]
        if seccomp_fd is not None:
            args += ["--seccomp", str(seccomp_fd)]
        args += ["--bind", str(workdir), SANDBOX_WORKDIR, "--chdir", SANDBOX_WORKDIR, "--remount-ro", "/"]
        return [*args, "--", *inner], None
    return [shutil.which("unshare") or "unshare", "-n", "-r", "--", *inner], workdir


def _seccomp_fd(*, inet: bool = False) -> int | None:
    """A memfd holding the seccomp program for bubblewrap, or None (unshare, or no program here).

    ``inet``: the DDP filter, which also allows AF_INET sockets (gloo and NCCL talk TCP over
    the sandbox's own loopback; the network namespace has no other interface).
    """
    program = seccomp.filter_program(inet=True) if inet else seccomp.filter_program()
    if program is None or _sandbox_tool() != "bwrap" or "--seccomp" not in _bwrap_options():
        return None
    fd = os.memfd_create("sealroom-seccomp")
    os.write(fd, program)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


# ---------------------------------------------------------------------------------------------
# Memory: a cgroup where we may make one, else a watchdog


class _MemoryGuard:
    """A cgroup with a memory limit (v2, else v1), or a resident-memory watchdog as the fallback;
    with ``pids``, also a process limit (pids.max) where the pids controller is ours to use."""

    def __init__(self, limit: int, pids: int | None = None) -> None:
        self.limit = limit
        self.path: Path | None = None
        self.version = 0
        self.watchdog_fired = False
        # Where pids.max was written: the memory cgroup itself (v2), or a v1 pids cgroup of its own.
        self.pids_limited = False
        self.pids_path: Path | None = None
        if _CGROUPS_ENABLED:
            self._create()
            if pids is not None:
                self._limit_pids(pids)

    @property
    def mode(self) -> str:
        return f"cgroup v{self.version}" if self.path else "watchdog"

    def _create(self) -> None:
        for version, parent in _cgroup_parents():
            path = parent / f"sealroom-runner-{uuid.uuid4().hex[:12]}"
            try:
                path.mkdir()
                if version == 2:
                    (path / "memory.max").write_text(str(self.limit))
                    if (path / "memory.swap.max").exists():
                        (path / "memory.swap.max").write_text("0")
                else:
                    (path / "memory.limit_in_bytes").write_text(str(self.limit))
                    swap = path / "memory.memsw.limit_in_bytes"
                    if swap.exists():
                        with contextlib.suppress(OSError):
                            swap.write_text(str(self.limit))
            except OSError:
                with contextlib.suppress(OSError, ValueError):
                    path.rmdir()
                continue
            self.path, self.version = path, version
            return

    def _limit_pids(self, pids: int) -> None:
        """RLIMIT_NPROC (set inside) spares a sandbox whose host uid is root; pids.max does not."""
        if self.version == 2 and self.path is not None and (self.path / "pids.max").exists():
            with contextlib.suppress(OSError):
                (self.path / "pids.max").write_text(str(pids))
                self.pids_limited = True
            return
        parent = _pids_v1_parent()
        if parent is None:
            return
        path = parent / f"sealroom-runner-{uuid.uuid4().hex[:12]}"
        try:
            path.mkdir()
            (path / "pids.max").write_text(str(pids))
        except OSError:
            with contextlib.suppress(OSError, ValueError):
                path.rmdir()
            return
        self.pids_path, self.pids_limited = path, True

    def wrap(self, command: list[str]) -> list[str]:
        """Prefix the command so that it enters the cgroups before it execs (no race with forks)."""
        procs = [p / "cgroup.procs" for p in (self.path, self.pids_path) if p is not None]
        if not procs:
            return command
        script = (
            " && ".join(f'echo $$ > "${i}"' for i in range(1, len(procs) + 1)) + ' && shift {} && exec "$@"'
        )
        return ["/bin/sh", "-c", script.format(len(procs)), "sh", *map(str, procs), *command]

    def over_limit(self, root_pid: int) -> bool:
        """Watchdog mode only: kill-worthy when the sandbox's processes hold more than the limit."""
        if self.path is not None:
            return False
        if _tree_rss(root_pid) > self.limit:
            self.watchdog_fired = True
        return self.watchdog_fired

    def oom_killed(self) -> bool:
        if self.watchdog_fired:
            return True
        if self.path is None:
            return False
        if self.version == 2:
            text = _read(self.path / "memory.events")
            match = re.search(r"^oom_kill (\d+)", text, re.M)
            return bool(match and int(match.group(1)) > 0)
        text = _read(self.path / "memory.oom_control")
        match = re.search(r"^oom_kill (\d+)", text, re.M)
        if match:
            return int(match.group(1)) > 0
        return _read(self.path / "memory.failcnt").strip() not in ("", "0")

    def kill_all(self) -> None:
        if self.path is not None and self.version == 2 and (self.path / "cgroup.kill").exists():
            with contextlib.suppress(OSError, ValueError):
                (self.path / "cgroup.kill").write_text("1")
            return
        for path in (self.path, self.pids_path):
            for line in _read(path / "cgroup.procs").split() if path is not None else []:
                with contextlib.suppress(OSError, ValueError):
                    os.kill(int(line), signal.SIGKILL)

    def close(self) -> None:
        for path in (self.path, self.pids_path):
            if path is None:
                continue
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    path.rmdir()
                    break
                except OSError:
                    self.kill_all()
                    time.sleep(0.05)


# Tests switch this off to exercise the watchdog fallback on a machine with writable cgroups.
_CGROUPS_ENABLED = True


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _cgroup_parents() -> list[tuple[int, Path]]:
    """Directories where a child memory cgroup may be made: own cgroup's (or its parent's) subtree."""
    found: list[tuple[int, Path]] = []
    mounts: dict[str, Path] = {}
    for line in _read(Path("/proc/self/mountinfo")).splitlines():
        left, _, right = line.partition(" - ")
        fstype, _, options = right.partition(" ")
        mount_point = Path(left.split()[4])
        if fstype == "cgroup2":
            mounts.setdefault("v2", mount_point)
        elif fstype == "cgroup" and "memory" in options.split()[-1].split(","):
            mounts.setdefault("v1", mount_point)
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        hierarchy, controllers, path = [*line.split(":", 2), "", ""][:3]
        relative = path.lstrip("/")
        if hierarchy == "0" and "v2" in mounts:
            own = mounts["v2"] / relative
            for candidate in (own, own.parent):
                if "memory" in _read(candidate / "cgroup.subtree_control").split() and os.access(
                    candidate, os.W_OK
                ):
                    found.append((2, candidate))
                    break
        elif "memory" in controllers.split(",") and "v1" in mounts:
            own = mounts["v1"] / relative
            if (own / "memory.limit_in_bytes").exists() and os.access(own, os.W_OK):
                found.append((1, own))
    found.sort(key=lambda item: -item[0])  # v2 first
    return found


def _pids_v1_parent() -> Path | None:
    """Our own cgroup in a writable v1 pids hierarchy, if there is one."""
    mount = next(
        (
            Path(left.split()[4])
            for left, _, right in (
                line.partition(" - ") for line in _read(Path("/proc/self/mountinfo")).splitlines()
            )
            if right.startswith("cgroup ") and "pids" in right.split()[-1].split(",")
        ),
        None,
    )
    for line in _read(Path("/proc/self/cgroup")).splitlines():
        _, controllers, path = [*line.split(":", 2), "", ""][:3]
        if mount is not None and "pids" in controllers.split(","):
            own = mount / path.lstrip("/")
            if (own / "cgroup.procs").exists() and os.access(own, os.W_OK):
                return own
    return None


def _tree_rss(root_pid: int) -> int:
    """Resident bytes of root_pid and all its descendants (from /proc)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read(Path("/proc", entry, "stat"))
        if not stat:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 2:
            children[int(fields[1])].append(int(entry))
    total, pending = 0, [root_pid]
    page = os.sysconf("SC_PAGE_SIZE")
    while pending:
        pid = pending.pop()
        statm = _read(Path("/proc", str(pid), "statm")).split()
        if len(statm) > 1:
            total += int(statm[1]) * page
        pending.extend(children.get(pid, []))
    return total


# ---------------------------------------------------------------------------------------------
# Disk: the working directory's size, watched


class _DiskGuard:
    """Sums the blocks under the job's working directory (bind-mounted from the host, so no tmpfs
    size applies) every second; over the limit, or over a file count, the run is killed. A single
    file is capped by RLIMIT_FSIZE inside (see _RLIMIT_SHIM), so one write cannot outrun the watch."""

    MAX_ENTRIES = 100_000
    EVERY_SECONDS = 1.0

    def __init__(self, root: Path, limit: int) -> None:
        self.root = root
        self.limit = limit
        self.reason = ""
        self.checked = 0.0

    def over_limit(self) -> bool:
        now = time.monotonic()
        if self.reason or now - self.checked < self.EVERY_SECONDS:
            return bool(self.reason)
        self.checked = now
        used, entries = _tree_usage(self.root, self.MAX_ENTRIES)
        if entries > self.MAX_ENTRIES:
            self.reason = f"disk quota exceeded (more than {self.MAX_ENTRIES:,} files)"
        elif used > self.limit:
            self.reason = f"disk quota exceeded (limit {_human_bytes(self.limit)})"
        return bool(self.reason)


def _tree_usage(root: Path, max_entries: int) -> tuple[int, int]:
    """Allocated bytes and entry count under root (links not followed); stops past max_entries."""
    used, entries, pending = 0, 0, [str(root)]
    while pending and entries <= max_entries:
        with contextlib.suppress(OSError), os.scandir(pending.pop()) as listing:
            for entry in listing:
                entries += 1
                with contextlib.suppress(OSError):
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    else:
                        used += entry.stat(follow_symlinks=False).st_blocks * 512
    return used, entries


# ---------------------------------------------------------------------------------------------
# Running


def run_runner(
    argv: list[str],
    *,
    workdir: Path,
    limits: Limits,
    stdin_records: Iterable[dict[str, Any]] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> RunResult:
    """Run `python -m training.runner <argv>` in the sandbox with `workdir` as its cwd.

    stdin_records, on_event and should_cancel are all used on the caller's thread (a thread only
    writes the encoded lines to the pipe), so a database-backed record stream is safe to pass.
    :raises SandboxUnavailable:
    """
    return _run_sandboxed(
        [sys.executable, "-m", "training.runner", *argv],
        workdir=workdir,
        limits=limits,
        stdin_records=stdin_records,
        on_event=on_event,
        should_cancel=should_cancel,
    )


def _run_sandboxed(
    inner: list[str],
    *,
    workdir: Path,
    limits: Limits,
    stdin_records: Iterable[dict[str, Any]] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> RunResult:
    """Run any command in the sandbox. Private: production code only ever runs the runner (above);
    the sandbox tests use this to probe the walls from inside with `python -c`."""
    workdir = Path(workdir).resolve()
    if not workdir.is_dir():
        raise FileNotFoundError(f"workdir {workdir} is not a directory")
    seccomp_fd = _seccomp_fd(inet=limits.devices > 1)
    guard = _MemoryGuard(limits.total_memory_bytes, pids=limits.total_processes)
    try:
        command, cwd = _command(inner, workdir=workdir, limits=limits, seccomp_fd=seccomp_fd)
        return _supervise(
            guard.wrap(command),
            cwd=cwd or Path("/"),
            env=sandbox_environment(limits) if cwd is None else _unshare_environment(limits, workdir),
            limits=limits,
            guard=guard,
            disk=_DiskGuard(workdir, limits.disk_bytes),
            pass_fds=() if seccomp_fd is None else (seccomp_fd,),
            stdin_records=stdin_records,
            on_event=on_event,
            should_cancel=should_cancel,
        )
    finally:
        guard.close()
        if seccomp_fd is not None:
            os.close(seccomp_fd)


def _unshare_environment(limits: Limits, workdir: Path) -> dict[str, str]:
    env = sandbox_environment(limits)
    home = workdir / ".home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), HF_HOME=str(home / "hf"), TORCHINDUCTOR_CACHE_DIR=str(home / "inductor"))
    env.update(TRITON_CACHE_DIR=str(home / "triton"), MPLCONFIGDIR=str(home / "mpl"))
    return env


def _write(pipe: IO[bytes], outbox: queue.Queue[bytes | None]) -> None:
    """Writer thread: lines from the outbox to the runner's stdin; closes it at the end marker."""
    broken = False
    while (line := outbox.get()) is not None:
        if broken:
            continue  # the runner stopped reading (exited early): its exit code says why
        try:
            pipe.write(line)
        except (OSError, ValueError):
            broken = True
    with contextlib.suppress(OSError, ValueError):
        pipe.close()


class _Feeder:
    """Pulls records from the caller's iterable on the caller's thread (so a database-backed
    stream stays on its connection) into a bounded queue that the writer thread drains."""

    def __init__(self, records: Iterable[dict[str, Any]] | None, outbox: queue.Queue[bytes | None]) -> None:
        self.records = iter(records) if records is not None else None
        self.outbox = outbox
        if self.records is None:
            outbox.put(None)

    @property
    def pending(self) -> bool:
        return self.records is not None and not self.outbox.full()

    def feed(self, budget_seconds: float = 0.05) -> None:
        deadline = time.monotonic() + budget_seconds
        while self.records is not None and not self.outbox.full() and time.monotonic() < deadline:
            try:
                record = next(self.records)
            except StopIteration:
                self.records = None
                self.outbox.put(None)
                return
            self.outbox.put(json.dumps(record, ensure_ascii=False).encode() + b"\n")

    def stop(self) -> None:
        if self.records is not None:
            self.records = None
            self.outbox.put(None)


def _read_lines(pipe: IO[bytes], sink: queue.Queue[dict[str, Any] | None]) -> None:
    for line in pipe:
        try:
            event = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # the runner writes only JSON lines; anything else is dropped, not logged
        if isinstance(event, dict):
            sink.put(event)
    sink.put(None)


def _drain(pipe: IO[bytes], tail: collections.deque[bytes]) -> None:
    for line in pipe:
        tail.append(line[-2000:])


def _supervise(
    command: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    limits: Limits,
    guard: _MemoryGuard,
    disk: _DiskGuard,
    pass_fds: tuple[int, ...],
    stdin_records: Iterable[dict[str, Any]] | None,
    on_event: Callable[[dict[str, Any]], None] | None,
    should_cancel: Callable[[], bool] | None,
) -> RunResult:
    process = subprocess.Popen(  # noqa: S603 - a fixed command line, no shell from input
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        pass_fds=pass_fds,
    )
    assert process.stdin and process.stdout and process.stderr
    events: list[dict[str, Any]] = []
    sink: queue.Queue[dict[str, Any] | None] = queue.Queue()
    outbox: queue.Queue[bytes | None] = queue.Queue(maxsize=1024)
    stderr_tail: collections.deque[bytes] = collections.deque(maxlen=20)
    threads = [
        threading.Thread(target=_write, args=(process.stdin, outbox), daemon=True),
        threading.Thread(target=_read_lines, args=(process.stdout, sink), daemon=True),
        threading.Thread(target=_drain, args=(process.stderr, stderr_tail), daemon=True),
    ]
    for thread in threads:
        thread.start()
    feeder = _Feeder(stdin_records, outbox)
    started = checked = time.monotonic()
    stopped: str | None = None
    stdout_open = True
    try:
        while stdout_open or process.poll() is None:
            if stopped is None and process.poll() is None:
                feeder.feed()
            try:
                event = sink.get(timeout=0.005 if feeder.pending else _POLL_SECONDS)
            except queue.Empty:
                event = None
            else:
                if event is None:
                    stdout_open = False
                else:
                    events.append(event)
                    if on_event is not None:
                        on_event(event)
            now = time.monotonic()
            if stopped is not None or now - checked < _POLL_SECONDS:
                continue
            checked = now
            if now - started > limits.wall_seconds:
                stopped = f"timed out after {limits.wall_seconds:g} s"
            elif should_cancel is not None and should_cancel():
                stopped = "cancelled"
            elif guard.over_limit(process.pid):
                stopped = f"out of memory (limit {_human_bytes(limits.total_memory_bytes)})"
            elif disk.over_limit():
                stopped = disk.reason
            if stopped is not None:
                _kill(process, guard)
                stdout_open = _wait_closed(sink, events, on_event)
    except BaseException:
        _kill(process, guard)
        raise
    finally:
        feeder.stop()
    exit_code = process.wait()
    for thread in threads:
        thread.join(timeout=_GRACE_SECONDS)
    return RunResult(exit_code, stopped or _reason(exit_code, events, guard, limits, stderr_tail), events)


def _wait_closed(
    sink: queue.Queue[dict[str, Any] | None],
    events: list[dict[str, Any]],
    on_event: Callable[[dict[str, Any]], None] | None,
) -> bool:
    """After a kill: take what the runner had already written, until its stdout closes."""
    deadline = time.monotonic() + _GRACE_SECONDS
    while time.monotonic() < deadline:
        try:
            event = sink.get(timeout=_POLL_SECONDS)
        except queue.Empty:
            continue
        if event is None:
            return False
        events.append(event)
        if on_event is not None:
            on_event(event)
    return False


def _kill(process: subprocess.Popen[bytes], guard: _MemoryGuard) -> None:
    """SIGKILL the whole tree: the process group, the cgroup; bwrap's --die-with-parent and the PID
    namespace take the rest down with it."""
    with contextlib.suppress(OSError, ValueError):
        os.killpg(process.pid, signal.SIGKILL)
    guard.kill_all()
    try:
        process.wait(timeout=_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()


def _reason(
    exit_code: int,
    events: list[dict[str, Any]],
    guard: _MemoryGuard,
    limits: Limits,
    stderr_tail: collections.deque[bytes],
) -> str | None:
    if exit_code == 0:
        return None
    if exit_code in (137, -9) and guard.oom_killed():
        return f"out of memory (limit {_human_bytes(limits.total_memory_bytes)})"
    errors = [event for event in events if event.get("event") == "error"]
    if errors:
        return f"runner error: {errors[-1].get('field', '?')}: {errors[-1].get('detail', '')}"[:500]
    gates = [event for event in events if event.get("event") == "gate"]
    if gates and exit_code == 4:
        return f"gate failed: {gates[-1].get('detail', '')}"[:500]
    bases = [event for event in events if event.get("event") == "base" and not event.get("ok")]
    if bases:
        return f"runner error: base: {bases[-1].get('detail', '')}"[:500]
    # stderr may quote data (an exception message): report the exception's type only.
    kind = ""
    for line in reversed(stderr_tail):
        match = re.match(rb"^([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit))\b", line.strip())
        if match:
            kind = f" ({match.group(1).decode()})"
            break
    if exit_code < 0 or exit_code > 128:
        number = -exit_code if exit_code < 0 else exit_code - 128
        return f"runner error: killed by signal {number}{kind}"
    return f"runner error: exited with code {exit_code}{kind}"


# ---------------------------------------------------------------------------------------------
# Output check

_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
_MAX_HEADER = 100 * 1024 * 1024
_MAX_FILES = 64
_LAYER_INDEX = re.compile(r"\.(?:h|layer|layers|block|blocks)\.(\d+)\.")


def safetensors_header(path: Path, *, max_header: int = _MAX_HEADER) -> dict[str, Any]:
    """Parse and check a safetensors header: offsets contiguous, sizes matching dtype x shape.

    Reads the header only (at most ``max_header`` bytes), never the tensors.
    :raises ValueError: describing the first problem.
    """
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) != 8:
            raise ValueError("too short for a safetensors header")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(max_header, size - 8):
            raise ValueError("header length out of bounds")
        try:
            header = json.loads(handle.read(length))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError("header is not JSON") from None
    if not isinstance(header, dict):
        raise ValueError("header is not an object")
    data_size = size - 8 - length
    spans: list[tuple[int, int]] = []
    tensors: dict[str, Any] = {}
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(v, str) for v in info.values()):
                raise ValueError("__metadata__ must map strings to strings")
            continue
        if not isinstance(info, dict) or info.get("dtype") not in _DTYPE_BYTES:
            raise ValueError(f"tensor {name[:80]} has no known dtype")
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ValueError(f"tensor {name[:80]} has a bad shape")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise ValueError(f"tensor {name[:80]} has bad data_offsets")
        begin, end = offsets
        if (
            not 0 <= begin <= end <= data_size
            or end - begin != math.prod(shape) * _DTYPE_BYTES[info["dtype"]]
        ):
            raise ValueError(f"tensor {name[:80]} does not fit its data")
        spans.append((begin, end))
        tensors[name] = info
    position = 0
    for begin, end in sorted(spans):
        if begin != position:
            raise ValueError("tensor data overlaps or leaves holes")
        position = end
    if position != data_size:
        raise ValueError("trailing bytes after the tensor data")
    return tensors


def _positive(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def config_problems(config: dict[str, Any], shapes: dict[str, list[int]]) -> list[str]:
    """The weights must be the model that config.json describes (checked without torch)."""
    problems: list[str] = []
    hidden = config.get("hidden_size", config.get("n_embd", config.get("d_model")))
    vocab = config.get("vocab_size")
    layers = config.get("num_hidden_layers", config.get("n_layer", config.get("num_layers")))
    if not (_positive(hidden) and _positive(vocab) and _positive(layers)):
        return ["config.json lacks vocab_size, hidden size or layer count"]
    assert isinstance(hidden, int) and isinstance(vocab, int) and isinstance(layers, int)
    if not any(shape == [vocab, hidden] for shape in shapes.values()):
        problems.append(f"no embedding of shape [{vocab}, {hidden}] as config.json says")
    indices = {int(m.group(1)) for name in shapes for m in [_LAYER_INDEX.search(name)] if m}
    if indices != set(range(layers)):
        problems.append(f"weights hold {len(indices)} layers, config.json says {layers}")
    if config.get("model_type") == "gpt2":
        inner = config.get("n_inner") or 4 * hidden
        for name, shape in shapes.items():
            if name.endswith("attn.c_attn.weight") and shape != [hidden, 3 * hidden]:
                problems.append(f"{name} has shape {shape}, expected [{hidden}, {3 * hidden}]")
            if name.endswith("mlp.c_fc.weight") and shape != [hidden, inner]:
                problems.append(f"{name} has shape {shape}, expected [{hidden}, {inner}]")
    architectures = config.get("architectures") or []
    if any(str(a).endswith("ForSequenceClassification") for a in architectures):
        labels = len(config.get("id2label") or {}) or config.get("num_labels", 2)
        heads = [s for n, s in shapes.items() if n.endswith(("classifier.weight", "score.weight"))]
        if not heads or heads[0] != [labels, hidden]:
            problems.append(f"classifier head does not match {labels} labels x hidden {hidden}")
    return problems


def output_check(out_dir: Path, *, max_bytes: int) -> list[str]:
    """Problems with a runner's output directory; an empty list means it may be stored.

    Only *.safetensors and *.json regular files, no subdirectories or links, at most max_bytes in
    all, parseable safetensors headers, and tensor shapes matching config.json's model.
    """
    out_dir = Path(out_dir)
    if out_dir.is_symlink() or not out_dir.is_dir():
        return ["the output is not a directory"]
    problems: list[str] = []
    entries = sorted(out_dir.iterdir())
    if len(entries) > _MAX_FILES:
        return [f"more than {_MAX_FILES} files"]
    total = 0
    safetensors: list[Path] = []
    for entry in entries:
        name = entry.name[:100]
        if entry.is_symlink():
            problems.append(f"{name}: links are not allowed")
        elif entry.is_dir():
            problems.append(f"{name}: subdirectories are not allowed")
        elif not entry.is_file():
            problems.append(f"{name}: not a regular file")
        elif entry.suffix not in (".safetensors", ".json"):
            problems.append(f"{name}: only .safetensors and .json files are allowed")
        else:
            total += entry.stat().st_size
            if entry.suffix == ".safetensors":
                safetensors.append(entry)
    if total > max_bytes:
        problems.append(f"output is {_human_bytes(total)}, over the limit of {_human_bytes(max_bytes)}")
    if problems:
        return problems
    for entry in entries:
        if entry.suffix == ".json":
            try:
                json.loads(entry.read_bytes())
            except (json.JSONDecodeError, UnicodeDecodeError):
                problems.append(f"{entry.name}: not valid JSON")
    if not safetensors:
        problems.append("no .safetensors weights")
    if not (out_dir / "config.json").is_file():
        problems.append("no config.json")
    if problems:
        return problems
    shapes: dict[str, list[int]] = {}
    for entry in safetensors:
        try:
            tensors = safetensors_header(entry)
        except (ValueError, OSError) as error:
            problems.append(f"{entry.name}: {error}")
            continue
        shapes.update({name: info["shape"] for name, info in tensors.items()})
    if problems:
        return problems
    config = json.loads((out_dir / "config.json").read_bytes())
    if not isinstance(config, dict):
        return ["config.json is not an object"]
    return config_problems(config, shapes)
