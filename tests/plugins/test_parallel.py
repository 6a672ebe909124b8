"""The parallel plugin: what each pytest-xdist worker is given of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

from tests.plugins.parallel import BASE_DIR, own_folder, shifted_redis_url, worker_index, worker_name


class TestWorkerIndex:
    @pytest.mark.parametrize(
        ("name", "index"), [("gw0", 0), ("gw1", 1), ("gw12", 12), ("", 0), ("master", 0)]
    )
    def test_reads_xdists_worker_name(self, name, index):
        assert worker_index(name) == index


class TestShiftedRedisUrl:
    @pytest.mark.parametrize(
        ("url", "by", "shifted"),
        [
            ("redis://127.0.0.1:6379/0", 2, "redis://127.0.0.1:6379/2"),
            ("redis://127.0.0.1:6379/1", 2, "redis://127.0.0.1:6379/3"),
            ("redis://127.0.0.1:6379", 4, "redis://127.0.0.1:6379/4"),
            ("redis://127.0.0.1:6379/", 2, "redis://127.0.0.1:6379/2"),
            (
                "rediss://user:pw@cache.example:6380/5?ssl_cert_reqs=required",
                2,
                "rediss://user:pw@cache.example:6380/7?ssl_cert_reqs=required",
            ),
            ("redis://127.0.0.1:6379/0", 0, "redis://127.0.0.1:6379/0"),
            ("filesystem://", 2, "filesystem://"),
            ("amqp://guest@127.0.0.1//", 2, "amqp://guest@127.0.0.1//"),
        ],
    )
    def test_moves_the_database_number_and_nothing_else(self, url, by, shifted):
        assert shifted_redis_url(url, by) == shifted

    def test_refuses_a_database_redis_does_not_have(self):
        with pytest.raises(pytest.UsageError, match="database 16"):
            shifted_redis_url("redis://127.0.0.1:6379/14", 2)


CHILD = """
import os
from pathlib import Path
import tests.plugins.parallel as parallel
print(os.environ.get("CELERY_BROKER_URL"), os.environ.get("CACHE_URL"),
      os.environ.get("SEALROOM_TRAINING_WORK_DIR"), parallel.own_folder(Path("/x/worker")))
"""


def plugin_in(env: dict[str, str]) -> list[str]:
    """What the plugin, imported in a fresh process with ``env``, leaves in its environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_XDIST", "SEALROOM_TRAINING"))}
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        env={**clean, "CELERY_BROKER_URL": "redis://h:6379/0", "CACHE_URL": "redis://h:6379/1", **env},
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.split()


class TestOnImport:
    def test_worker_gw1_gets_its_own_redis_databases_and_folders(self):
        assert plugin_in({"PYTEST_XDIST_WORKER": "gw1"}) == [
            "redis://h:6379/2",
            "redis://h:6379/3",
            str(BASE_DIR / "var" / "training-work-gw1"),
            "/x/worker-gw1",
        ]

    def test_worker_gw0_keeps_the_databases_and_names_its_folders(self):
        assert plugin_in({"PYTEST_XDIST_WORKER": "gw0", "SEALROOM_TRAINING_WORK_DIR": "/w"}) == [
            "redis://h:6379/0",
            "redis://h:6379/1",
            "/w-gw0",
            "/x/worker-gw0",
        ]

    def test_a_serial_run_changes_nothing(self):
        assert plugin_in({}) == ["redis://h:6379/0", "redis://h:6379/1", "None", "/x/worker"]


def test_this_process_reads_what_the_plugin_set():
    """The settings were read after the plugin's import: this process's broker and working
    folder are its own (under ``make test``, two processes run)."""
    assert str(settings.CELERY_BROKER_URL) == os.environ.get("CELERY_BROKER_URL", "filesystem://")
    name = worker_name()
    if name:
        assert Path(settings.TRAINING_WORK_DIR).name.endswith(f"-{name}")
        assert own_folder(Path("worker")) == Path(f"worker-{name}")
