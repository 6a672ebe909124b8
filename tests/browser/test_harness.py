"""The harness itself: CSP holds in the browser, and a violation would fail the test."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_csp_blocks_inline_code_and_the_harness_notices(page, console_messages, shot):
    page.goto("/login/")
    shot("sign-in-page")
    assert console_messages.problems == []
    assert page.evaluate("typeof window.htmx") == "object"

    page.evaluate(
        """() => {
            const style = document.createElement("style");
            style.textContent = "body { background: red; }";
            document.head.appendChild(style);
            const script = document.createElement("script");
            script.textContent = "window.inlineRan = true;";
            document.head.appendChild(script);
        }"""
    )
    page.wait_for_timeout(200)
    assert page.evaluate("window.inlineRan === undefined")
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") != "rgb(255, 0, 0)"
    violations = [p for p in console_messages.problems if "Content Security Policy" in p]
    assert len(violations) == 2, console_messages.messages
    # Seen and checked: clear them, or the harness would (rightly) fail this test.
    console_messages.problems.clear()
