"""Helpers shared by test modules (not fixtures)."""

from __future__ import annotations

from django.test import Client
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice

from common.models import User


def totp_device_for(user: User) -> TOTPDevice:
    """The user's confirmed TOTP device, created if missing."""
    device = TOTPDevice.objects.filter(user=user, confirmed=True).first()
    if device is None:
        device = TOTPDevice.objects.create(user=user, name="test authenticator", confirmed=True)
    return device


def login_with_otp(client: Client, user: User) -> None:
    """Sign ``user`` in on ``client`` with a verified second factor (as after a TOTP step)."""
    device = totp_device_for(user)
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()


def staff_client(user: User) -> Client:
    """A client signed in as platform staff: an operator with a second factor, an auditor without."""
    client = Client()
    if user.is_operator:
        login_with_otp(client, user)
    else:
        client.force_login(user)
    return client
