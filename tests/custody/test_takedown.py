"""Takedown, as far as custody goes: withdraw the version, revoke its grants, ring the doorbell."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from common.audit import audit_integrate
from common.models import AuditEvent
from custody import services, signals
from custody.exceptions import Conflict, Invalid, NotFound, NotPermitted
from custody.keys import kek_provider
from custody.models import Grant, GrantState, VersionState
from custody.services.ingest import BATCH_RECORDS
from tests.custody.conftest import drain, jsonl
from tests.grants import grant_for_test
from tests.helpers import login_with_otp


@pytest.fixture
def received():
    """Every ``version_taken_down`` and ``grant_revoked`` ring, in order."""
    rings: list[tuple[str, dict]] = []

    def on_takedown(sender, **kwargs):
        rings.append(("version_taken_down", {k: kwargs[k] for k in ("version_id", "reason")}))

    def on_revoke(sender, **kwargs):
        rings.append(("grant_revoked", {"grant_id": kwargs["grant_id"]}))

    signals.version_taken_down.connect(on_takedown)
    signals.grant_revoked.connect(on_revoke)
    yield rings
    signals.version_taken_down.disconnect(on_takedown)
    signals.grant_revoked.disconnect(on_revoke)


def active_grants(version) -> list[int]:
    return list(
        Grant.objects.filter(version=version, state=GrantState.ACTIVE)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


class TestVersionTakedown:
    def test_revokes_every_active_grant_and_stops_an_open_stream_at_the_next_batch(
        self, alice, dataset, upload, bolt, acme
    ):
        version = services.version_create(actor=alice, dataset=dataset)
        upload(version, jsonl([{"text": f"line {i}"} for i in range(BATCH_RECORDS * 2)]))
        services.version_process(actor=alice, version=version)
        drain()
        services.version_seal(actor=alice, version=version)
        training, other = grant_for_test(version, bolt), grant_for_test(version, acme)
        stream = iter(services.grant_stream_open(grant=training, consumer_ref="job-1", purpose="license"))
        assert len(next(stream)) == BATCH_RECORDS

        services.version_takedown(actor=alice, version=version, reason="contract ended")

        with pytest.raises(Conflict) as caught:
            next(stream)
        assert caught.value.code == "custody.grant_revoked"
        for grant in (training, other):
            grant.refresh_from_db()
            assert grant.state == GrantState.REVOKED
            assert grant.revoke_reason == "Version taken down: contract ended"
        version.refresh_from_db()
        assert version.state == VersionState.TAKEN_DOWN and version.failure_reason == "contract ended"

    def test_rings_the_doorbells_only_after_commit(
        self, sealed_version, alice, bolt, received, django_capture_on_commit_callbacks
    ):
        grant_for_test(sealed_version, bolt)
        # The platform's own grants on the version (ingest, ...) are revoked with the license.
        active = active_grants(sealed_version)
        assert Grant.objects.filter(pk__in=active, licensee=None).exists() and len(active) >= 2
        with django_capture_on_commit_callbacks(execute=False) as pending:
            services.version_takedown(actor=alice, version=sealed_version, reason="contract ended")
        assert received == []
        for callback in pending:
            callback()
        assert received == [
            *(("grant_revoked", {"grant_id": pk}) for pk in active),
            ("version_taken_down", {"version_id": sealed_version.pk, "reason": "contract ended"}),
        ]

    def test_audits_the_takedown_and_each_revocation(self, sealed_version, alice, bolt):
        grant = grant_for_test(sealed_version, bolt)
        active = active_grants(sealed_version)
        services.version_takedown(actor=alice, version=sealed_version, reason="contract ended")
        audit_integrate()  # what the commit would do: the events in seq order
        event = AuditEvent.objects.get(action="custody.version_takedown")
        assert event.actor_id == alice.pk and event.organisation_id == sealed_version.dataset.owner_id
        assert event.details == {
            "reason": "contract ended",
            "previous_state": "sealed",
            "requested_by": "provider",
            "grants": active,
        }
        revoked = AuditEvent.objects.filter(action="custody.grant_revoke").order_by("seq")
        assert [e.object_id for e in revoked] == [str(pk) for pk in active]
        start = event.seq
        assert start is not None
        assert grant.pk in active and all(e.seq is not None and e.seq > start for e in revoked)

    def test_no_new_grant_can_be_issued_afterwards(self, sealed_version, alice, bolt):
        services.version_takedown(actor=alice, version=sealed_version, reason="contract ended")
        with pytest.raises(Conflict) as caught:
            grant_for_test(sealed_version, bolt)
        assert caught.value.code == "custody.version_not_sealed"

    def test_leaves_the_key_alone(self, sealed_version, alice):
        services.version_takedown(actor=alice, version=sealed_version, reason="contract ended")
        assert kek_provider().kek_state(name=sealed_version.key_name) == "active"

    def test_an_operator_may_take_down_any_version(self, sealed_version, ops):
        services.version_takedown(actor=ops, version=sealed_version, reason="court order")
        event = AuditEvent.objects.get(action="custody.version_takedown")
        assert event.details["requested_by"] == "operator" and event.actor_id == ops.pk

    def test_only_an_admin_of_the_owner_may_ask(self, sealed_version, acme_member, carol, audrey):
        with pytest.raises(NotPermitted):
            services.version_takedown(actor=acme_member, version=sealed_version, reason="x")
        for outsider in (carol, audrey):
            with pytest.raises(NotFound):
                services.version_takedown(actor=outsider, version=sealed_version, reason="x")
        sealed_version.refresh_from_db()
        assert sealed_version.state == VersionState.SEALED

    def test_needs_a_reason(self, sealed_version, alice):
        with pytest.raises(Invalid) as caught:
            services.version_takedown(actor=alice, version=sealed_version, reason="")
        assert caught.value.code == "custody.reason_required"

    def test_repeating_it_changes_nothing(
        self, sealed_version, alice, received, django_capture_on_commit_callbacks
    ):
        services.version_takedown(actor=alice, version=sealed_version, reason="first")
        with django_capture_on_commit_callbacks(execute=True):
            again = services.version_takedown(actor=alice, version=sealed_version, reason="second")
        assert again.failure_reason == "first"
        assert AuditEvent.objects.filter(action="custody.version_takedown").count() == 1
        assert received == []

    def test_refuses_a_rejected_version(self, version, alice, upload):
        services.version_reject(actor=alice, version=version, reason="changed my mind")
        with pytest.raises(Conflict) as caught:
            services.version_takedown(actor=alice, version=version, reason="x")
        assert caught.value.code == "custody.cannot_take_down"

    def test_shreds_the_quarantine_copy_of_a_version_in_review(self, version, alice, upload):
        contribution = upload(version, jsonl([{"text": "a record in review"}]))
        services.version_process(actor=alice, version=version)
        drain()
        services.version_takedown(actor=alice, version=version, reason="uploaded the wrong file")
        contribution.refresh_from_db()
        assert contribution.quarantine_shredded_at is not None
        assert kek_provider().kek_state(name=contribution.quarantine_key_name) == "destroyed"


class TestVersionTakedownCommand:
    def test_takes_a_version_down_as_the_command_line(self, sealed_version, bolt):
        grant_for_test(sealed_version, bolt)
        active = active_grants(sealed_version)
        out = StringIO()
        call_command("version_takedown", sealed_version.public_id, "--reason", "court order", stdout=out)
        assert f"is taken_down; {len(active)} grants revoked" in out.getvalue()
        event = AuditEvent.objects.get(action="custody.version_takedown")
        assert event.actor_id is None and event.actor_name.startswith("command line")

    def test_an_unknown_version_is_an_error(self, db):
        with pytest.raises(CommandError, match="No dataset version dsv_0000000000000000"):
            call_command("version_takedown", "dsv_0000000000000000", "--reason", "x", stdout=StringIO())


class TestVersionTakedownApi:
    def test_the_providers_admin_takes_it_down_with_a_token(
        self, sealed_version, alice, acme, bolt, token_for
    ):
        grant = grant_for_test(sealed_version, bolt)
        client = token_for(alice, acme, ["provide"])
        response = client.post(
            f"/api/v1/versions/{sealed_version.public_id}/takedown",
            {"reason": "contract ended"},
            format="json",
        )
        assert response.status_code == 200 and response.json()["state"] == "taken_down"
        assert Grant.objects.get(pk=grant.pk).state == GrantState.REVOKED

    def test_an_operator_takes_it_down_from_a_session(self, sealed_version, ops):
        client = APIClient()
        login_with_otp(client, ops)
        response = client.post(
            f"/api/v1/versions/{sealed_version.public_id}/takedown", {"reason": "court order"}, format="json"
        )
        assert response.status_code == 200 and response.json()["state"] == "taken_down"

    def test_a_member_is_refused_with_problem_json(self, sealed_version, acme_member, acme, token_for):
        client = token_for(acme_member, acme, ["provide"])
        response = client.post(
            f"/api/v1/versions/{sealed_version.public_id}/takedown", {"reason": "x"}, format="json"
        )
        assert response.status_code == 403 and response["Content-Type"] == "application/problem+json"
        assert response.json()["code"] == "common.role_insufficient"

    def test_a_missing_reason_names_the_field(self, sealed_version, alice, acme, token_for):
        client = token_for(alice, acme, ["provide"])
        response = client.post(f"/api/v1/versions/{sealed_version.public_id}/takedown", {}, format="json")
        assert response.status_code == 422
        assert any(e["pointer"] == "/reason" for e in response.json()["errors"])
        sealed_version.refresh_from_db()
        assert sealed_version.state == VersionState.SEALED
