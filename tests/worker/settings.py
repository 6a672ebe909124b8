"""Settings of the test worker process: the project's settings, on the test database and broker.

The test process passes the name of the database pytest-django created
(``var/test-db.sqlite3`` on SQLite, ``test_<name>`` on Postgres) and, for the
filesystem broker, the session's broker folder; everything else (engine,
WAL pragmas, broker URL, Celery options) is exactly what the test process has.
"""

import os
from pathlib import Path

from config.settings import *  # noqa: F403
from config.settings import CELERY_BROKER_URL, DATABASES
from tests.worker.harness import filesystem_broker_options

DATABASES["default"]["NAME"] = os.environ["SEALROOM_TEST_DB_NAME"]

if CELERY_BROKER_URL.startswith("filesystem"):
    CELERY_BROKER_TRANSPORT_OPTIONS = filesystem_broker_options(Path(os.environ["SEALROOM_TEST_BROKER_DIR"]))
