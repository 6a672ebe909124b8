"""Shared fixtures: the cast and API clients.

The cast: ``alice`` (admin of the provider Acme Corpora), ``bob`` (admin of the
trainer Bolt Models), ``carol`` (no access to either), ``ops`` (operator, with
TOTP), ``audrey`` (auditor). ``acme_member`` and ``acme_viewer`` fill Acme's
other roles.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.apps import apps as django_apps
from django.conf import settings
from django.core.cache import cache
from django.db import connection
from rest_framework.test import APIClient

from common import services
from common.audit import audit_sequencer_resume, audit_sequencer_stop
from common.models import Organisation, PlatformRole, User
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory

TEST_OUTPUT = Path(settings.BASE_DIR) / "var" / "test-output"

# A real S3/KMS API server (moto's) on loopback, for tests marked ``s3``.
pytest_plugins = ["tests.s3_server"]


def pytest_configure(config: pytest.Config) -> None:
    TEST_OUTPUT.mkdir(parents=True, exist_ok=True)


@pytest.fixture(autouse=True)
def _fast_passwords_and_isolated_dirs(settings, tmp_path: Path) -> Iterator[None]:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    settings.BLOB_DIR = tmp_path / "blobs"
    settings.KEY_DIR = tmp_path / "keys"
    settings.AUDIT_EXPORT_DIR = tmp_path / "audit-export"
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    # Throttle counters are keyed by token id, and ids repeat after a rollback.
    cache.clear()
    yield


def is_postgres() -> bool:
    return settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


DB_FIXTURES = {"db", "transactional_db", "live_server", "django_db_reset_sequences"}


@pytest.fixture(autouse=True)
def _builtin_bases_present(request: pytest.FixtureRequest, django_db_blocker) -> None:
    """Seed the built-in base models again when a transactional test's flush removed them.

    Django empties every table after a transactional (live-server, worker) test,
    rows that data migrations seeded included; later tests expect them as a
    migrated database has them.
    """
    if not (DB_FIXTURES & set(request.fixturenames) or request.node.get_closest_marker("django_db")):
        return
    from training.models import BaseModel

    with django_db_blocker.unblock():
        if not BaseModel.objects.filter(owner=None, kind="builtin").exists():
            migration = importlib.import_module("training.migrations.0002_seed_builtin_bases")
            migration.seed(django_apps, None)


APPEND_ONLY_TABLES = ("marketplace_posting", "marketplace_ledgertransaction", "common_auditevent")


@pytest.fixture(autouse=True)
def _audit_log_emptied_before_flush(request: pytest.FixtureRequest) -> Iterator[None]:
    """Postgres refuses to TRUNCATE a non-empty audit log: empty it as the owner first.

    Transactional tests (live server, real worker) commit audit events, and
    Django empties tables with TRUNCATE after them; the append-only trigger
    would refuse. The owner may bypass triggers with session_replication_role.
    """
    transactional = is_postgres() and bool({"transactional_db", "live_server"} & set(request.fixturenames))
    if transactional:
        request.getfixturevalue("transactional_db")  # set up first, so this tears down before its flush
    yield
    if transactional:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")
            try:
                # Append-only tables: the audit log and the ledger.
                for table in APPEND_ONLY_TABLES:
                    cursor.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names
            finally:
                cursor.execute("SET session_replication_role = DEFAULT")


@pytest.fixture(autouse=True)
def _audit_sequencer_contained(request: pytest.FixtureRequest) -> Iterator[None]:
    """No round of this process's audit sequencer thread outlives the test that started it.

    Only a transactional test commits, so only there may the thread run; it is
    stopped at the end (after its round in flight) and before the flush. In any
    other test it is paused: a poke (a captured on-commit callback) would have it
    integrate, or create the chain head, outside the test's transaction, and
    commit that into a later test.
    """
    committing = bool({"transactional_db", "live_server"} & set(request.fixturenames))
    if committing:
        request.getfixturevalue("transactional_db")  # set up first, so this tears down before its flush
    marker = request.node.get_closest_marker("django_db")
    transactional = committing or bool(marker and marker.kwargs.get("transaction"))
    audit_sequencer_stop(pause=not transactional)
    try:
        yield
    finally:
        audit_sequencer_stop()
        audit_sequencer_resume()


@pytest.fixture
def acme(db):
    return OrganisationFactory(name="Acme Corpora", is_provider=True, is_trainer=False)


@pytest.fixture
def bolt(db):
    return OrganisationFactory(name="Bolt Models", is_provider=False, is_trainer=True)


@pytest.fixture
def alice(acme):
    user = UserFactory(username="alice")
    MembershipFactory(user=user, organisation=acme, role="admin")
    return user


@pytest.fixture
def acme_member(acme):
    user = UserFactory(username="mike")
    MembershipFactory(user=user, organisation=acme, role="member")
    return user


@pytest.fixture
def acme_viewer(acme):
    user = UserFactory(username="vera")
    MembershipFactory(user=user, organisation=acme, role="viewer")
    return user


@pytest.fixture
def bob(bolt):
    user = UserFactory(username="bob")
    MembershipFactory(user=user, organisation=bolt, role="admin")
    return user


@pytest.fixture
def carol(db):
    return UserFactory(username="carol")


@pytest.fixture
def ops(db):
    return UserFactory(username="ops", platform_role=PlatformRole.OPERATOR)


@pytest.fixture
def audrey(db):
    return UserFactory(username="audrey", platform_role=PlatformRole.AUDITOR)


@pytest.fixture
def api() -> APIClient:
    return APIClient()


def make_token(user: User, organisation: Organisation, scopes: list[str] | None = None) -> str:
    _token, raw = services.api_token_create(
        user=user, organisation=organisation, name="test", scopes=scopes or ["read"]
    )
    return raw


@pytest.fixture
def token_for():
    """``token_for(user, org, scopes)`` -> an APIClient authenticated with a fresh token."""

    def _make(user: User, organisation: Organisation, scopes: list[str] | None = None) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(user, organisation, scopes)}")
        return client

    return _make


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if is_postgres():
        return
    skip = pytest.mark.skip(reason="needs Postgres: set DATABASE_URL=postgres://... (running on SQLite)")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)
