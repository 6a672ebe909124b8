"""A drill's own platform: a private Postgres 15, a private Redis, gunicorn and a Celery worker with beat.

Nothing here touches the shared servers on 5432 and 6379: every drill asks
the OS for free loopback ports and keeps its state under its own folder::

    DIR/pg/data        the Postgres cluster (owned by the ``postgres`` OS user)
    DIR/pg/postgres.log
    DIR/var/           SEALROOM_VAR_DIR: keys, blobs, audit export, beat schedule
    DIR/logs/          web.log, worker.log, redis.log
    DIR/cluster.json   where all of it is, for the offline checker

Migrating and seeding a fresh database costs about 45 s of CPU (the custody
demo runs Presidio over its records), so it is done once into a *template*
under ``var/chaos/templates/<fingerprint>/`` and copied for each drill; the
fingerprint covers the migrations and the seed code, so a change rebuilds it.

Postgres refuses to run as root: when this runs as root, every Postgres
command runs as the ``postgres`` user through ``runuser``, and the cluster
folders are chowned to it (so DIR must be reachable by that user: not under
a mode-0700 folder such as pytest's ``tmp_path``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from common.processes import die_with_parent, wait_until

BASE_DIR = Path(__file__).resolve().parents[2]
PG_BIN = Path(os.environ.get("SEALROOM_DRILL_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_USER = "postgres"
REDIS_SERVER = os.environ.get("SEALROOM_DRILL_REDIS_SERVER", "redis-server")
TEMPLATES = BASE_DIR / "var" / "chaos" / "templates"
DATABASE = "sealroom"
WEB_WORKERS = 3

# Short timers, so that a drill waits seconds, not minutes, for the platform to recover.
DRILL_SETTINGS = {
    "SEALROOM_WORK_LEASE_SECONDS": "3",
    "SEALROOM_SWEEP_INTERVAL_SECONDS": "2",
    "SEALROOM_WORK_REQUEUE_AFTER_SECONDS": "4",
    "SEALROOM_MARKETPLACE_SWEEP_SECONDS": "3",
    "SEALROOM_THROTTLE_TOKEN": "1000000/min",
    "SEALROOM_LOG_LEVEL": "WARNING",
    "DJANGO_DEBUG": "true",
    # How long a dead request keeps its Idempotency-Key before a retry takes it over.
    "SEALROOM_MARKETPLACE_IDEMPOTENCY_IN_FLIGHT_SECONDS": "3",
}


class ClusterError(RuntimeError):
    """A private server did not start, stop or answer."""


def missing_tools() -> list[str]:
    """What this machine lacks to run a drill (empty when it has everything)."""
    missing = [
        str(PG_BIN / name) for name in ("initdb", "pg_ctl", "postgres") if not (PG_BIN / name).exists()
    ]
    if shutil.which(REDIS_SERVER) is None:
        missing.append(REDIS_SERVER)
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            missing.append("runuser")
        with contextlib.suppress(KeyError):
            pwd.getpwnam(PG_USER)
            return missing
        missing.append(f"the {PG_USER!r} OS user")
    return missing


def free_port() -> int:
    """A loopback port the OS says is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", PG_USER, "--", *command] if os.geteuid() == 0 else command


def _give_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam(PG_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _run(command: list[str], *, what: str, env: Mapping[str, str] | None = None, timeout: float = 120) -> str:
    try:
        # Fixed binaries and arguments of our own making.
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            env=dict(env) if env else None,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"{what} did not finish in {timeout:.0f}s") from exc
    if result.returncode != 0:
        raise ClusterError(
            f"{what} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout


def wait_for(predicate: Callable[[], Any], *, what: str, timeout: float, interval: float = 0.1) -> Any:
    """Poll until ``predicate`` returns something truthy. :raises ClusterError: it did not in time."""
    return wait_until(predicate, what=what, timeout=timeout, interval=interval, error=ClusterError)


# --- Postgres -----------------------------------------------------------------------------


@dataclass
class PrivatePostgres:
    """One Postgres cluster in ``root/data``, run by ``pg_ctl`` on a loopback port, trust auth."""

    root: Path
    port: int = 0

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgres://{PG_USER}@127.0.0.1:{self.port}/{DATABASE}"

    def init(self) -> None:
        """initdb a new cluster and create the drill's database."""
        self.root.mkdir(parents=True, exist_ok=True)
        _give_to_postgres(self.root)
        command = [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", PG_USER, "--auth=trust", "-E", "UTF8"]
        _run(_as_postgres([*command, "--no-sync"]), what="initdb")
        self.start()
        _run(
            [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, DATABASE],
            what="createdb",
        )

    def _ctl(self, *args: str, timeout: float = 60) -> str:
        return _run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), *args]),
            what="pg_ctl",
            timeout=timeout,
        )

    def start(self) -> None:
        """Start on a free port (or the one already chosen) and wait until it accepts connections."""
        self.port = self.port or free_port()
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root}"
        self._ctl("-l", str(self.root / "postgres.log"), "-w", "-t", "60", "-o", options, "start")

    def restart_immediate(self) -> None:
        """A crash-restart: every backend dies at once and the cluster recovers from its WAL."""
        # pg_ctl forgets the log file across a restart: name it again, or the server writes to our pipe.
        self._ctl("-m", "immediate", "-l", str(self.root / "postgres.log"), "-w", "-t", "60", "restart")

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._ctl("-m", mode, "-w", "-t", "60", "stop")

    @property
    def running(self) -> bool:
        result = subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status"]),
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def attach(self) -> bool:
        """Take the port of the server running on this cluster, if one is; True when one is."""
        if not self.running:
            return False
        # postmaster.pid: pid, data directory, start time, port, ...
        self.port = int((self.data / "postmaster.pid").read_text().splitlines()[3])
        return True

    def copy_from(self, template: Path) -> None:
        """Take a stopped template cluster's files (ownership kept), to start it on a new port."""
        self.root.parent.mkdir(parents=True, exist_ok=True)
        _run(["cp", "-a", str(template), str(self.root)], what="copying the template cluster")


