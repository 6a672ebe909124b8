"""Withdrawal in the API, the provider portal (withdraw, lineage) and the console."""

# The pooled-version fixtures come from the custody tests; pytest passes them by parameter name.
# ruff: noqa: F811

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from common.models import User
from custody import services
from custody.models import ContributionWithdrawal, VersionState, WithdrawalState
from tests.custody.conftest import dataset, drain  # noqa: F401 - dataset: a fixture
from tests.custody.test_withdrawal import (  # noqa: F401 - fixtures
    SENTINEL,
    cora,
    cora_admin,
    cora_member,
    pooled,
)
from tests.grants import grant_for_test
from tests.helpers import login_with_otp

pytestmark = pytest.mark.django_db


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


class TestWithdrawApi:
    def test_the_contributors_admin_withdraws_with_a_token_and_reads_the_lineage(
        self, pooled, cora, cora_admin, bolt, token_for
    ):
        old, _mine, theirs = pooled
        grant = grant_for_test(old, bolt)
        services.usage_record(
            grant=grant,
            consumer_ref="training-job-77",
            kind="tokens_trained",
            quantity=theirs.tokens,
            by_contribution={theirs.pk: theirs.tokens},
        )
        client = token_for(cora_admin, cora, ["provide", "read"])
        response = client.post(
            f"/api/v1/contributions/{theirs.public_id}/withdraw", {"reason": "consent ended"}, format="json"
        )
        assert response.status_code == 202, response.content
        body = response.json()
        assert body["state"] == "pending" and body["from_version_id"] == old.public_id
        assert body["to_version_id"] is None and body["requested_as"] == "contributor"
        drain()
        detail = client.get(f"/api/v1/withdrawals/{body['id']}").json()
        withdrawal = ContributionWithdrawal.objects.select_related("to_version").get(public_id=body["id"])
        assert withdrawal.to_version is not None
        assert detail["state"] == "done" and detail["to_version_id"] == withdrawal.to_version.public_id
        assert detail["lineage"] == [
            {
                "consumer_ref": "training-job-77",
                "licensee": bolt.name,
                "dataset_version_id": old.public_id,
                "platform_tokens": theirs.tokens,
                "settled": False,
            }
        ]

    def test_a_missing_reason_names_the_field_and_stores_nothing(self, pooled, cora, cora_admin, token_for):
        old, _mine, theirs = pooled
        client = token_for(cora_admin, cora, ["provide"])
        response = client.post(f"/api/v1/contributions/{theirs.public_id}/withdraw", {}, format="json")
        assert response.status_code == 422 and response["Content-Type"] == "application/problem+json"
        assert any(e["pointer"] == "/reason" for e in response.json()["errors"])
        old.refresh_from_db()
        assert old.state == VersionState.SEALED and not ContributionWithdrawal.objects.exists()

    def test_a_member_is_refused_with_problem_json(self, pooled, cora, cora_member, token_for):
        _old, _mine, theirs = pooled
        client = token_for(cora_member, cora, ["provide"])
        response = client.post(
            f"/api/v1/contributions/{theirs.public_id}/withdraw", {"reason": "x"}, format="json"
        )
        assert response.status_code == 403 and response["Content-Type"] == "application/problem+json"
        assert response.json()["code"] == "common.role_insufficient"

    def test_the_owner_cannot_withdraw_another_contributors_records(self, pooled, alice, acme, token_for):
        _old, _mine, theirs = pooled
        client = token_for(alice, acme, ["provide"])
        response = client.post(
            f"/api/v1/contributions/{theirs.public_id}/withdraw", {"reason": "x"}, format="json"
        )
        assert response.status_code == 404 and response["Content-Type"] == "application/problem+json"

    def test_a_second_withdrawal_from_a_superseded_version_is_a_conflict(
        self, pooled, cora, cora_admin, alice, acme, token_for
    ):
        _old, mine, theirs = pooled
        services.contribution_withdraw(actor=cora_admin, contribution=theirs, reason="x")
        client = token_for(alice, acme, ["provide"])
        response = client.post(
            f"/api/v1/contributions/{mine.public_id}/withdraw", {"reason": "y"}, format="json"
        )
        assert response.status_code == 409 and response.json()["code"] == "custody.version_superseded"


