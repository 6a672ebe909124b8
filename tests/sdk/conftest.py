"""SDK fixtures: the real app behind pytest-django's ``live_server``, and clients of the ``sdk/`` package.

The package is imported from ``sdk/`` (put on ``sys.path`` here), as ``pip install ./sdk``
would install it. Nothing the SDK talks to is mocked: every call crosses HTTP to the
live server, which runs the project's own views, services and signing keys.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

SDK_DIR = Path(__file__).resolve().parents[2] / "sdk"
if str(SDK_DIR) not in sys.path:
    sys.path.insert(0, str(SDK_DIR))

from sealroom import Client, cli  # noqa: E402

from common.models import Organisation, User  # noqa: E402
from tests.conftest import make_token  # noqa: E402
from tests.marketplace.catalog.conftest import sealed_rows  # noqa: E402, F401
from tests.marketplace.orders.conftest import cora, fund, market  # noqa: E402, F401

TRAINER_SCOPES = ["read", "order", "train"]


@pytest.fixture(autouse=True)
def _sdk_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep ``sealroom login``'s file and upload resume records out of the developer's home."""
    monkeypatch.setenv("SEALROOM_HOME", str(tmp_path / "sealroom-home"))
    monkeypatch.setenv("SEALROOM_CACHE", str(tmp_path / "sealroom-cache"))
    monkeypatch.delenv("SEALROOM_TOKEN", raising=False)
    monkeypatch.delenv("SEALROOM_URL", raising=False)


@pytest.fixture
def connect(live_server: Any) -> Callable[..., Client]:
    """``connect(user, org, scopes)`` -> an SDK client with a fresh token, on the live server."""

    def _connect(
        user: User, organisation: Organisation, scopes: list[str] | None = None, **kw: Any
    ) -> Client:
        return Client(token=make_token(user, organisation, scopes), base_url=live_server.url, **kw)

    return _connect


@pytest.fixture
def trainer(connect: Callable[..., Client], bob: User, bolt: Organisation) -> Client:
    """Bob (admin of the trainer Bolt Models), with the read, order and train scopes."""
    return connect(bob, bolt, TRAINER_SCOPES)


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli(*args: str, url: str, token: str | None = None) -> CliResult:
    """Run the ``sealroom`` command's ``main(ARGS)`` in this process, against ``url``.

    In-process so that it is quick (a subprocess pays the imports each time); the live
    server answers from its own thread. ``run_cli_process`` runs the real entry point.
    """
    stdout, stderr = io.StringIO(), io.StringIO()
    saved = {name: os.environ.get(name) for name in ("SEALROOM_URL", "SEALROOM_TOKEN", "COLUMNS")}
    os.environ.update({"SEALROOM_URL": url, "COLUMNS": "200"})
    os.environ.pop("SEALROOM_TOKEN", None)
    if token:
        os.environ["SEALROOM_TOKEN"] = token
    code: int = 0
    # Consoles made now, as a new process makes them at import: they read COLUMNS then (the
    # module's own were made when this process imported it, and under pytest-xdist a worker
    # starts with COLUMNS=80).
    consoles = cli.out, cli.err
    cli.out, cli.err = Console(), Console(stderr=True)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            cli.main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        cli.out, cli.err = consoles
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return CliResult(code, stdout.getvalue(), stderr.getvalue())


def run_cli_process(*args: str, url: str) -> subprocess.CompletedProcess:
    """Run ``python -m sealroom ARGS`` in a process of its own, as a user would."""
    env = {**os.environ, "SEALROOM_URL": url, "PYTHONPATH": str(SDK_DIR), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "sealroom", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
