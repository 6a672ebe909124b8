"""Two-factor sign-in with TOTP (django-otp), required for operators.

A password alone never signs in someone who has a confirmed TOTP device, nor
any operator: the password step leaves a *pending* sign-in in the session
(the user's id, for a few minutes), and only the verify step (or, for an
operator without a device, the enrollment step) signs the user in and marks
the session OTP-verified.

``signed_in`` guards pages: anonymous visitors go to sign-in, and a signed-in
operator whose session is not OTP-verified goes to the verify or enroll step.
``OperatorOtpMiddleware`` applies the same operator rule to every view of the
project (pages of later apps included), except views marked ``otp_exempt``.
"""

from __future__ import annotations

import time
from base64 import b32encode
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import segno
from django.contrib.auth.views import redirect_to_login
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.urls import reverse
from django_otp.plugins.otp_totp.models import TOTPDevice

from common.api.problems import django_problem, is_api_request
from common.audit import audit_record
from common.models import User

PENDING_USER = "sealroom_pending_user"
PENDING_AT = "sealroom_pending_at"
PENDING_BACKEND = "sealroom_pending_backend"
PENDING_NEXT = "sealroom_pending_next"
# How long a password stays good for the second step.
PENDING_SECONDS = 300

# Public routes owned elsewhere (health, API schema): nothing to hold back.
PUBLIC_VIEW_NAMES = frozenset({"healthz", "api-schema", "api-docs"})

View = TypeVar("View", bound=Callable[..., HttpResponseBase])


# --- The pending (half-signed-in) state ---------------------------------------------


def pending_begin(request: HttpRequest, user: User, *, backend: str, next_url: str) -> None:
    """Remember that ``user`` gave the right password; they are not signed in yet."""
    request.session.cycle_key()
    request.session[PENDING_USER] = user.pk
    request.session[PENDING_AT] = int(time.time())
    request.session[PENDING_BACKEND] = backend
    request.session[PENDING_NEXT] = next_url


def pending_user(request: HttpRequest) -> User | None:
    """The user half-way through signing in, or None (an expired state is cleared)."""
    user_id = request.session.get(PENDING_USER)
    if user_id is None:
        return None
    if time.time() - request.session.get(PENDING_AT, 0) > PENDING_SECONDS:
        pending_clear(request)
        return None
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        pending_clear(request)
    return user


def pending_backend(request: HttpRequest) -> str | None:
    backend: str | None = request.session.get(PENDING_BACKEND)
    return backend


def pending_next(request: HttpRequest) -> str:
    next_url: str = request.session.get(PENDING_NEXT, "")
    return next_url


def pending_clear(request: HttpRequest) -> None:
    for key in (PENDING_USER, PENDING_AT, PENDING_BACKEND, PENDING_NEXT):
        request.session.pop(key, None)


# --- Devices ---------------------------------------------------------------------------


def confirmed_device(user: User) -> TOTPDevice | None:
    device: TOTPDevice | None = TOTPDevice.objects.filter(user=user, confirmed=True).order_by("pk").first()
    return device


def needs_second_factor(user: User) -> bool:
    """Operators always; anyone else once they have a confirmed device."""
    return user.is_operator or confirmed_device(user) is not None


def is_verified(user: Any) -> bool:
    """Whether this request's user passed the second factor (set by OTPMiddleware)."""
    check = getattr(user, "is_verified", None)
    return bool(check()) if callable(check) else False


def verify_code(device: TOTPDevice, code: str) -> bool:
    """Check a code; a code is good once (django-otp refuses reuse and throttles guessing)."""
    with transaction.atomic():
        locked = TOTPDevice.objects.select_for_update().get(pk=device.pk)
        ok: bool = locked.verify_token(code)
    return ok


def enrollment_device(user: User) -> TOTPDevice:
    """The user's unconfirmed device, created on first use so a scanned QR stays valid."""
    device: TOTPDevice | None = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=False)
    return device


def device_secret(device: TOTPDevice) -> str:
    """The base32 secret in groups of four, for typing into an authenticator app."""
    raw = b32encode(device.bin_key).decode("ascii").rstrip("=")
    return " ".join(raw[i : i + 4] for i in range(0, len(raw), 4))


def device_qr_data_uri(device: TOTPDevice) -> str:
    """The device's otpauth:// URL as an SVG QR code, as a data: URI for an <img> (CSP allows data:)."""
    qr = segno.make(device.config_url, error="m")
    uri: str = qr.svg_data_uri(scale=5, border=2, dark="#111827", light="#ffffff")
    return uri


@transaction.atomic
def totp_device_confirm(*, user: User, device: TOTPDevice) -> TOTPDevice:
    """Confirm an enrolled device after its first good code, and audit it."""
    device.confirmed = True
    device.save(update_fields=["confirmed"])
    audit_record(
        action="auth.totp_enrolled",
        actor=user,
        object_type="totp_device",
        object_id=device.pk,
        details={"name": device.name},
    )
    return device


# --- The operator rule: pages and middleware -------------------------------------------


def second_factor_redirect(request: HttpRequest) -> HttpResponse | None:
    """Where a signed-in operator without a verified session must go first, else None."""
    user = request.user
    if not isinstance(user, User) or not user.is_operator or is_verified(user):
        return None
    step = "common:login_verify" if confirmed_device(user) is not None else "common:totp_enroll"
    return redirect_to_login(request.get_full_path(), reverse(step))


def signed_in(view: View) -> View:
    """Page guard: anonymous -> sign-in; an operator not OTP-verified -> the second step."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not request.user.is_authenticated:
            return redirect_to_login(request.get_full_path())
        redirect = second_factor_redirect(request)
        if redirect is not None:
            return redirect
        return view(request, *args, **kwargs)

    return wrapped  # type: ignore[return-value]


def otp_exempt(view: View) -> View:
    """Mark a view reachable by an operator who has not passed the second factor yet."""
    view.otp_exempt = True  # type: ignore[attr-defined]
    return view


class OperatorOtpMiddleware:
    """Hold every view back from a signed-in operator whose session is not OTP-verified.

    Install after ``django_otp.middleware.OTPMiddleware``. Pages redirect to the
    verify or enroll step; the API answers 401 problem+json to such a session
    (token requests are left to the API's own authentication).
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., HttpResponse],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> HttpResponse | None:
        match = request.resolver_match
        if getattr(view_func, "otp_exempt", False) or (match and match.view_name in PUBLIC_VIEW_NAMES):
            return None
        if is_api_request(request):
            if request.headers.get("Authorization"):
                return None
            if second_factor_redirect(request) is None:
                return None
            return django_problem(
                401, "common.otp_required", "Finish two-factor sign-in before using the API from a session."
            )
        return second_factor_redirect(request)