# --- Redis ---------------------------------------------------------------------------------


@dataclass
class PrivateRedis:
    """A redis-server that keeps nothing (no RDB, no AOF): a restart loses every queued message."""

    folder: Path
    log: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        self.port = self.port or free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.folder),
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        wait_for(self.answers, what=f"redis on port {self.port}", timeout=20)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash would; whatever it held is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()


# --- The platform -----------------------------------------------------------------------------


@dataclass
class Child:
    """A platform process in its own process group, logging to a file."""

    name: str
    command: list[str]
    log: Path
    env: dict[str, str]
    cwd: Path = BASE_DIR
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 10) -> None:
        """SIGTERM the group, SIGKILL it after ``timeout``."""
        if self.process is None:
            return
        for signum, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)
            try:
                self.process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Anything left in the group (a gunicorn worker orphaned by a SIGKILLed master).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def http_status(url: str, timeout: float = 2) -> int | None:
    """The status ``url`` answers with, or None while nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - our own loopback URL
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


@dataclass
class Platform:
    """Everything one drill runs: its Postgres, its Redis, gunicorn and a worker with beat."""

    folder: Path
    postgres: PrivatePostgres
    redis: PrivateRedis
    seed: dict[str, Any]
    web_port: int = 0
    web: Child | None = None
    worker: Child | None = None

    @classmethod
    def prepare(cls, folder: Path) -> Platform:
        """Copy the template (building it first if needed) into ``folder``; start nothing yet."""
        if folder.exists() and any(folder.iterdir()):
            raise ClusterError(f"{folder} is not empty: give each drill run its own folder")
        folder.mkdir(parents=True, exist_ok=True)
        _check_reachable_by_postgres(folder)
        template = template_ensure()
        postgres = PrivatePostgres(folder / "pg")
        postgres.copy_from(template / "pg")
        shutil.copytree(template / "var", folder / "var", symlinks=True)
        seed = json.loads((template / "seed.json").read_text())
        redis = PrivateRedis(folder / "redis", folder / "logs" / "redis.log")
        (folder / "logs").mkdir(exist_ok=True)
        return cls(folder=folder, postgres=postgres, redis=redis, seed=seed)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def env(self) -> dict[str, str]:
        """The environment of every platform process (and of the drill's own Django, if it has one)."""
        inherited = {
            k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "SEALROOM_", "CELERY_"))
        }
        python_path = os.pathsep.join(p for p in (str(BASE_DIR), os.environ.get("PYTHONPATH")) if p)
        return {
            **inherited,
            **DRILL_SETTINGS,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": self.postgres.url,
            "CELERY_BROKER_URL": self.redis.url(0),
            "CACHE_URL": self.redis.url(1),
            "SEALROOM_VAR_DIR": str(self.folder / "var"),
            "SEALROOM_BASE_URL": self.base_url,
            "PYTHONPATH": python_path,
            "PYTHONUNBUFFERED": "1",
        }

    def start(self) -> None:
        """Start Postgres, Redis, the worker (with beat) and the web server; wait until all answer."""
        self.postgres.start()
        self.redis.start()
        self.web_port = free_port()
        self.write_manifest()
        env = self.env()
        logs = self.folder / "logs"
        self.worker = Child("worker", worker_command(self.folder / "var"), logs / "worker.log", env)
        self.web = Child("web", web_command(self.web_port), logs / "web.log", env)
        self.worker.start()
        self.web.start()
        wait_for(
            self.web_healthy, what=f"the web server at {self.base_url}/healthz", timeout=120, interval=0.2
        )
        wait_for(self.worker_ready, what="the Celery worker", timeout=120, interval=0.2)

    def write_manifest(self) -> None:
        manifest = {
            "pg_root": str(self.postgres.root),
            "pg_port": self.postgres.port,
            "database_url": self.postgres.url,
            "redis_port": self.redis.port,
            "web_url": self.base_url,
            "var_dir": str(self.folder / "var"),
            "seed": self.seed,
        }
        (self.folder / "cluster.json").write_text(json.dumps(manifest, indent=2))

    def web_healthy(self) -> bool:
        if self.web is None or not self.web.alive:
            raise ClusterError(f"the web server exited; see {self.folder / 'logs' / 'web.log'}")
        return http_status(f"{self.base_url}/healthz") == 200

    def worker_ready(self) -> bool:
        if self.worker is None or not self.worker.alive:
            raise ClusterError(f"the worker exited; see {self.folder / 'logs' / 'worker.log'}")
        return b" ready." in self.worker.log.read_bytes()

    def web_workers(self) -> list[psutil.Process]:
        """gunicorn's worker processes (the master's children)."""
        assert self.web is not None
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(self.web.pid).children()
        return []

    def busy_web_workers(self) -> list[psutil.Process]:
        """Workers holding an established connection on the web port: serving a request now."""
        busy = []
        for worker in self.web_workers():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                connections = worker.net_connections(kind="tcp")
                if any(
                    c.status == psutil.CONN_ESTABLISHED and c.laddr.port == self.web_port for c in connections
                ):
                    busy.append(worker)
        return busy

    def stop(self) -> None:
        """Stop everything, web first (so no request enqueues into a stopping worker), Postgres last."""
        for child in (self.web, self.worker):
            if child is not None:
                child.stop()
        self.redis.kill()
        self.postgres.stop()