class TestWithdrawPages:
    def test_a_co_contributor_withdraws_from_the_portal_and_sees_the_lineage(self, pooled, cora_admin, bolt):
        old, _mine, theirs = pooled
        grant = grant_for_test(old, bolt)
        services.usage_record(
            grant=grant,
            consumer_ref="training-job-5",
            kind="tokens_trained",
            quantity=theirs.tokens,
            by_contribution={theirs.pk: theirs.tokens},
        )
        client = signed_in(cora_admin)
        listing = client.get(reverse("portal:withdrawals"))
        withdraw_url = reverse("portal:contribution_withdraw", args=[theirs.public_id])
        assert listing.status_code == 200 and withdraw_url in listing.content.decode()
        assert "pooled, owned by Acme Corpora" in listing.content.decode()

        unconfirmed = client.post(withdraw_url, {"reason": "consent ended"})
        assert unconfirmed.status_code == 422
        assert "Confirm that you mean to withdraw" in unconfirmed.content.decode()
        assert not ContributionWithdrawal.objects.exists()

        done = client.post(withdraw_url, {"reason": "consent ended", "confirm": "on"})
        withdrawal = ContributionWithdrawal.objects.get()
        assert done.status_code == 302 and done["Location"] == reverse(
            "portal:withdrawal", args=[withdrawal.public_id]
        )
        drain()
        page = client.get(done["Location"]).content.decode()
        assert 'data-state="done"' in page and "v2" in page
        assert 'data-job="training-job-5"' in page and "Bolt Models" in page
        assert SENTINEL not in page
        # Asking again lands on the same lineage page.
        assert client.get(withdraw_url)["Location"] == done["Location"]

    def test_a_member_sees_the_page_but_cannot_withdraw(self, pooled, cora_member):
        _old, _mine, theirs = pooled
        client = signed_in(cora_member)
        assert "admins withdraw" in client.get(reverse("portal:withdrawals")).content.decode()
        url = reverse("portal:contribution_withdraw", args=[theirs.public_id])
        assert client.post(url, {"reason": "x", "confirm": "on"}).status_code == 403
        assert not ContributionWithdrawal.objects.exists()

    def test_the_owner_sees_the_withdrawal_of_its_co_contributor(self, pooled, cora_admin, alice):
        _old, _mine, theirs = pooled
        withdrawal = services.contribution_withdraw(actor=cora_admin, contribution=theirs, reason="x")
        page = signed_in(alice).get(reverse("portal:withdrawals")).content.decode()
        assert f'data-withdrawal="{withdrawal.public_id}"' in page and "Cora Texts" in page


class TestConsoleWithdrawals:
    def test_an_operator_withdraws_a_contribution_by_its_id(self, pooled, ops):
        old, mine, _theirs = pooled
        client = Client()
        login_with_otp(client, ops)
        bad = client.post(
            reverse("console:withdraw"),
            {"contribution": "ctb_0000000000000000", "reason": "x", "confirm": "on"},
        )
        assert bad.status_code == 422 and "No contribution has this id" in bad.content.decode()
        response = client.post(
            reverse("console:withdraw"),
            {"contribution": mine.public_id, "reason": "court order", "confirm": "on"},
        )
        assert response.status_code == 302
        withdrawal = ContributionWithdrawal.objects.get()
        assert withdrawal.requested_as == "operator" and withdrawal.requested_by == ops
        drain()
        withdrawal.refresh_from_db()
        assert withdrawal.state == WithdrawalState.DONE
        page = client.get(reverse("console:withdrawals")).content.decode()
        assert withdrawal.public_id in page and "court order" in page
        again = client.post(
            reverse("console:withdraw"), {"contribution": mine.public_id, "reason": "again", "confirm": "on"}
        )
        assert again.status_code == 302 and ContributionWithdrawal.objects.count() == 1
        old.refresh_from_db()
        assert old.state == VersionState.SUPERSEDED

    def test_an_auditor_reads_but_cannot_act(self, pooled, audrey):
        _old, mine, _theirs = pooled
        client = Client()
        client.force_login(audrey)
        assert client.get(reverse("console:withdrawals")).status_code == 200
        response = client.post(
            reverse("console:withdraw"), {"contribution": mine.public_id, "reason": "x", "confirm": "on"}
        )
        assert response.status_code == 403 and not ContributionWithdrawal.objects.exists()
