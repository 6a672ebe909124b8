"""The authorization matrix: docs/permissions.md against every URL pattern.

It fails when a route (or a method a class-based view handles) is missing from
the table, when the table names a route that no longer exists, and when any
role gets a different status than the table says — for the API also through
tokens with and without the required scope.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from django.conf import settings
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from rest_framework.test import APIClient

from common import services
from common.authentication import token_hash
from common.models import ApiToken, Membership, Organisation, Scope, User, WebhookEndpoint
from common.webhooks import webhook_endpoint_create
from custody import services as custody_services
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.helpers import login_with_otp
from tests.marketplace.catalog.world import matrix_catalog, matrix_catalog_body

TABLE = Path(settings.BASE_DIR) / "docs" / "permissions.md"
ROLES = ("anon", "outsider", "viewer", "member", "admin", "operator", "auditor")
MEMBER_ROLES = ("viewer", "member", "admin")
# URL patterns that are not endpoints of ours.
IGNORED_ROUTES: set[str] = set()


@dataclass(frozen=True)
class Row:
    route: str
    method: str
    expected: dict[str, int]
    scope: str

    @property
    def scopes(self) -> list[str]:
        """The scopes of which any one will do (``a/b`` in the table)."""
        return [] if self.scope == "-" else self.scope.split("/")

    @property
    def is_api(self) -> bool:
        return self.route.startswith("api-") and self.route not in ("api-schema", "api-docs")

    def __str__(self) -> str:
        return f"{self.method} {self.route}"


def load_table() -> list[Row]:
    rows = []
    for line in TABLE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 + len(ROLES) or cells[0] in ("route", "") or set(cells[0]) <= {"-"}:
            continue
        route, method, *statuses, scope = cells
        rows.append(Row(route, method.upper(), dict(zip(ROLES, map(int, statuses), strict=True)), scope))
    return rows


def walk_patterns(
    patterns: list[URLPattern | URLResolver], namespace: str = "", prefix: str = ""
) -> Iterator[tuple[str | None, str, Any]]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            ns = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from walk_patterns(pattern.url_patterns, ns, prefix + str(pattern.pattern))
        else:
            name = f"{namespace}{pattern.name}" if pattern.name else None
            yield name, prefix + str(pattern.pattern), pattern.callback


def handled_methods(callback: Any) -> set[str] | None:
    """The methods a class-based view handles (None for function views)."""
    view_class = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
    if view_class is None:
        return None
    return {
        m.upper()
        for m in view_class.http_method_names
        if m not in ("options", "head") and hasattr(view_class, m)
    }


ROWS = load_table()


class TestTableCoversEveryRoute:
    def test_every_url_pattern_has_a_name(self):
        unnamed = [path for name, path, _ in walk_patterns(get_resolver().url_patterns) if name is None]
        assert unnamed == [], "name these URL patterns so the matrix can list them"

    def test_every_route_and_method_is_in_the_table(self):
        listed = {(r.route, r.method) for r in ROWS}
        missing = []
        for name, path, callback in walk_patterns(get_resolver().url_patterns):
            if name is None or name in IGNORED_ROUTES:
                continue
            methods = handled_methods(callback) or {"GET"}
            if name == "api-schema" or name == "api-docs":
                methods = {"GET"}
            missing += [f"{m} {name} ({path})" for m in sorted(methods) if (name, m) not in listed]
        assert missing == [], "add rows to docs/permissions.md for: " + ", ".join(missing)

    def test_the_table_names_only_existing_routes(self):
        names = {name for name, _, _ in walk_patterns(get_resolver().url_patterns)}
        stale = sorted({r.route for r in ROWS} - names)
        assert stale == []


# --- the world each case runs in ---------------------------------------------------


@dataclass
class World:
    acme: Organisation
    users: dict[str, User]
    target_membership_id: int
    target_token_id: int
    invitation_token: str
    other_provider_id: int
    dataset_id: int
    version_id: int
    contribution_id: int

    def url(self, row: Row) -> str:
        pattern = next((p for n, p, _ in walk_patterns(get_resolver().url_patterns) if n == row.route), None)
        assert pattern is not None, f"unknown route {row.route}"
        kwargs = {}
        for arg in re.findall(r"<(?:\w+:)?(\w+)>", pattern):
            kwargs[arg] = self.url_argument(arg)
        return reverse(row.route, kwargs=kwargs)

    def url_argument(self, arg: str) -> Any:
        """The argument's value: a public id for ``<org:org_id>`` and the like, an integer key otherwise.

        ``legacy_<x>_id`` (an old integer page URL) takes the integer key of what ``<x>_id`` names.
        """
        if arg.startswith("legacy_"):
            return self.pk_argument(arg.removeprefix("legacy_"))
        value = self.pk_argument(arg)
        model = PUBLIC_ARGUMENTS.get(arg)
        return model.objects.get(pk=value).public_id if model is not None else value

    def pk_argument(self, arg: str) -> Any:
        if arg == "webhook_id":
            return _matrix_webhook(self.acme)
        if arg in ("job_id", "base_id"):
            return _matrix_training(self.acme)[arg]
        if arg in ("listing_id", "offer_id", "allocation_id"):
            return matrix_catalog(self.acme)[arg]
        if arg == "withdrawal_id":
            return _matrix_withdrawal(self.acme, self.contribution_id)
        known = {
            "org_id": self.acme.pk,
            "membership_id": self.target_membership_id,
            "token_id": self.target_token_id,
            "token": self.invitation_token,
            # Password-reset confirmation: any uid (base64 of "1"); the token is checked inside.
            "uidb64": "MQ",
            "dataset_id": self.dataset_id,
            "version_id": self.version_id,
            "contribution_id": self.contribution_id,
            "number": 1,
            # Orders and licenses (by reference): Acme has none, so whoever gets past the checks gets 404.
            "order_ref": "ord_matrix",
            "license_ref": "lic_matrix",
            "offer_id": 1,
            # A model's inference call (issue 16): Acme has none, so whoever gets past the checks gets 404.
            "call_id": "inf_0000000000000000",
        }
        if arg not in known:
            raise AssertionError(f"the matrix does not know URL argument <{arg}>: teach World.url_argument")
        return known[arg]

    def body(self, row: Row) -> dict[str, Any] | bytes:
        if not row.is_api:
            return {}
        if row.route == "api-contribution-part":
            return b'{"text": "a record"}\n'
        if row.route.startswith("api-catalog-"):
            return matrix_catalog_body(self.acme, row.route, row.method)
        bodies: dict[tuple[str, str], dict[str, Any]] = {
            ("api-member-detail", "PATCH"): {"role": "member"},
            ("api-notifications", "POST"): {},
            ("api-webhooks", "POST"): {"url": "http://127.0.0.1:9/matrix", "event_kinds": ["order.*"]},
            ("api-webhook-detail", "PATCH"): {"active": False},
            ("api-invitations", "POST"): {"email": "new-person@example.test", "role": "viewer"},
            ("api-tokens", "POST"): {
                "name": "matrix",
                "organisation_id": self.acme.public_id,
                "scopes": ["read"],
            },
            ("api-datasets", "POST"): {"name": "Matrix set"},
            ("api-dataset-versions", "POST"): {},
            ("api-version-contributors", "POST"): {
                "organisation_id": Organisation.objects.get(pk=self.other_provider_id).public_id
            },
            ("api-contributions", "POST"): {"filename": "more.jsonl"},
            ("api-version-findings", "POST"): {"finding_ids": ["fnd_0000000000000000"], "drop": True},
            ("api-version-takedown", "POST"): {"reason": "matrix"},
            ("api-contribution-withdraw", "POST"): {"reason": "matrix"},
            ("api-ops-version-key-disable", "POST"): {"reason": "matrix"},
            ("api-ops-version-key-destroy", "POST"): {"confirm": "matrix"},
            # A well-formed offer id that names no offer.
            ("api-orders", "POST"): {"offer_id": "ofr_0000000000000000"},
            ("api-order-reject", "POST"): {"reason": "matrix"},
            ("api-ops-license-refund", "POST"): {"reason": "matrix"},
            ("api-payouts", "POST"): {"amount": "1.00", "currency": "EUR"},
            ("api-ops-topups", "POST"): {
                "organisation_id": self.acme.public_id,
                "amount": "1.00",
                "currency": "EUR",
                "external_ref": "matrix",
            },
        }
        return bodies.get((row.route, row.method), {})


def _public_arguments() -> dict[str, Any]:
    from custody.models import Contribution, ContributionWithdrawal, Dataset, DatasetVersion
    from marketplace.models import Listing, Offer, RightsAllocation
    from training.models import BaseModel, TrainingJob

    return {
        "org_id": Organisation,
        "membership_id": Membership,
        "contribution_id": Contribution,
        "allocation_id": RightsAllocation,
        "webhook_id": WebhookEndpoint,
        "token_id": ApiToken,
        "dataset_id": Dataset,
        "version_id": DatasetVersion,
        "listing_id": Listing,
        "offer_id": Offer,
        "base_id": BaseModel,
        "job_id": TrainingJob,
        "withdrawal_id": ContributionWithdrawal,
    }


# URL arguments that take a public id (``<dsv:version_id>``): the model whose ``public_id`` to send.
PUBLIC_ARGUMENTS = _public_arguments()


def _matrix_webhook(acme: Organisation) -> int:
    """Acme's webhook endpoint (created on first use, as Acme's admin would)."""
    endpoint = WebhookEndpoint.objects.filter(organisation=acme).first()
    if endpoint is None:
        admin = User.objects.get(username="alice")
        endpoint, _secret = webhook_endpoint_create(
            actor=admin, organisation=acme, url="http://127.0.0.1:9/matrix"
        )
    return endpoint.pk


def _matrix_training(acme: Organisation) -> dict[str, int]:
    """A queued training job of Acme's (rows made directly: the matrix needs ids, not a run)."""
    from custody.models import DatasetVersion, Grant, GrantPurpose
    from training.models import BaseModel, TrainingJob

    base = BaseModel.objects.get(name="gpt2-tiny", owner=None)
    job = TrainingJob.objects.filter(organisation=acme).first()
    if job is None:
        grant = Grant.objects.create(
            version=DatasetVersion.objects.filter(dataset__owner=acme).earliest("pk"),
            licensee=acme,
            purpose=GrantPurpose.LICENSE,
            external_ref="matrix-training",
        )
        job = TrainingJob.objects.create(organisation=acme, grant=grant, template="causal_lm", base=base)
    return {"job_id": job.pk, "base_id": base.pk}


