"""Organisations and memberships: sign-up, invitations, roles, and their audit trail."""

from __future__ import annotations

import pytest
from django.core import mail

from common import services
from common.audit import audit_integrate
from common.exceptions import Conflict, Invalid, NotFound, NotPermitted
from common.models import AuditEvent, Membership, Organisation, User


class TestOrganisationSignup:
    def test_creates_the_user_as_admin_of_a_new_organisation(self, db):
        user, org = services.organisation_signup(
            username="dana",
            email="Dana@Example.test",
            password="a long and unusual passphrase",
            organisation_name="Dana Data",
            is_provider=True,
            is_trainer=True,
        )
        assert user.email == "dana@example.test"
        assert org.slug == "dana-data" and org.kind_label == "provider and trainer"
        assert Membership.objects.get(user=user, organisation=org).role == "admin"
        event = AuditEvent.objects.get(action="account.signup")
        assert (event.actor_id, event.organisation_id) == (user.pk, org.pk)

    def test_reports_every_invalid_field_and_stores_nothing(self, alice, acme):
        with pytest.raises(Invalid) as caught:
            services.organisation_signup(
                username="alice",
                email="not-an-email",
                password="123",
                organisation_name="acme corpora",
                is_provider=False,
                is_trainer=False,
            )
        pointers = [e["pointer"] for e in caught.value.errors]
        assert pointers[:4] == ["/username", "/email", "/organisation_name", "/kind"]
        assert "/password" in pointers
        assert User.objects.count() == 1 and Organisation.objects.count() == 1
        assert not AuditEvent.objects.filter(action="account.signup").exists()


class TestInvitations:
    def test_an_admin_invites_and_the_invitee_joins_with_the_role(self, alice, acme, carol):
        invitation, raw = services.invitation_create(
            actor=alice, organisation=acme, email=carol.email, role="member"
        )
        assert invitation.token_hash != raw
        membership = services.invitation_accept(raw_token=raw, user=carol)
        assert membership.role == "member"
        audit_integrate()  # what the commits would do: the events in seq order
        assert [e.action for e in AuditEvent.objects.order_by("seq")][-2:] == [
            "membership.invite",
            "membership.join",
        ]

    def test_the_invitation_mail_carries_the_link(self, alice, acme, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=True):
            _, raw = services.invitation_create(
                actor=alice, organisation=acme, email="new@example.test", role="viewer"
            )
        assert len(mail.outbox) == 1
        assert f"/invitations/{raw}/" in mail.outbox[0].body

    def test_is_single_use(self, alice, acme, carol):
        _, raw = services.invitation_create(actor=alice, organisation=acme, email=carol.email, role="viewer")
        services.invitation_accept(raw_token=raw, user=carol)
        with pytest.raises(Conflict):
            services.invitation_accept(raw_token=raw, user=carol)

    def test_belongs_to_the_invited_address(self, alice, acme, carol, bob):
        _, raw = services.invitation_create(actor=alice, organisation=acme, email=carol.email, role="viewer")
        with pytest.raises(NotPermitted):
            services.invitation_accept(raw_token=raw, user=bob)

    def test_only_admins_invite(self, acme, acme_member):
        with pytest.raises(NotPermitted):
            services.invitation_create(
                actor=acme_member, organisation=acme, email="x@example.test", role="viewer"
            )

    def test_outsiders_cannot_even_see_the_organisation(self, acme, carol):
        with pytest.raises(NotFound):
            services.invitation_create(actor=carol, organisation=acme, email="x@example.test", role="viewer")


class TestMembershipRoleChange:
    def test_is_audited_with_old_and_new_role(self, alice, acme, acme_member):
        membership = acme_member.memberships.get(organisation=acme)
        services.membership_role_change(actor=alice, membership=membership, role="viewer")
        event = AuditEvent.objects.get(action="membership.role_change")
        assert event.details == {"user": "mike", "from": "member", "to": "viewer"}

    def test_keeps_at_least_one_admin(self, alice, acme):
        membership = alice.memberships.get(organisation=acme)
        with pytest.raises(Conflict) as caught:
            services.membership_role_change(actor=alice, membership=membership, role="member")
        assert caught.value.code == "common.last_admin"
        membership.refresh_from_db()
        assert membership.role == "admin"

    def test_the_last_admin_cannot_be_removed(self, alice, acme):
        with pytest.raises(Conflict):
            services.membership_remove(actor=alice, membership=alice.memberships.get(organisation=acme))


class TestLockoutService:
    def test_locks_after_the_configured_failures_even_for_unknown_names(self, db, settings):
        settings.LOCKOUT_FAILURES = 3
        results = [services.login_failed(username="nobody") for _ in range(3)]
        assert results == [False, False, True]
        assert services.login_locked_until(username="NOBODY") is not None
        assert AuditEvent.objects.filter(action="auth.lockout").count() == 1