def _python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def worker_command(var_dir: Path) -> list[str]:
    return _python_module(
        "celery",
        "-A",
        "config",
        "worker",
        "--beat",
        f"--schedule={var_dir / 'celerybeat-schedule'}",
        "--queues=default,custody,training,serving",
        "--concurrency=2",
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
    )


def web_command(port: int) -> list[str]:
    return _python_module(
        "gunicorn",
        "config.wsgi:application",
        f"--bind=127.0.0.1:{port}",
        f"--workers={WEB_WORKERS}",
        "--graceful-timeout=5",
        "--timeout=60",
        "--access-logfile=-",
    )


def _check_reachable_by_postgres(folder: Path) -> None:
    if os.geteuid() != 0:
        return
    probe = subprocess.run(_as_postgres(["test", "-x", str(folder)]), check=False)
    if probe.returncode != 0:
        raise ClusterError(
            f"the {PG_USER} user cannot reach {folder}: put drill output under a folder every user may"
            " traverse (for example var/test-output/ or /tmp), not under a mode-0700 one"
        )


# --- The template: migrated and seeded once -------------------------------------------------------


def fingerprint() -> str:
    """A digest of what the template's contents depend on: the migrations and the seed code."""
    digest = hashlib.sha256()
    sources = sorted(BASE_DIR.glob("*/migrations/*.py")) + sorted(BASE_DIR.glob("*/demo*.py"))
    sources.append(Path(__file__).with_name("seed.py"))
    for path in sources:
        digest.update(str(path.relative_to(BASE_DIR)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def template_ensure() -> Path:
    """The template for this checkout's migrations and seed, built now if it does not exist."""
    TEMPLATES.mkdir(parents=True, exist_ok=True)
    _check_reachable_by_postgres(TEMPLATES)
    folder = TEMPLATES / fingerprint()
    with _locked(TEMPLATES / ".lock"):
        if (folder / "seed.json").exists():
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        _template_build(folder)
    return folder


def _template_build(folder: Path) -> None:
    print(f"building the drill template in {folder} (migrate and seed, once) ...", flush=True)
    started = time.monotonic()
    postgres = PrivatePostgres(folder / "pg")
    postgres.init()
    try:
        env = {
            **{
                k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "SEALROOM_", "CELERY_"))
            },
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": postgres.url,
            # Doorbells rung while seeding go nowhere; the drill's sweeper rings them again.
            "CELERY_BROKER_URL": "memory://",
            "CACHE_URL": "",
            "SEALROOM_VAR_DIR": str(folder / "var"),
            "PYTHONPATH": str(BASE_DIR),
        }
        _run(_python_module("django", "migrate", "--verbosity=0"), what="migrate", env=env, timeout=600)
        seed = _run(_python_module("chaos.drills.seed"), what="seeding the template", env=env, timeout=600)
    finally:
        postgres.stop()
    (folder / "seed.json").write_text(seed.strip().splitlines()[-1])
    print(f"drill template ready in {time.monotonic() - started:.0f}s", flush=True)
