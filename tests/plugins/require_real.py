"""pytest plugin: say which tests needing real services skipped, and fail CI when any did.

Tests marked ``postgres``, ``worker`` or ``browser`` may skip on a bare
machine. At the end of every run this plugin prints them grouped by module
with the reason, so a skip is never silent. With ``SEALROOM_REQUIRE_REAL=1``
(as ``.ci/run`` sets) any such skip, or a whole module skipped at collection,
fails the session with that list.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass

import pytest

REAL_MARKERS = ("postgres", "worker", "browser", "s3")
ENV_FLAG = "SEALROOM_REQUIRE_REAL"


@dataclass(frozen=True)
class RealSkip:
    nodeid: str
    markers: tuple[str, ...]
    reason: str

    @property
    def module(self) -> str:
        return self.nodeid.split("::", 1)[0]


def _required() -> bool:
    return os.environ.get(ENV_FLAG, "").strip().lower() in {"1", "true", "yes", "on"}


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    # A skip's longrepr is (path, line, "Skipped: reason").
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2]).removeprefix("Skipped: ")
    return str(longrepr)


class RequireReal:
    def __init__(self) -> None:
        self.skips: list[RealSkip] = []

    @pytest.hookimpl
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        markers = tuple(name for name in REAL_MARKERS if name in report.keywords)
        if markers:
            self.skips.append(RealSkip(report.nodeid, markers, _reason(report)))

    @pytest.hookimpl
    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        # A module that skips itself (pytest.skip(allow_module_level=True),
        # importorskip) hides its markers; count it, since it may hold any.
        if report.skipped:
            self.skips.append(RealSkip(report.nodeid, ("module",), _reason(report)))

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if (
            self.skips
            and _required()
            and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
        ):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.skips:
            return
        required = _required()
        title = (
            f"{ENV_FLAG}=1: these tests needing real services skipped"
            if required
            else (
                "tests needing real services skipped (set DATABASE_URL, CELERY_BROKER_URL, install chromium)"
            )
        )
        terminalreporter.section(title, sep="=", red=required, yellow=not required, bold=True)
        by_module: dict[str, list[RealSkip]] = defaultdict(list)
        for skip in self.skips:
            by_module[skip.module].append(skip)
        for module, skips in sorted(by_module.items()):
            reasons = sorted({skip.reason for skip in skips})
            markers = sorted({marker for skip in skips for marker in skip.markers})
            terminalreporter.write_line(f"{module}: {len(skips)} skipped [{', '.join(markers)}]")
            for reason in reasons:
                terminalreporter.write_line(f"    because: {reason}")
        if required:
            terminalreporter.write_line(
                f"FAILED: {len(self.skips)} skipped, and {ENV_FLAG}=1 demands Postgres, a worker, Chromium.",
                red=True,
                bold=True,
            )


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(RequireReal(), "sealroom-require-real")