def _matrix_withdrawal(acme: Organisation, contribution_id: int) -> int:
    """A withdrawal of Acme's contribution, still re-sealing (a row made directly: the matrix needs an id)."""
    from custody.models import Contribution, ContributionWithdrawal

    contribution = Contribution.objects.get(pk=contribution_id)
    withdrawal, _ = ContributionWithdrawal.objects.get_or_create(
        contribution=contribution,
        defaults={
            "from_version_id": contribution.version_id,
            "organisation": acme,
            "requested_as": "contributor",
            "reason": "matrix",
        },
    )
    return withdrawal.pk


def _user(**fields: Any) -> User:
    return cast(User, UserFactory(**fields))


@pytest.fixture
def world(db) -> World:
    acme = cast(Organisation, OrganisationFactory(name="Acme Corpora", is_provider=True))
    OrganisationFactory(name="Bolt Models", is_provider=False, is_trainer=True)
    users = {
        "admin": _user(username="alice"),
        "member": _user(username="mike"),
        "viewer": _user(username="vera"),
        "outsider": _user(username="carol"),
        "operator": _user(username="ops", platform_role="operator"),
        "auditor": _user(username="audrey", platform_role="auditor"),
    }
    for role in MEMBER_ROLES:
        MembershipFactory(user=users[role], organisation=acme, role=role)
    # The outsider belongs to another provider, so Acme's objects are simply not found.
    cora = cast(Organisation, OrganisationFactory(name="Cora Texts", is_provider=True))
    MembershipFactory(user=users["outsider"], organisation=cora, role="admin")
    dataset = custody_services.dataset_create(actor=users["admin"], organisation=acme, name="Tickets")
    version = custody_services.version_create(actor=users["admin"], dataset=dataset)
    contribution = custody_services.contribution_start(
        actor=users["admin"], organisation=acme, version=version, filename="tickets.jsonl"
    )
    target = cast(
        Membership, MembershipFactory(user=_user(username="tess"), organisation=acme, role="viewer")
    )
    token, _ = services.api_token_create(user=target.user, organisation=acme, name="t", scopes=["read"])
    _, invitation = services.invitation_create(
        actor=users["admin"], organisation=acme, email="invitee@example.test", role="viewer"
    )
    return World(
        acme, users, target.pk, token.pk, invitation, cora.pk, dataset.pk, version.pk, contribution.pk
    )


