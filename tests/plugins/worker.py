"""pytest plugin: a real Celery worker process on the test database and broker.

``celery_worker_process`` (needs ``transactional_db``, which it requests) hands
a :class:`~tests.worker.harness.WorkerProcess`: a ``celery -A config worker``
subprocess (solo pool, concurrency 1, no beat, queues default, custody and
training) started once per session, restarted by the fixture if a test killed
it. It shares the test database (the SQLite file or the ``test_*`` Postgres
database that pytest-django created) and the broker: Redis when
``CELERY_BROKER_URL`` is set, otherwise kombu's filesystem transport in a
per-session folder, which this plugin also points the test process at, so
doorbells sent by tests never land in the developer's ``var/broker``.
Worker logs go to ``var/test-output/worker/`` (``worker-gwN/`` in xdist worker ``gwN``).

Tests that use the fixture are marked ``worker`` automatically.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plugins.parallel import own_folder
from tests.worker.harness import TEST_LEASE_SECONDS, WorkerProcess, filesystem_broker_options

BASE_DIR = Path(__file__).resolve().parents[2]
WORKER_OUTPUT = own_folder(BASE_DIR / "var" / "test-output" / "worker")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "celery_worker_process" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.worker)


@pytest.fixture(scope="session", autouse=True)
def celery_test_broker(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """This session's filesystem broker folder (None when ``CELERY_BROKER_URL`` names a server)."""
    from config.celery import app

    if not str(app.conf.broker_url).startswith("filesystem"):
        return None
    root = tmp_path_factory.mktemp("broker")
    app.conf.broker_transport_options = filesystem_broker_options(root)
    return root


# The session's worker, once started: tests that do not ask for it must not have it running.
_SESSION_WORKERS: list[WorkerProcess] = []


@pytest.fixture(autouse=True)
def _no_stray_worker(request: pytest.FixtureRequest) -> None:
    """Stop the session's worker before a committing test that did not ask for it.

    A transactional or live-server test commits, so its doorbells reach the broker;
    a worker left running by an earlier test would take its work from under it.
    """
    names = request.fixturenames
    if "celery_worker_process" in names or not {"transactional_db", "live_server"} & set(names):
        return
    for worker in _SESSION_WORKERS:
        if worker.alive:
            worker.stop()


@pytest.fixture(scope="session")
def _celery_worker_session(
    django_db_setup: None,
    django_db_blocker,
    celery_test_broker: Path | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[WorkerProcess]:
    from django.db import connection

    from tests.worker.handlers import effects_table_create

    with django_db_blocker.unblock():
        effects_table_create()
        database_name = str(connection.settings_dict["NAME"])
    gate_dir = tmp_path_factory.mktemp("gates")
    shutil.rmtree(WORKER_OUTPUT, ignore_errors=True)
    WORKER_OUTPUT.mkdir(parents=True)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.worker.settings",
        "SEALROOM_TEST_DB_NAME": database_name,
        "SEALROOM_WORK_LEASE_SECONDS": str(TEST_LEASE_SECONDS),
        "SEALROOM_TEST_GATE_DIR": str(gate_dir),
        "SEALROOM_BLOB_DIR": str(tmp_path_factory.mktemp("worker-blobs")),
        "SEALROOM_KEY_DIR": str(tmp_path_factory.mktemp("worker-keys")),
        "SEALROOM_AUDIT_EXPORT_DIR": str(tmp_path_factory.mktemp("worker-audit-export")),
        "PYTHONUNBUFFERED": "1",
    }
    if celery_test_broker is not None:
        env["SEALROOM_TEST_BROKER_DIR"] = str(celery_test_broker)
    worker = WorkerProcess(cwd=BASE_DIR, env=env, log_dir=WORKER_OUTPUT)
    _SESSION_WORKERS.append(worker)
    with pytest.MonkeyPatch.context() as mp:
        # The drill handlers are imported in this process too (gate files live here).
        mp.setenv("SEALROOM_TEST_GATE_DIR", str(gate_dir))
        worker.start()
        try:
            yield worker
        finally:
            worker.stop()


@pytest.fixture
def celery_worker_process(transactional_db: None, _celery_worker_session: WorkerProcess) -> WorkerProcess:
    """A live Celery worker process on the test database; ``.kill()`` and ``.restart()`` it at will."""
    # The database was flushed since the last test: checkpoints the worker exported then would
    # be "beyond the last event" of this test's audit log.
    export_dir = Path(_celery_worker_session.env["SEALROOM_AUDIT_EXPORT_DIR"])
    for stale in export_dir.iterdir():
        if stale.is_dir():
            shutil.rmtree(stale)
        else:
            stale.unlink()
    if not _celery_worker_session.alive:
        _celery_worker_session.start()
    return _celery_worker_session
