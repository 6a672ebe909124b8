"""pytest plugin: the suite on several processes (pytest-xdist), each with services of its own.

``make test`` runs pytest with ``-n 2 --dist loadgroup``. No test names a group, so each test
is a unit of its own, handed out one at a time to a process with two or fewer waiting: the two
work through the suite side by side in collection order, and neither is left with a queue while
the other idles. Either process may run any test, live-worker tests included (each starts its
own Celery worker), so what one process touches must never be the other's:

- the database: pytest-django gives each xdist worker its own test database (``test_test_gw0``,
  ``test_test_gw1``; for SQLite, its own file);
- Redis: worker ``gwN`` moves the broker's and the cache's Redis database numbers up by ``2 * N``
  (``/0`` and ``/1`` become ``/2`` and ``/3`` on ``gw1``), so a doorbell committed in one process
  never reaches the other's Celery worker;
- folders: the training working folder (``SEALROOM_TRAINING_WORK_DIR``; job ids repeat across the
  two databases, and a worker removes its job's folder when the job ends) and the Celery worker's
  logs (:func:`own_folder`) carry the worker's name.

The environment is changed here, on import (``-p tests.plugins.parallel`` in the ini's addopts),
before pytest-django sets Django up; the Celery worker a test starts inherits it. Without ``-n``
(or with ``-n 0``) nothing changes.

Groups would not hold here anyway: pytest-xdist 3.8 marks a group by rewriting ``item._nodeid``,
which pytest 9 no longer reads, so an ``xdist_group`` marker is silently ignored. (``--dist
load`` sends contiguous chunks and ``worksteal`` halves; both untried here: loadgroup's
one-at-a-time is what was measured and what CI ran.)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parents[2]
# Redis databases a process may use: 0..15 by default; each xdist worker takes two.
REDIS_DATABASES_EACH = 2
REDIS_URLS = ("CELERY_BROKER_URL", "CACHE_URL")
WORK_DIR_ENV = "SEALROOM_TRAINING_WORK_DIR"


def worker_name() -> str:
    """xdist's ``gwN`` in one of its workers; "" in a serial run or the controller."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")
    return name if re.fullmatch(r"gw\d+", name) else ""


def worker_index(name: str) -> int:
    """N for xdist's ``gwN``; 0 for anything else."""
    return int(name.removeprefix("gw")) if re.fullmatch(r"gw\d+", name) else 0


def own_folder(path: Path) -> Path:
    """``path`` in a serial run; ``path-gwN`` in xdist worker ``gwN``."""
    name = worker_name()
    return path.with_name(f"{path.name}-{name}") if name else path


def shifted_redis_url(url: str, by: int) -> str:
    """``redis://host:port/N`` with database ``N + by`` (database 0 when the URL names none);
    any other URL as it is."""
    if by == 0 or not url.startswith(("redis://", "rediss://")):
        return url
    match = re.fullmatch(r"(?P<head>[a-z]+://[^/?#]*)(?:/(?P<db>\d*))?(?P<tail>[?#].*)?", url)
    if match is None:
        raise pytest.UsageError(f"cannot give this xdist worker its own Redis database in {url!r}")
    database = int(match["db"] or 0) + by
    if database > 15:
        raise pytest.UsageError(f"xdist worker needs Redis database {database} (of 0-15) for {url!r}")
    return f"{match['head']}/{database}{match['tail'] or ''}"


def _own_services() -> None:
    name = worker_name()
    if not name:
        return
    by = REDIS_DATABASES_EACH * worker_index(name)
    for variable in REDIS_URLS:
        if os.environ.get(variable):
            os.environ[variable] = shifted_redis_url(os.environ[variable], by)
    var = Path(os.environ.get("SEALROOM_VAR_DIR") or BASE_DIR / "var")
    os.environ[WORK_DIR_ENV] = str(own_folder(Path(os.environ.get(WORK_DIR_ENV) or var / "training-work")))


_own_services()
