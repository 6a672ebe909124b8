"""``manage.py run_embedded`` (``make run``): the whole platform on one machine, no servers needed.

Migrates, makes sure the signing key exists, seeds the demo, then runs two
children: a Celery worker with beat on all three queues, and the web server
(gunicorn). It prints the URL as soon as ``/healthz`` answers, then the demo
logins. Ctrl-C (SIGINT), SIGTERM or SIGHUP stops both children (terminate,
wait, then SIGKILL whatever is left of each child's process group, such as
pool processes of a worker stopped mid-task) and exits 0. A worker that dies
on its own is started again (a few times); a child that dies for good stops
the other, and the command fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from common.demo import demo_logins
from common.processes import kill_group, stop_group
from common.signing import signing_key_provider

QUEUES = "default,custody,training,serving"
HEALTH_TIMEOUT_SECONDS = 120
# A worker finishing a task on warm shutdown may take a while; after this it
# is killed, which acks_late and the leases make safe.
STOP_TIMEOUT_SECONDS = 20


# A worker that dies on its own is started again, as systemd's Restart=always
# would (Celery's Redis transport can exit on a broker restart: chaos/README.md);
# more than this many deaths within the window means something is wrong for good.
WORKER_RESTARTS = 5
WORKER_RESTART_WINDOW_SECONDS = 300


@dataclass
class Child:
    name: str
    command: list[str]
    cwd: Path
    # Work items and leases make a worker safe to restart; a dead web server is not papered over.
    restartable: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    deaths: list[float] = field(default_factory=list, repr=False)

    def may_restart(self) -> bool:
        """Record a death; whether the child may be started again (few enough deaths lately)."""
        now = time.monotonic()
        self.deaths = [t for t in self.deaths if now - t < WORKER_RESTART_WINDOW_SECONDS] + [now]
        return self.restartable and len(self.deaths) <= WORKER_RESTARTS

    def start(self) -> None:
        if self.process is not None:
            # A restart: pool processes of the dead one must not linger beside the new one.
            kill_group(self.process.pid)
        # The project stays importable from any working directory.
        python_path = os.pathsep.join(p for p in (str(settings.BASE_DIR), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": python_path}
        # The commands are this interpreter and fixed arguments, not outside input.
        # Each child leads its own process group, so stopping it reaches its
        # pool processes too; a terminal's Ctrl-C reaches only this command,
        # which stops the children in order (the web server first).
        self.process = subprocess.Popen(  # noqa: S603
            self.command, cwd=self.cwd, env=env, stdin=subprocess.DEVNULL, process_group=0
        )

    @property
    def exit_code(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()

    def wait_or_kill(self, deadline: float) -> None:
        """Wait until ``deadline`` for it to exit, then SIGKILL what is left of its process group."""
        if self.process is not None:
            stop_group(self.process, deadline=deadline)


def worker_command() -> list[str]:
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "config",
        "worker",
        "--beat",
        f"--schedule={settings.CELERY_BEAT_SCHEDULE_FILENAME}",
        f"--queues={QUEUES}",
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
    ]


def web_command(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "config.wsgi:application",
        f"--bind={host}:{port}",
        "--workers=2",
        "--graceful-timeout=5",
        "--access-logfile=-",
        # gunicorn 25+ opens a control socket at one path in the user's home for every
        # instance: a second `make run` would take it over and delete it on exit. Unused here.
        "--no-control-socket",
    ]


def prepare_folders() -> None:
    """Make the folders the embedded default writes to (the filesystem broker does not make its own)."""
    folders = [Path(settings.VAR_DIR), Path(settings.BLOB_DIR), Path(settings.AUDIT_EXPORT_DIR)]
    if settings.CELERY_BROKER_URL.startswith("filesystem"):
        options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
        for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
            if isinstance(options.get(key), str):
                folders.append(Path(str(options[key])))
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)


def health_answers(url: str) -> int | None:
    """The HTTP status ``/healthz`` answers with, or None while nothing listens."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own loopback URL
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, OSError):
        return None


class Command(BaseCommand):
    help = (
        "Run Sealroom on this machine: migrate, keys, demo data, a Celery worker with beat, the web server."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
        parser.add_argument("--no-seed", action="store_true", help="Skip the demo seed.")

    def handle(self, *args: Any, **options: Any) -> None:
        self.stopping = False
        self.prepare(seed=not options["no_seed"])
        children = [
            # The worker runs in var/: kombu's filesystem transport puts files
            # at relative paths it is not told about (its "control" folder),
            # and those belong under var/, never in the checkout.
            Child("worker", worker_command(), cwd=Path(settings.VAR_DIR), restartable=True),
            Child("web", web_command(options["host"], options["port"]), cwd=Path(settings.BASE_DIR)),
        ]
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self.request_stop)
        try:
            for child in children:
                child.start()
            self.stdout.write(", ".join(f"{c.name} pid {c.process.pid}" for c in children if c.process))
            base_url = f"http://{options['host']}:{options['port']}/"
            self.announce_when_up(base_url, children)
            dead = self.supervise(children)
        finally:
            self.stop(children)
        if dead is not None:
            raise CommandError(
                f"the {dead.name} process exited with code {dead.exit_code}; stopped everything"
            )
        self.stdout.write("Sealroom stopped.")

    def prepare(self, *, seed: bool) -> None:
        prepare_folders()
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write(f"database migrated ({settings.DATABASES['default']['NAME']})")
        key = signing_key_provider().current()
        self.stdout.write(f"signing key {key.key_id} in {settings.KEY_DIR}")
        if not settings.DEBUG:
            call_command("collectstatic", interactive=False, verbosity=0)
        if seed:
            call_command("demo_seed", quiet_logins=True, stdout=self.stdout)

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def announce_when_up(self, base_url: str, children: list[Child]) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
        while not self.stopping and all(c.exit_code is None for c in children):
            status = health_answers(base_url + "healthz")
            if status is not None:
                self.stdout.write(self.style.SUCCESS(f"Sealroom is up at {base_url}"))
                if status != 200:
                    self.stdout.write(self.style.WARNING(f"/healthz answers {status}: see {base_url}healthz"))
                self.stdout.write("\n".join(demo_logins()))
                self.stdout.write("Press Ctrl-C to stop.")
                return
            if time.monotonic() > deadline:
                self.stdout.write(self.style.WARNING(f"no answer from {base_url}healthz yet; still waiting"))
                deadline = float("inf")
            time.sleep(0.2)

    def supervise(self, children: list[Child]) -> Child | None:
        """Wait for a stop signal (None) or for a child to die for good (that child).

        A restartable child (the worker) that dies is started again, up to
        ``WORKER_RESTARTS`` times within ``WORKER_RESTART_WINDOW_SECONDS``.
        """
        while not self.stopping:
            for child in children:
                if child.exit_code is None:
                    continue
                if not child.may_restart():
                    return child
                self.stdout.write(
                    self.style.WARNING(
                        f"the {child.name} process exited with code {child.exit_code}; restarting it"
                    )
                )
                child.start()
            time.sleep(0.2)
        return None

    def stop(self, children: list[Child]) -> None:
        self.stdout.write("stopping Sealroom ...")
        # The web server first, so no request enqueues work into a stopping worker.
        for child in reversed(children):
            child.terminate()
            child.wait_or_kill(time.monotonic() + STOP_TIMEOUT_SECONDS)
