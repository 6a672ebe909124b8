"""Exceptions: every API error carries the server's problem+json (``code``, ``detail``, ``errors``).

``ApiError`` is the base of the HTTP errors; catch a subclass for one status
(``NotFound``, ``Conflict``, ``ValidationError``…) or match on ``code``, which is
stable (``marketplace.offer_retired``, ``idempotency.key_reused``…).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class SealroomError(Exception):
    """Base of every error the SDK raises."""


class ConfigurationError(SealroomError):
    """No token, or a malformed base URL: nothing was sent."""


class ConnectionFailed(SealroomError):
    """The server could not be reached (after the retries)."""


@dataclass(frozen=True)
class FieldError:
    """One field's problem: ``pointer`` is a JSON pointer into the request (``/offer_id``)."""

    pointer: str
    code: str
    detail: str


class ApiError(SealroomError):
    """The server answered with an error (``application/problem+json``)."""

    def __init__(
        self,
        *,
        status: int,
        code: str,
        detail: str,
        title: str = "",
        type: str = "",
        errors: list[FieldError] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.detail = detail
        self.title = title
        self.type = type
        self.errors = errors or []
        self.body = body
        self.headers = headers or {}
        super().__init__(self._message())

    def _message(self) -> str:
        text = f"{self.status} {self.code}: {self.detail}"
        fields = "; ".join(f"{e.pointer}: {e.detail}" for e in self.errors if e.detail not in self.detail)
        return f"{text} ({fields})" if fields else text


class BadRequest(ApiError):
    """400: the request could not be parsed."""


class AuthenticationError(ApiError):
    """401: no token, or a revoked, expired or unknown one."""


class PermissionDenied(ApiError):
    """403: the wrong role, or a token without the scope."""


class NotFound(ApiError):
    """404: no such object (or another organisation's)."""


class Conflict(ApiError):
    """409: conflicts with the current state (a job not finished, a key in flight…)."""


class PayloadTooLarge(ApiError):
    """413: the body or the upload is past a limit."""


class UnsupportedMediaType(ApiError):
    """415: a format the server does not take."""


class ValidationError(ApiError):
    """422: invalid content or a broken business rule; see ``errors`` for the fields."""


class RateLimited(ApiError):
    """429 after the retries; ``retry_after`` is the server's advice in seconds."""

    @property
    def retry_after(self) -> float | None:
        value = self.headers.get("retry-after")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


class ServerError(ApiError):
    """5xx: something went wrong on the server's side."""


STATUS_ERRORS: dict[int, type[ApiError]] = {
    400: BadRequest,
    401: AuthenticationError,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    422: ValidationError,
    429: RateLimited,
}


def error_for(status: int, body: Any, headers: dict[str, str]) -> ApiError:
    """The exception for an error response; ``body`` is its parsed JSON (or text)."""
    problem = body if isinstance(body, dict) else {}
    errors = [
        FieldError(
            pointer=str(e.get("pointer", "/")), code=str(e.get("code", "")), detail=str(e.get("detail", ""))
        )
        for e in problem.get("errors") or []
        if isinstance(e, dict)
    ]
    cls = STATUS_ERRORS.get(status, ServerError if status >= 500 else ApiError)
    return cls(
        status=status,
        code=str(problem.get("code") or f"http_{status}"),
        detail=str(problem.get("detail") or (body if isinstance(body, str) and body else "")).strip()
        or f"HTTP {status}",
        title=str(problem.get("title", "")),
        type=str(problem.get("type", "")),
        errors=errors,
        body=body,
        headers={k.lower(): v for k, v in headers.items()},
    )


class ReceiptInvalid(SealroomError):
    """A receipt (or the archive it names) did not verify; ``problems`` says what is wrong."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("receipt NOT valid: " + "; ".join(problems))


class JobFailed(SealroomError):
    """A followed job ended failed or cancelled."""

    def __init__(self, job_id: str, state: str, code: str, reason: str) -> None:
        self.job_id, self.state, self.code, self.reason = job_id, state, code, reason
        super().__init__(f"job {job_id} {state}" + (f" ({code}): {reason}" if code or reason else ""))
