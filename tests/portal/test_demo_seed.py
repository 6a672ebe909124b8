"""``manage.py demo_seed``: the demo cast, made through the services, and nothing more on a second run."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django_otp.plugins.otp_totp.models import TOTPDevice

from common.demo import DEMO_PASSWORD
from common.models import AuditEvent, Membership, Organisation, PlatformRole, Role, User


def seed() -> str:
    out = StringIO()
    call_command("demo_seed", stdout=out)
    return out.getvalue()


def snapshot() -> dict[str, int]:
    return {
        "users": User.objects.count(),
        "organisations": Organisation.objects.count(),
        "memberships": Membership.objects.count(),
        "devices": TOTPDevice.objects.count(),
        "audit_events": AuditEvent.objects.count(),
    }


@pytest.mark.django_db
class TestDemoSeed:
    def test_creates_the_cast(self):
        seed()
        acme = Organisation.objects.get(name="Acme Corpora")
        bolt = Organisation.objects.get(name="Bolt Models")
        assert (acme.is_provider, acme.is_trainer) == (True, False)
        assert (bolt.is_provider, bolt.is_trainer) == (False, True)
        assert Membership.objects.get(user__username="alice").organisation == acme
        assert Membership.objects.get(user__username="alice").role == Role.ADMIN
        assert Membership.objects.get(user__username="bob").organisation == bolt
        assert not Membership.objects.filter(user__username="carol").exists()
        assert User.objects.get(username="ops").platform_role == PlatformRole.OPERATOR
        assert User.objects.get(username="audrey").platform_role == PlatformRole.AUDITOR
        assert TOTPDevice.objects.get(user__username="ops").confirmed

    def test_every_demo_user_signs_in_with_the_printed_password(self):
        output = seed()
        assert f"password for all: {DEMO_PASSWORD}" in output
        for username in ("alice", "bob", "carol", "ops", "audrey"):
            assert User.objects.get(username=username).check_password(DEMO_PASSWORD), username
            assert f"  {username}" in output

    def test_prints_the_operators_totp_uri_and_secret(self):
        output = seed()
        device = TOTPDevice.objects.get(user__username="ops")
        assert device.config_url in output
        assert "otpauth://totp/" in output

    def test_is_audited(self):
        seed()
        actions = list(AuditEvent.objects.values_list("action", flat=True))
        assert actions.count("account.signup") == 2
        assert actions.count("account.create") == 3
        assert actions.count("auth.totp_enrolled") == 1

    def test_running_again_changes_nothing(self):
        seed()
        before = snapshot()
        output = seed()
        assert snapshot() == before
        assert "Acme Corpora: exists" in output
        assert "created" not in output
