"""The console's operator pages: top-ups by organisation name, takedowns, payouts, refunds, and the audit
log's readable details; staff only, operators act."""

from __future__ import annotations

import html
import re

import pytest
from django.test import Client

from common.audit import audit_integrate, audit_record
from common.models import AuditEvent, WorkItem, WorkState
from common.work import work_claim, work_fail
from custody.models import DatasetVersion, VersionState
from marketplace.models import License, LicenseState, Payout, TopUp
from marketplace.services.orders import order_place
from marketplace.services.payouts import PAYOUT_WORK, payout_request
from marketplace.services.settlement import usage_settle
from tests.helpers import staff_client
from tests.marketplace.catalog.conftest import sealed_rows  # noqa: F401
from tests.marketplace.orders.conftest import cora, fund, market, use  # noqa: F401

pytestmark = pytest.mark.django_db

PAGES = ["/console/takedowns/", "/console/payouts/", "/console/refunds/", "/market/ops/topups/"]
ACTIONS = [
    "/console/takedowns/take-down/",
    "/console/payouts/retry/",
    "/console/refunds/license/",
    "/market/ops/topups/",
]


def text_of(response) -> str:
    return html.unescape(response.content.decode())


@pytest.fixture(autouse=True)
def _fee(settings):
    settings.MARKETPLACE_FEE_BPS = 1000


@pytest.fixture
def licensed(market, fund, bolt, bob) -> License:  # noqa: F811
    """Bolt holds an active license on a fixed-price offer, paid 500.00 into escrow."""
    fund(bolt, 100_000)
    return License.objects.get(order=order_place(buyer=bolt, offer=market("fixed"), actor=bob))


class TestWhoMayUseThem:
    @pytest.mark.parametrize("path", PAGES)
    def test_organisation_members_get_403(self, bob, path):
        client = Client()
        client.force_login(bob)
        assert client.get(path).status_code == 403

    @pytest.mark.parametrize("path", PAGES)
    def test_staff_read_them_and_they_are_in_the_console_navigation(self, ops, audrey, path):
        for user in (ops, audrey):
            page = staff_client(user).get(path)
            assert page.status_code == 200
            nav = re.search(
                r'<nav class="subnav" aria-label="Console">(.*?)</nav>', page.content.decode(), re.S
            )
            assert nav is not None
            assert f'href="{path}"' in nav.group(1)
            assert 'aria-current="page"' in nav.group(1)

    @pytest.mark.parametrize("path", ACTIONS)
    def test_auditors_cannot_act(self, audrey, path):
        assert staff_client(audrey).post(path, {"reason": "x"}).status_code == 403

    def test_auditors_see_no_action_forms(self, audrey):
        for path in PAGES:
            main = staff_client(audrey).get(path).content.decode().split("<main")[-1]
            assert 'method="post"' not in main, path


class TestTopUpByName:
    def test_the_operator_chooses_the_organisation_by_name(self, ops, bolt, acme):
        client = staff_client(ops)
        page = text_of(client.get("/market/ops/topups/"))
        assert "The organisation's id" not in page
        option = re.search(r'<option value="([^"]+)"[^>]*>Bolt Models \(trainer\)</option>', page)
        assert option is not None, page
        response = client.post(
            "/market/ops/topups/",
            {"organisation": option.group(1), "amount": "7.00", "currency": "EUR", "external_ref": "bank-1"},
        )
        assert response.status_code == 302
        topup = TopUp.objects.get()
        assert (topup.organisation, topup.amount) == (bolt, 700)
        assert "€7.00" in text_of(client.get("/market/ops/topups/"))

    def test_an_unknown_organisation_is_a_form_error(self, ops):
        response = staff_client(ops).post(
            "/market/ops/topups/",
            {"organisation": "999999", "amount": "7.00", "currency": "EUR", "external_ref": "bank-1"},
        )
        assert response.status_code == 200
        assert "No such organisation: choose one from the list." in text_of(response)
        assert not TopUp.objects.exists()


class TestTakedowns:
    def test_an_operator_takes_a_version_down_with_a_reason(
        self, ops, licensed, django_capture_on_commit_callbacks
    ):
        version = licensed.version
        client = staff_client(ops)
        page = text_of(client.get("/console/takedowns/"))
        assert f'<option value="{version.pk}"' in page or f'value="{version.public_id}"' in page
        with django_capture_on_commit_callbacks(execute=True):  # the doorbell enqueues the undo items
            response = client.post(
                "/console/takedowns/take-down/",
                {"version": version.pk, "reason": "court order", "confirm": "on"},
            )
        assert response.status_code == 302
        version.refresh_from_db()
        assert (version.state, version.failure_reason) == (VersionState.TAKEN_DOWN, "court order")
        event = AuditEvent.objects.get(action="custody.version_takedown", object_id=str(version.pk))
        assert event.actor_id == ops.pk
        listed = text_of(client.get("/console/takedowns/"))
        row = re.search(rf'<tr data-version="{version.pk}">(.*?)</tr>', listed, re.S)
        assert row is not None
        assert "court order" in row.group(1) and "operator" in row.group(1)
        assert "queued" in row.group(1)  # the marketplace's undo items, waiting for a worker

    def test_without_the_confirmation_nothing_is_taken_down(self, ops, licensed):
        response = staff_client(ops).post(
            "/console/takedowns/take-down/", {"version": licensed.version_id, "reason": "court order"}
        )
        assert response.status_code == 422
        assert "Confirm that you mean to take the version down." in text_of(response)
        assert DatasetVersion.objects.get(pk=licensed.version_id).state == VersionState.SEALED

    def test_a_taken_down_version_is_no_longer_offered(self, ops, licensed):
        client = staff_client(ops)
        body = {"version": licensed.version_id, "reason": "court order", "confirm": "on"}
        assert client.post("/console/takedowns/take-down/", body).status_code == 302
        again = client.post("/console/takedowns/take-down/", body)
        assert again.status_code == 422
        assert "Choose a version from the list" in text_of(again)


