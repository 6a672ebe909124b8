"""Domain errors. The domain never mentions HTTP: one handler maps these.

Each error has a stable ``code`` (``common.token_expired``) that clients can
switch on, a human ``detail``, and optional field ``errors`` as
``[{"pointer": "/field", "code": ..., "detail": ...}]``.
"""

from __future__ import annotations

from typing import TypedDict


class FieldError(TypedDict):
    pointer: str
    code: str
    detail: str


class DomainError(Exception):
    default_code = "error"
    title = "Error"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        errors: list[FieldError] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.code = code or self.default_code
        self.errors: list[FieldError] = errors or []


class NotFound(DomainError):
    """The object does not exist, or the caller may not know that it does."""

    default_code = "not_found"
    title = "Not found"


class NotPermitted(DomainError):
    """The caller is known and may see the object but may not do this."""

    default_code = "not_permitted"
    title = "Not permitted"


class Conflict(DomainError):
    """The request conflicts with the current state of the object."""

    default_code = "conflict"
    title = "Conflict"


class Invalid(DomainError):
    """The content is well-formed but invalid, or breaks a business rule."""

    default_code = "invalid"
    title = "Invalid"


class TooLarge(DomainError):
    default_code = "too_large"
    title = "Too large"


class UnsupportedFormat(DomainError):
    default_code = "unsupported_format"
    title = "Unsupported format"
