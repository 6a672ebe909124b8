"""Sign-up, sign-in (password, lockout, TOTP second step), sign-out, passwords."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import django_otp
from django.contrib import messages
from django.contrib.auth import BACKEND_SESSION_KEY, authenticate
from django.contrib.auth import login as auth_login
from django.contrib.auth import logout as auth_logout
from django.contrib.auth.views import (
    PasswordChangeView,
    PasswordResetConfirmView,
    PasswordResetView,
)
from django.db import transaction
from django.forms import Form
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse_lazy
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_otp.plugins.otp_totp.models import TOTPDevice

from common import otp, services
from common.audit import audit_record
from common.exceptions import Conflict, Invalid
from common.forms import LoginForm, SignupForm, TotpCodeForm, add_domain_error
from common.models import User
from common.pages.helpers import home_url, page_user, safe_next

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
WRONG_CREDENTIALS = "The username or password is not right."
# Django's form views also answer PUT like POST; a page form only needs GET and POST.
FORM_METHODS = ["get", "post", "head", "options"]
WRONG_CODE = "That code is not right. Codes change every 30 seconds: enter the one shown now."


def lockout_message(until: datetime) -> str:
    # The same words whether or not the username exists: unknown names lock too.
    return (
        "Too many failed sign-ins. Signing in with this username is paused until "
        f"{until.astimezone(UTC):%H:%M} UTC."
    )


def _next_from(request: HttpRequest) -> str:
    return safe_next(request, request.POST.get("next") or request.GET.get("next"))


# --- Sign-in -----------------------------------------------------------------------------


@otp.otp_exempt
@require_http_methods(["GET", "POST"])
def login_page(request: HttpRequest) -> HttpResponse:
    """Password step. Lockout is checked before the password, so a locked name learns nothing."""
    next_url = _next_from(request)
    form = LoginForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST" and form.is_valid():
        username = form.cleaned_data["username"]
        locked = services.login_locked_until(username=username)
        if locked is None:
            user = authenticate(request, username=username, password=form.cleaned_data["password"])
            if isinstance(user, User):
                return _after_password(request, user, next_url)
            services.login_failed(username=username)
            locked = services.login_locked_until(username=username)
            if locked is None:
                form.add_error(None, WRONG_CREDENTIALS)
        if locked is not None:
            form.add_error(None, lockout_message(locked))
            status = 429
    return render(request, "registration/login.html", {"form": form, "next": next_url}, status=status)


def _after_password(request: HttpRequest, user: User, next_url: str) -> HttpResponse:
    backend: str = getattr(user, "backend", MODEL_BACKEND)
    if not otp.needs_second_factor(user):
        return complete_sign_in(request, user, backend=backend, device=None, next_url=next_url)
    otp.pending_begin(request, user, backend=backend, next_url=next_url)
    if otp.confirmed_device(user) is None:
        return redirect("common:totp_enroll")
    return redirect("common:login_verify")


def complete_sign_in(
    request: HttpRequest, user: User, *, backend: str, device: TOTPDevice | None, next_url: str
) -> HttpResponse:
    """Sign the user in (and mark the session OTP-verified when a device was used)."""
    otp.pending_clear(request)
    auth_login(request, user, backend=backend)
    if device is not None:
        django_otp.login(request, device)
    services.login_succeeded(user=user, second_factor=device is not None)
    return redirect(next_url)


def _second_step_user(request: HttpRequest) -> tuple[User, bool] | None:
    """Who is at the second step: (user, pending) — pending means not signed in yet."""
    pending = otp.pending_user(request)
    if pending is not None:
        return pending, True
    if isinstance(request.user, User) and not otp.is_verified(request.user):
        return request.user, False
    return None


def _try_code(request: HttpRequest, user: User, device: TOTPDevice, form: Form, *, pending: bool) -> int:
    """Check the form's code: 0 when it verified, else the status to answer with (errors on the form).

    Failed codes count toward the same lockout as failed passwords.
    """
    username = user.get_username()
    locked = services.login_locked_until(username=username)
    if locked is None:
        if otp.verify_code(device, form.cleaned_data["code"]):
            return 0
        services.login_failed(username=username, reason="bad_totp")
        locked = services.login_locked_until(username=username)
        if locked is None:
            form.add_error("code", WRONG_CODE)
            return 200
    assert locked is not None
    if pending:
        otp.pending_clear(request)
    form.add_error(None, lockout_message(locked))
    return 429


def _finish_second_step(
    request: HttpRequest, user: User, device: TOTPDevice, *, pending: bool
) -> HttpResponse:
    if pending:
        backend = otp.pending_backend(request) or MODEL_BACKEND
        next_url = safe_next(request, otp.pending_next(request))
    else:
        backend = request.session.get(BACKEND_SESSION_KEY, MODEL_BACKEND)
        next_url = _next_from(request)
    return complete_sign_in(request, user, backend=backend, device=device, next_url=next_url)


@otp.otp_exempt
@require_http_methods(["GET", "POST"])
def login_verify_page(request: HttpRequest) -> HttpResponse:
    """Second step: a 6-digit code from the user's confirmed authenticator."""
    subject = _second_step_user(request)
    if subject is None:
        return redirect(home_url() if request.user.is_authenticated else "common:login")
    user, pending = subject
    device = otp.confirmed_device(user)
    if device is None:
        if pending or user.is_operator:
            return redirect("common:totp_enroll")
        return redirect(home_url())
    form = TotpCodeForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST" and form.is_valid():
        status = _try_code(request, user, device, form, pending=pending)
        if status == 0:
            return _finish_second_step(request, user, device, pending=pending)
    context = {"form": form, "who": user, "locked": status == 429, "next": _next_from(request)}
    return render(request, "registration/login_verify.html", context, status=status)