class TestPayouts:
    @pytest.fixture
    def payout(self, licensed, acme, alice) -> Payout:
        usage_settle(usage_id=use(licensed, "job-1", "job_started", 1).pk)
        return payout_request(organisation=acme, amount=2_000, currency="EUR", actor=alice)

    def _fail(self, payout: Payout) -> WorkItem:
        item = WorkItem.objects.get(kind=PAYOUT_WORK, ref=payout.ref)
        work_claim(item_id=item.pk, owner="w1")
        work_fail(item_id=item.pk, owner="w1", error="GatewayDown: timeout", retryable=False)
        item.refresh_from_db()
        assert item.state == WorkState.FAILED
        return item

    def test_payouts_are_listed_with_their_state_and_amount(self, audrey, payout):
        page = text_of(staff_client(audrey).get("/console/payouts/"))
        row = re.search(rf'<tr data-payout="{payout.ref}">(.*?)</tr>', page, re.S)
        assert row is not None
        assert "Acme Corpora" in row.group(1) and "€20.00" in row.group(1) and "Requested" in row.group(1)
        assert "Retry" not in row.group(1)
        filtered = text_of(staff_client(audrey).get("/console/payouts/?state=sent"))
        assert payout.ref not in filtered

    def test_an_operator_retries_a_failed_gateway_call(self, ops, payout):
        item = self._fail(payout)
        client = staff_client(ops)
        page = text_of(client.get("/console/payouts/"))
        assert f'name="payout" value="{payout.ref}"' in page
        response = client.post("/console/payouts/retry/", {"payout": payout.ref, "reason": "gateway back"})
        assert response.status_code == 302
        item.refresh_from_db()
        assert item.state == WorkState.QUEUED
        event = AuditEvent.objects.get(action="common.work_retry")
        assert event.actor_id == ops.pk and event.details["reason"] == "gateway back"

    def test_a_payout_whose_call_did_not_fail_is_not_retried(self, ops, payout):
        response = staff_client(ops).post("/console/payouts/retry/", {"payout": payout.ref, "reason": "x"})
        assert response.status_code == 409
        assert "has not failed" in text_of(response)
        assert not AuditEvent.objects.filter(action="common.work_retry").exists()


class TestRefunds:
    def test_an_operator_ends_a_license_and_the_refund_is_listed(self, ops, licensed):
        client = staff_client(ops)
        response = client.post("/console/refunds/license/", {"license": licensed.ref, "reason": "duplicate"})
        assert response.status_code == 302
        licensed.refresh_from_db()
        assert (licensed.state, licensed.refunded) == (LicenseState.REVOKED, 50_000)
        event = AuditEvent.objects.get(action="console.license_refund")
        assert (event.actor_id, event.object_id, event.details["refunded"]) == (ops.pk, licensed.ref, 50_000)
        page = text_of(client.get("/console/refunds/"))
        row = re.search(r"<tr data-refund=\"\d+\">(.*?)</tr>", page, re.S)
        assert row is not None
        assert "Bolt Models" in row.group(1) and "€500.00" in row.group(1) and "duplicate" in row.group(1)

    def test_an_unknown_or_ended_license_is_a_form_error(self, ops, licensed):
        client = staff_client(ops)
        unknown = client.post("/console/refunds/license/", {"license": "lic_nope", "reason": "x"})
        assert unknown.status_code == 422
        assert "No license has this reference." in text_of(unknown)
        client.post("/console/refunds/license/", {"license": licensed.ref, "reason": "duplicate"})
        ended = client.post("/console/refunds/license/", {"license": licensed.ref, "reason": "again"})
        assert ended.status_code == 422
        assert "not active" in text_of(ended)


class TestAuditLogLayout:
    def test_key_facts_in_columns_and_the_whole_details_expandable(self, audrey):
        from django.db import transaction

        details = {"reason": "court order", "amount": 50_000, "grants": [1, 2, 3], "note": "x" * 300}
        with transaction.atomic():
            audit_record(action="test.layout", object_type="thing", object_id="7", details=details)
        audit_integrate()  # what the writer's commit does outside a test's transaction: sequence it
        page = text_of(staff_client(audrey).get("/console/audit/?action=test.layout"))
        cell = re.search(r'<td class="audit-details">(.*?)</td>', page, re.S)
        assert cell is not None
        facts = dict(re.findall(r"<dt>([^<]+)</dt><dd>([^<]*)</dd>", cell.group(1)))
        assert facts["reason"] == "court order" and facts["amount"] == "50000"
        assert "grants" not in facts  # a list stays in the full view
        assert len(facts["note"]) == 80 and facts["note"].endswith("…")
        full = re.search(
            r'<details><summary>All details.*?</summary><pre class="json">(.*?)</pre>', cell.group(1), re.S
        )
        assert full is not None
        assert '"grants": [\n    1,' in full.group(1) and "x" * 300 in full.group(1)
