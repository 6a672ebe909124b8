"""Demo data for common: the cast of organisations and people, signed up through the services.

``seed`` is idempotent: whoever exists already is left as is, so running it
again changes nothing (and writes no audit events). The demo password is
fixed and public: the demo is for one machine, never for production data.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.core.management.base import OutputWrapper
from django.db import transaction

from common import otp, services
from common.audit import audit_record
from common.models import Organisation, PlatformRole, User

DEMO_PASSWORD = "sealroom-demo-pass"  # noqa: S105 - printed for the demo on purpose
EMAIL_DOMAIN = "demo.sealroom.test"


@dataclass(frozen=True)
class DemoOrganisation:
    admin: str
    name: str
    is_provider: bool
    is_trainer: bool


@dataclass(frozen=True)
class DemoPerson:
    username: str
    platform_role: str
    description: str


ORGANISATIONS = (
    DemoOrganisation(admin="alice", name="Acme Corpora", is_provider=True, is_trainer=False),
    DemoOrganisation(admin="bob", name="Bolt Models", is_provider=False, is_trainer=True),
)
PEOPLE = (
    DemoPerson("carol", PlatformRole.NONE, "no organisation"),
    DemoPerson("ops", PlatformRole.OPERATOR, "platform operator, signs in with TOTP"),
    DemoPerson("audrey", PlatformRole.AUDITOR, "platform auditor, read-only"),
)


def _email(username: str) -> str:
    return f"{username}@{EMAIL_DOMAIN}"


def _seed_organisation(demo: DemoOrganisation, stdout: OutputWrapper) -> None:
    if (
        User.objects.filter(username=demo.admin).exists()
        or Organisation.objects.filter(name=demo.name).exists()
    ):
        stdout.write(f"  {demo.name}: exists")
        return
    services.organisation_signup(
        username=demo.admin,
        email=_email(demo.admin),
        password=DEMO_PASSWORD,
        organisation_name=demo.name,
        is_provider=demo.is_provider,
        is_trainer=demo.is_trainer,
    )
    stdout.write(f"  {demo.name}: created, {demo.admin} is its admin")


def _seed_person(demo: DemoPerson, stdout: OutputWrapper) -> None:
    if User.objects.filter(username=demo.username).exists():
        stdout.write(f"  {demo.username}: exists")
        return
    # No sign-up service creates a person without an organisation or with a
    # platform role (staff are made by hand), so this step audits it itself.
    user = User.objects.create_user(
        username=demo.username,
        email=_email(demo.username),
        password=DEMO_PASSWORD,
        platform_role=demo.platform_role,
    )
    audit_record(
        action="account.create",
        actor_name="demo_seed",
        object_type="user",
        object_id=user.pk,
        details={"username": user.username, "platform_role": demo.platform_role, "source": "demo_seed"},
    )
    stdout.write(f"  {demo.username}: created ({demo.description})")


def _seed_operator_device(stdout: OutputWrapper) -> None:
    operator = User.objects.get(username="ops")
    if otp.confirmed_device(operator) is not None:
        return
    otp.totp_device_confirm(user=operator, device=otp.enrollment_device(operator))
    stdout.write("  ops: TOTP device enrolled")


def seed(stdout: OutputWrapper) -> None:
    """Create the demo organisations and people that do not exist yet."""
    with transaction.atomic():
        for organisation in ORGANISATIONS:
            _seed_organisation(organisation, stdout)
        for person in PEOPLE:
            _seed_person(person, stdout)
        _seed_operator_device(stdout)


def demo_logins() -> list[str]:
    """Lines that tell a person how to sign in as each demo user (the operator's TOTP secret too)."""
    lines = [f"Demo logins (password for all: {DEMO_PASSWORD})"]
    for organisation in ORGANISATIONS:
        lines.append(f"  {organisation.admin:<7} admin of {organisation.name}")
    for person in PEOPLE:
        lines.append(f"  {person.username:<7} {person.description}")
    operator = User.objects.filter(username="ops").first()
    device = otp.confirmed_device(operator) if operator is not None else None
    if device is not None:
        lines.append("  The operator's authenticator (add it to any TOTP app):")
        lines.append(f"    secret  {otp.device_secret(device)}")
        lines.append(f"    URI     {device.config_url}")
    return lines