def session_client(world: World, role: str, api: bool) -> Client:
    client: Client = APIClient() if api else Client()
    if role == "anon":
        return client
    user = world.users[role]
    if user.is_operator:
        login_with_otp(client, user)
    else:
        client.force_login(user)
    return client


def token_client(world: World, role: str, scopes: list[str]) -> APIClient:
    raw = f"srk_{secrets.token_hex(4)}_{secrets.token_urlsafe(24)}"
    ApiToken.objects.create(
        user=world.users[role],
        organisation=world.acme,
        name="matrix",
        prefix=raw[4:12],
        secret_hash=token_hash(raw),
        scopes=scopes,
        expires_at=timezone.now() + timedelta(days=1),
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def send(client: Client, row: Row, world: World) -> int:
    method = getattr(client, row.method.lower())
    url = world.url(row)
    body = world.body(row)
    if isinstance(body, bytes):
        response = method(url, body, content_type="application/octet-stream")
    elif row.is_api:
        response = method(url, body, format="json") if row.method != "GET" else method(url)
    else:
        response = method(url, body) if row.method != "GET" else method(url)
    return int(response.status_code)


CASES = [pytest.param(row, role, id=f"{row.method}-{row.route}-{role}") for row in ROWS for role in ROLES]


@pytest.mark.parametrize(("row", "role"), CASES)
def test_role_gets_the_status_the_table_says(world, row: Row, role: str):
    status = send(session_client(world, role, row.is_api), row, world)
    assert status == row.expected[role], f"{row} as {role}"


SCOPED = [
    pytest.param(row, role, id=f"{row.method}-{row.route}-{role}")
    for row in ROWS
    for role in MEMBER_ROLES
    if row.is_api and row.scope != "-" and row.expected["anon"] == 401
]


@pytest.mark.parametrize(("row", "role"), SCOPED)
def test_a_token_with_the_scope_gets_the_same_status(world, row: Row, role: str):
    # Each scope that will do, with read (a token with only admin could not mint even a read token).
    for scope in row.scopes:
        status = send(token_client(world, role, sorted({scope, Scope.READ})), row, world)
        assert status == row.expected[role], f"{row} as {role} with scope {scope}"


@pytest.mark.parametrize(("row", "role"), SCOPED)
def test_a_token_without_the_scope_is_refused(world, row: Row, role: str):
    others = [s for s in Scope.values if s not in row.scopes]
    status = send(token_client(world, role, others), row, world)
    assert status == 403, f"{row} as {role} without scope {row.scope}"


CHANGING = [
    pytest.param(row, role, id=f"{row.method}-{row.route}-{role}")
    for row in ROWS
    for role in MEMBER_ROLES
    if row.is_api and row.method not in ("GET", "HEAD", "OPTIONS") and row.expected["anon"] == 401
]


def test_every_changing_api_route_is_checked_with_a_read_token():
    assert len(CHANGING) >= 3 * 40, "the table lost its changing API rows"


@pytest.mark.parametrize(("row", "role"), CHANGING)
def test_a_read_only_token_is_refused_on_every_changing_method(world, row: Row, role: str):
    # "read" means read: whatever the role, and whatever the route declares.
    status = send(token_client(world, role, [Scope.READ]), row, world)
    assert status == 403, f"{row} as {role} with only the read scope"
