"""Browser harness: Playwright (sync) on headless Chromium against a live server.

Load it with ``-p tests.plugins.browser``. Fixtures:

- ``page``: a fresh Playwright page on headless Chromium (Debian's ``chromium``,
  or ``SEALROOM_CHROMIUM``) whose relative URLs (``page.goto("/login/")``) go
  to pytest-django's ``live_server`` (so the test uses a transactional
  database). Any
  console error the page logs (a Content-Security-Policy violation is one)
  or any uncaught script error fails the test, so CSP without
  ``unsafe-inline`` is proven on every page the test visits.
- ``shot``: ``shot("signed-in")`` saves a full-page screenshot as
  ``var/test-output/browser/<test name>/NN-signed-in.png``.
- ``console_messages``: what the page logged, for a test that wants to look.

Tests marked ``browser`` skip with the reason printed when Chromium or the
Playwright package is missing. Playwright's own browser download is never
used (``playwright install`` is not needed).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DEFAULT_CHROMIUM = "/usr/bin/chromium"
# The repository root (tests/plugins/browser.py is two levels down); no Django settings at import.
OUTPUT_DIR = Path(__file__).resolve().parents[2] / "var" / "test-output" / "browser"
NAVIGATION_TIMEOUT_MS = 15_000


def chromium_path() -> str:
    return os.environ.get("SEALROOM_CHROMIUM") or DEFAULT_CHROMIUM


def browser_unavailable() -> str | None:
    """Why browser tests cannot run here, or None when they can."""
    path = chromium_path()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)) and shutil.which(path) is None:
        return (
            f"needs Chromium at {path} (install Debian's 'chromium' or set SEALROOM_CHROMIUM); "
            "Playwright's own browser download is not used"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "needs the 'playwright' Python package (make setup installs it from requirements/dev.txt)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = browser_unavailable()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A headless Chromium for one test.

    Per test, not per session: while Playwright's sync API is started it keeps
    an asyncio loop running on this thread, and Django refuses ORM calls from
    a thread with a running loop. So the loop lives only as long as the test,
    and only the test itself runs with ``DJANGO_ALLOW_ASYNC_UNSAFE``.
    """
    reason = browser_unavailable()
    if reason is not None:
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class ConsoleLog:
    """What the page said: console messages, and the ones that fail the test."""

    messages: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)
    reported: int = 0

    def allow(self, pattern: str) -> None:
        """Tolerate console errors matching ``pattern`` (for a test that expects, say, a 403)."""
        self.allowed.append(re.compile(pattern))

    def record(self, kind: str, text: str, where: str) -> None:
        line = f"[{kind}] {text} ({where})" if where else f"[{kind}] {text}"
        self.messages.append(line)
        if kind in ("error", "pageerror") and not any(p.search(text) for p in self.allowed):
            self.problems.append(line)


CONSOLE_KEY = pytest.StashKey[ConsoleLog]()


@pytest.fixture
def console_messages() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture
def page(
    browser: Any, live_server: Any, console_messages: ConsoleLog, request: pytest.FixtureRequest
) -> Iterator[Any]:
    """A Playwright page on the live server; console errors and CSP violations fail the test."""
    request.node.stash[CONSOLE_KEY] = console_messages
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(NAVIGATION_TIMEOUT_MS)
    browser_page = context.new_page()

    def on_console(message: Any) -> None:
        location = message.location or {}
        where = f"{location.get('url', '')}:{location.get('lineNumber', '')}" if location else ""
        console_messages.record(message.type, message.text, where)

    browser_page.on("console", on_console)
    browser_page.on("pageerror", lambda error: console_messages.record("pageerror", str(error), ""))
    yield browser_page
    context.close()
    late = console_messages.problems[console_messages.reported :]
    if late:
        pytest.fail(_problem_report(late), pytrace=False)


def _problem_report(problems: list[str]) -> str:
    return "the page logged errors (a CSP violation shows up here):\n" + "\n".join(problems)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Fail the test itself (not its teardown) when its page logged an error."""
    result = yield
    log = item.stash.get(CONSOLE_KEY, None)
    if log is not None and log.problems:
        log.reported = len(log.problems)
        pytest.fail(_problem_report(log.problems), pytrace=False)
    return result


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "shot"


@pytest.fixture
def shot(page: Any, request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """``shot(name)`` saves a numbered full-page screenshot of the current page."""
    directory = OUTPUT_DIR / _slug(request.node.name)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    counter = {"n": 0}

    def take(name: str) -> Path:
        counter["n"] += 1
        path = directory / f"{counter['n']:02d}-{_slug(name)}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
