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


@pytest.mark.django_db
class TestDemoSeedCustody:
    def test_seals_the_demo_dataset_through_the_pipeline_once(self):
        from common.audit_verify import audit_verify
        from custody.demo import DATASET_NAME
        from custody.models import DatasetVersion, VersionState

        output = seed()
        version = DatasetVersion.objects.get(dataset__name=DATASET_NAME)
        assert version.state == VersionState.SEALED
        dropped = version.findings.filter(drop=True).count()
        assert dropped >= 3  # the three copies at the end, at least
        assert version.records == 243 - dropped
        # The sealed report counts the records kept: the dropped ones' e-mails are gone from it.
        assert version.report.counts["entities"]["EMAIL_ADDRESS"] >= 240 - dropped
        assert "sealed v1" in output
        before = snapshot()
        assert "exists" in seed()
        assert snapshot() == before
        assert DatasetVersion.objects.count() == 1
        assert audit_verify().ok
