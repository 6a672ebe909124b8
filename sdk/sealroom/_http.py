"""HTTP: the bearer token, retries, Idempotency-Key, and problem+json errors.

Retries (up to ``max_retries``):
- 429: after ``Retry-After`` (capped by ``max_retry_wait``; longer waits raise ``RateLimited``);
- 409 ``idempotency.in_progress``: the first request with our key is still running;
- connection errors and 502/503/504: only for requests safe to repeat (GET, PUT, DELETE,
  and POSTs that carry an Idempotency-Key), with exponential backoff.
An Idempotency-Key is made once per call and reused on each of its retries, so a retried
order is placed once.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx

from sealroom import _api
from sealroom.errors import ConnectionFailed, error_for

logger = logging.getLogger("sealroom")

RETRY_STATUSES = frozenset({502, 503, 504})
SAFE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE"})


def new_idempotency_key() -> str:
    return f"sdk-{uuid.uuid4().hex}"


class Transport:
    def __init__(
        self,
        *,
        base_url: str,
        token: str | None,
        timeout: float,
        max_retries: int,
        max_retry_wait: float,
        user_agent: str,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.max_retries = max_retries
        self.max_retry_wait = max_retry_wait
        self.sleep = sleep
        headers = {"User-Agent": user_agent, "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.http = http or httpx.Client(timeout=timeout)
        self.headers = headers
        self.retries = 0  # how many retries this transport made (for callers and tests)

    def close(self) -> None:
        self.http.close()

    def url(self, path: str) -> str:
        return f"{self.base_url}{_api.PREFIX}{path}"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
        content_type: str | None = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        """One API call, retried as the module says; returns a 2xx response. :raises ApiError:"""
        headers = dict(self.headers)
        if content_type:
            headers["Content-Type"] = content_type
        if method == "POST" and (idempotency_key or path in _api.IDEMPOTENT_POSTS):
            headers["Idempotency-Key"] = idempotency_key or new_idempotency_key()
        repeatable = method in SAFE_METHODS or "Idempotency-Key" in headers
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        attempt = 0
        while True:
            try:
                response = self.http.request(
                    method, self.url(path), params=clean, json=json_body, content=content, headers=headers
                )
            except httpx.TransportError as exc:
                if not repeatable or attempt >= self.max_retries:
                    raise ConnectionFailed(f"{method} {path}: {exc}") from exc
                wait = self._backoff(attempt)
                logger.warning("%s %s failed (%s); retrying in %.1fs", method, path, exc, wait)
            else:
                if response.is_success:
                    return response
                wait_or_none = self._retry_wait(response, attempt, repeatable)
                if wait_or_none is None:
                    raise self._error(response)
                wait = wait_or_none
                logger.warning(
                    "%s %s answered %s; retrying in %.1fs", method, path, response.status_code, wait
                )
            attempt += 1
            self.retries += 1
            self.sleep(wait)

    @contextmanager
    def stream(self, path: str) -> Iterator[httpx.Response]:
        """A streamed GET (downloads); rate limits are retried before the body is read."""
        attempt = 0
        while True:
            with self.http.stream("GET", self.url(path), headers=self.headers) as response:
                if response.is_success:
                    yield response
                    return
                response.read()
                wait = self._retry_wait(response, attempt, True)
                if wait is None:
                    raise self._error(response)
            attempt += 1
            self.retries += 1
            self.sleep(wait)

    def _backoff(self, attempt: int) -> float:
        return float(min(self.max_retry_wait, 0.5 * 2**attempt))

    def _retry_wait(self, response: httpx.Response, attempt: int, repeatable: bool) -> float | None:
        """Seconds to wait before retrying, or None when this response is final."""
        if attempt >= self.max_retries:
            return None
        status = response.status_code
        if status == 429:
            advised = _retry_after(response)
            wait = advised if advised is not None else self._backoff(attempt)
            return wait if wait <= self.max_retry_wait else None
        if status == 409 and repeatable and _problem_code(response) == "idempotency.in_progress":
            return self._backoff(attempt)
        if status in RETRY_STATUSES and repeatable:
            return self._backoff(attempt)
        return None

    @staticmethod
    def _error(response: httpx.Response) -> Exception:
        try:
            body: Any = response.json()
        except (ValueError, json.JSONDecodeError):
            body = response.text
        return error_for(response.status_code, body, dict(response.headers))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _problem_code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("code", "")) if isinstance(body, dict) else ""
