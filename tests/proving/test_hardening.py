"""Baseline hardening: security headers everywhere, CSRF on unsafe portal requests, no secrets in the tree.

``manage.py check --deploy`` with production settings is proved in
tests/common/test_settings.py (and the refusal of the development secret); this
module does not repeat it. HSTS is checked here in a child interpreter with
production settings, since settings are read once per process.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from common.public_ids import PREFIXES
from tests.common.test_settings import DEV_SECRET, production_env, run_python

BASE_DIR = Path(settings.BASE_DIR)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
CONVERTER_VALUES = {
    "int": "1",
    "str": "x",
    "slug": "x",
    "uuid": "00000000-0000-0000-0000-000000000001",
    # Public-id converters (common/public_ids.py): a well-formed id of the route's kind.
    **{prefix: f"{prefix}_0000000000000001" for prefix in PREFIXES},
}


def walk_routes(patterns: list | None = None, prefix: str = "") -> Iterator[tuple[str, str]]:
    """Yield (concrete path, route) for every URL pattern, converters filled with harmless values."""
    for entry in patterns if patterns is not None else get_resolver().url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from walk_routes(entry.url_patterns, route)
        elif isinstance(entry, URLPattern):
            if route.startswith("^") or "(?P" in route:
                continue  # regex routes (static files in debug): none are ours
            path = re.sub(
                r"<(?:(\w+):)?\w+>", lambda m: CONVERTER_VALUES.get(m.group(1) or "str", "x"), route
            )
            yield "/" + path, route


ALL_ROUTES = sorted(set(walk_routes()))
API_ROUTES = [r for r in ALL_ROUTES if r[0].startswith("/api/")]
PAGE_ROUTES = [r for r in ALL_ROUTES if not r[0].startswith("/api/") and r[0] != "/healthz"]


def assert_security_headers(response, where: str) -> None:
    assert response["X-Content-Type-Options"] == "nosniff", where
    assert response["Referrer-Policy"] == "same-origin", where
    frame = response.get("X-Frame-Options", "")
    policy = response.get("Content-Security-Policy", "")
    assert frame == "DENY" or "frame-ancestors 'none'" in policy, where


@pytest.fixture
def signed_in(alice, acme) -> Client:
    # A page that fails still answers through the middleware: its headers count too.
    client = Client(raise_request_exception=False)
    client.force_login(alice)
    return client


class TestSecurityHeaders:
    def test_every_page_route_answers_with_the_headers_and_a_strict_csp(self, signed_in):
        assert len(PAGE_ROUTES) > 20
        for path, route in PAGE_ROUTES:
            response = signed_in.get(path)
            assert_security_headers(response, route)
            if response["Content-Type"].startswith("text/html"):
                policy = response["Content-Security-Policy"]
                assert "default-src 'self'" in policy, route
                assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, route

    def test_every_api_route_answers_with_the_headers(self, alice, acme, token_for):
        client = token_for(alice, acme, ["read"])
        client.raise_request_exception = False
        assert len(API_ROUTES) > 20
        for path, route in API_ROUTES:
            assert_security_headers(client.get(path), route)

    def test_errors_and_anonymous_requests_carry_them_too(self, db):
        client = Client()
        for path in ("/no-such-page/", "/api/v1/no-such-thing", "/api/v1/me", "/login/", "/healthz"):
            assert_security_headers(client.get(path), path)

    def test_production_settings_send_hsts_and_redirect_to_https(self, tmp_path):
        code = (
            "import django, json\n"
            "django.setup()\n"
            "from django.test import Client\n"
            "c = Client()\n"
            "secure = c.get('/api/v1/no-such-thing', secure=True, HTTP_HOST='sealroom.example')\n"
            "plain = c.get('/api/v1/me', HTTP_HOST='sealroom.example')\n"
            "print(json.dumps({'hsts': secure.get('Strict-Transport-Security', ''),"
            " 'plain': plain.status_code, 'location': plain.get('Location', ''),"
            " 'cookie_secure': __import__('django.conf').conf.settings.SESSION_COOKIE_SECURE}))\n"
        )
        result = run_python(["-c", code], production_env(DATABASE_URL=f"sqlite:///{tmp_path}/db.sqlite3"))
        assert result.returncode == 0, result.stderr[-2000:]
        seen = json.loads(result.stdout.strip().splitlines()[-1])
        assert "max-age=31536000" in seen["hsts"]
        assert "includeSubDomains" in seen["hsts"] and "preload" in seen["hsts"]
        assert seen["plain"] == 301 and seen["location"].startswith("https://sealroom.example/")
        assert seen["cookie_secure"] is True


class TestCsrf:
    def test_every_unsafe_portal_request_without_a_token_is_refused(self, alice, acme, caplog):
        client = Client(enforce_csrf_checks=True, raise_request_exception=False)
        client.force_login(alice)
        unprotected = []
        for path, route in PAGE_ROUTES:
            for method in ("post", "put", "patch", "delete"):
                caplog.clear()
                response = getattr(client, method)(path, {})
                # Refused by the CSRF check itself (it logs), not by a permission check.
                refused = any(r.name == "django.security.csrf" for r in caplog.records)
                if response.status_code != 403 or not refused:
                    unprotected.append(f"{method.upper()} {route}: {response.status_code}")
        assert not unprotected, unprotected

    def test_the_api_refuses_a_session_post_without_a_token(self, alice, acme):
        client = Client(enforce_csrf_checks=True, raise_request_exception=False)
        client.force_login(alice)
        unprotected = []
        for path, route in API_ROUTES:
            response = client.post(path, {}, content_type="application/json")
            # 403 (CSRF) — or 405 where the route has no unsafe method at all.
            if response.status_code not in (403, 405):
                unprotected.append(f"POST {route}: {response.status_code}")
        assert not unprotected, unprotected

    def test_a_post_with_the_token_gets_past_csrf(self, alice, acme):
        client = Client(enforce_csrf_checks=True)
        client.force_login(alice)
        client.get("/login/")
        token = client.cookies["csrftoken"].value
        response = client.post("/organisations/switch/", {"csrfmiddlewaretoken": token})
        assert response.status_code != 403


# --- secrets ------------------------------------------------------------------------

SECRET_PATTERNS = {
    "private key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"),
    "API token with its secret": re.compile(r"\bsrk_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}"),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret key": re.compile(r"aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{40}", re.IGNORECASE),
    "Django secret key": re.compile(r"SECRET_KEY\s*[=:]\s*['\"]([^'\"\s]{20,})['\"]"),
}
# Values that say they are not secrets (the dev key, "ignored-when-a-file-is-named").
PLACEHOLDER = re.compile(r"insecure|ignored|placeholder|example|change-?me|dummy", re.IGNORECASE)
# Text that must stay out of files but that this module names to find it.
SELF = Path(__file__).relative_to(BASE_DIR).as_posix()
MAX_SCAN_BYTES = 5 * 1024 * 1024


def find_secrets(path: Path, shown: str) -> list[str]:
    try:
        if path.stat().st_size > MAX_SCAN_BYTES or not path.is_file():
            return []
        text = path.read_bytes().decode("utf-8", errors="ignore")
    except OSError:
        return []
    found = []
    for name, pattern in SECRET_PATTERNS.items():
        for match in pattern.finditer(text):
            if name == "Django secret key" and (
                match.group(1) == DEV_SECRET or PLACEHOLDER.search(match.group(1))
            ):
                continue
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"{shown}:{line}: {name}")
    return found


def test_the_patterns_find_what_they_are_meant_to(tmp_path):
    planted = tmp_path / "planted.txt"
    planted.write_text(
        "-----BEGIN RSA PRIVATE KEY-----\n"
        "token srk_0123abcd_" + "A" * 43 + "\n"
        "AKIA" + "ABCDEFGHIJKLMNOP\n"
        "SECRET_KEY = '" + "k" * 50 + "'\n"
        f"SECRET_KEY = '{DEV_SECRET}'\n"
        "SECRET_KEY = 'ignored-when-a-file-is-named'\n"
    )
    found = find_secrets(planted, "planted")
    assert [f.split(": ", 1)[1] for f in found] == [
        "private key",
        "API token with its secret",
        "AWS access key id",
        "Django secret key",
    ]


def test_no_secret_is_tracked_in_the_repository():
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=BASE_DIR, capture_output=True, check=True, timeout=60
    ).stdout.decode()
    files = [name for name in listed.split("\0") if name and name != SELF]
    assert len(files) > 100
    found = [hit for name in files for hit in find_secrets(BASE_DIR / name, name)]
    assert not found, found


def test_no_secret_is_in_the_logs_and_output_the_tests_write():
    var = BASE_DIR / "var"
    # os.walk, not rglob: under `make test` another pytest process writes and removes files
    # here meanwhile, and a folder that vanishes mid-walk is skipped, not an error.
    candidates = [
        Path(root) / name
        for top in (var / "test-output", var / "logs")
        for root, _, names in os.walk(top)
        for name in names
    ]
    candidates += list(var.glob("*.log"))
    found = [hit for p in candidates for hit in find_secrets(p, str(p.relative_to(BASE_DIR)))]
    assert not found, found