@otp.otp_exempt
@require_http_methods(["GET", "POST"])
def totp_enroll_page(request: HttpRequest) -> HttpResponse:
    """Set up an authenticator: QR code and secret, confirmed by a first code.

    Operators without a device land here after their password; anyone signed
    in may come here to turn two-factor sign-in on.
    """
    pending_user = otp.pending_user(request)
    if pending_user is not None:
        user, pending = pending_user, True
    elif isinstance(request.user, User):
        user, pending = request.user, False
    else:
        return redirect("common:login")
    if otp.confirmed_device(user) is not None:
        if pending or not otp.is_verified(user):
            return redirect("common:login_verify")
        return render(request, "registration/totp_enroll.html", {"already": True, "who": user})
    device = otp.enrollment_device(user)
    form = TotpCodeForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST" and form.is_valid():
        status = _try_code(request, user, device, form, pending=pending)
        if status == 0:
            otp.totp_device_confirm(user=user, device=device)
            messages.success(request, "Two-factor sign-in is on. You will need a code each time you sign in.")
            return _finish_second_step(request, user, device, pending=pending)
    context = {
        "form": form,
        "who": user,
        "pending": pending,
        "locked": status == 429,
        "qr_uri": otp.device_qr_data_uri(device),
        "secret": otp.device_secret(device),
        "next": _next_from(request),
    }
    return render(request, "registration/totp_enroll.html", context, status=status)


@otp.otp_exempt
@require_POST
def logout_page(request: HttpRequest) -> HttpResponse:
    if isinstance(request.user, User):
        audit_record(action="auth.logout", actor=request.user, object_type="user", object_id=request.user.pk)
    auth_logout(request)
    messages.info(request, "You are signed out.")
    return redirect("common:login")


# --- Sign-up -------------------------------------------------------------------------------


@otp.otp_exempt
@require_http_methods(["GET", "POST"])
def signup_page(request: HttpRequest) -> HttpResponse:
    """Create an account and a new organisation (provider, trainer or both), then sign in."""
    if request.user.is_authenticated:
        messages.info(request, "You are signed in already. Sign out first to create another account.")
        return redirect(home_url())
    next_url = _next_from(request)
    form = SignupForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            user, org = services.organisation_signup(
                username=data["username"],
                email=data["email"],
                password=data["password"],
                organisation_name=data["organisation_name"],
                is_provider=data["kind"] in ("provider", "both"),
                is_trainer=data["kind"] in ("trainer", "both"),
            )
        except (Invalid, Conflict) as exc:
            add_domain_error(form, exc)
        else:
            auth_login(request, user, backend=MODEL_BACKEND)
            services.login_succeeded(user=user, second_factor=False)
            request.session["org_id"] = org.pk
            messages.success(request, f"Welcome to Sealroom. {org.name} is ready, and you are its admin.")
            return redirect(next_url)
    return render(request, "registration/signup.html", {"form": form, "next": next_url})


# --- Account and passwords -------------------------------------------------------------------


@otp.signed_in
@require_GET
def account_page(request: HttpRequest) -> HttpResponse:
    user = page_user(request)
    context = {"device": otp.confirmed_device(user), "verified": otp.is_verified(user)}
    return render(request, "common/account.html", context)


class PasswordChangePage(PasswordChangeView):
    http_method_names = FORM_METHODS
    template_name = "registration/password_change_form.html"
    success_url = reverse_lazy("common:password_change_done")

    @transaction.atomic
    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        user = form.user
        audit_record(action="auth.password_changed", actor=user, object_type="user", object_id=user.pk)
        return response


class PasswordResetPage(PasswordResetView):
    http_method_names = FORM_METHODS
    template_name = "registration/password_reset_form.html"
    email_template_name = "registration/password_reset_email.txt"
    subject_template_name = "registration/password_reset_subject.txt"
    success_url = reverse_lazy("common:password_reset_done")


class PasswordResetConfirmPage(PasswordResetConfirmView):
    http_method_names = FORM_METHODS
    template_name = "registration/password_reset_confirm.html"
    success_url = reverse_lazy("common:password_reset_complete")

    @transaction.atomic
    def form_valid(self, form: Any) -> HttpResponse:
        response = super().form_valid(form)
        user = form.user
        audit_record(action="auth.password_reset", actor=user, object_type="user", object_id=user.pk)
        return response
