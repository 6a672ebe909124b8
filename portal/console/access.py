"""Who may use the console: platform staff read, operators act."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django import forms
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase

from common import otp
from common.exceptions import Conflict, Invalid, NotFound, NotPermitted
from common.forms import add_domain_error
from common.models import User
from common.pages.helpers import page_user, raise_http

View = Callable[..., HttpResponseBase]
T = TypeVar("T")


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


def form_act(
    form: forms.Form, act: Callable[[], T], again: Callable[[int], HttpResponse]
) -> T | HttpResponse:
    """Run a console action's service call for a bound form; a refusal shows the form again.

    An invalid form or an ``Invalid`` refusal (its pointers beside their fields) is shown again
    as 422, a ``Conflict`` above the form as 409 (``again(status)`` renders the page); a
    ``NotFound`` or ``NotPermitted`` becomes the page's 404 or 403. Otherwise returns what
    ``act`` returned: the caller tells the two apart with ``isinstance(result, HttpResponse)``.
    """
    if not form.is_valid():
        return again(422)
    try:
        return act()
    except Invalid as exc:
        add_domain_error(form, exc)
        return again(422)
    except Conflict as exc:
        form.add_error(None, exc.detail)
        return again(409)
    except (NotFound, NotPermitted) as exc:
        raise_http(exc)
