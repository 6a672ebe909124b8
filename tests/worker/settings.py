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

# As the in-process tests do (tests/training/test_lifecycle.py): 31 canary candidates, not the
# production 4,095, so a worker test's release gate scores 4 x 32 texts on the CPU, not 4 x 4,096
# (about 40 s more per job for gpt2-tiny on this machine). A test that needs the gate's power sets
# SEALROOM_TRAINING_CANARY_CANDIDATES in the worker's environment.
TRAINING_CANARY_CANDIDATES = int(os.environ.get("SEALROOM_TRAINING_CANARY_CANDIDATES", "31"))
