"""Who may use the console: platform staff read, operators act."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from common import otp
from common.models import User
from common.pages.helpers import page_user

View = Callable[..., HttpResponseBase]


def staff_user(request: HttpRequest) -> User:
    """The signed-in platform operator or auditor. :raises PermissionDenied: anyone else."""
    user = page_user(request)
    if not user.is_platform_staff:
        raise PermissionDenied("The console is for platform operators and auditors.")
    return user


def operator_user(request: HttpRequest) -> User:
    """The signed-in platform operator. :raises PermissionDenied: anyone else (auditors read only)."""
    user = staff_user(request)
    if not user.is_operator:
        raise PermissionDenied("Auditors have read-only access: only operators act in the console.")
    return user


def console_page(view: View) -> View:
    """Signed in (operators with TOTP), platform staff; unsafe methods for operators only."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.method in ("GET", "HEAD"):
            staff_user(request)
        else:
            operator_user(request)
        return view(request, *args, **kwargs)

    guarded: View = otp.signed_in(wrapped)
    return guarded
