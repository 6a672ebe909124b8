"""The console's Work page: failed work listed with its last error, filters, the operator's retry."""

from __future__ import annotations

import html
import re
from itertools import count
from uuid import uuid4

import pytest
from django.test import Client
from django.urls import reverse

from common.models import AuditEvent, WorkItem, WorkState
from common.work import work_claim, work_enqueue, work_fail
from portal.console import work as work_pages
from tests.helpers import staff_client
from tests.list_queries import PAGE, N, assert_page_bounded, load, measure, signed_in

pytestmark = pytest.mark.django_db

SERIAL = count(1)


def failed(kind: str = "marketplace.settle_usage", error: str = "LedgerError: key taken") -> WorkItem:
    item = work_enqueue(kind=kind, ref=f"{next(SERIAL)}-{uuid4().hex[:6]}", max_attempts=1)
    work_claim(item_id=item.pk, owner="w1")
    work_fail(item_id=item.pk, owner="w1", error=error, retryable=True)
    item.refresh_from_db()
    assert item.state == WorkState.FAILED
    return item


def text_of(response) -> str:
    return html.unescape(response.content.decode())


def retry_forms(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<input type="hidden" name="item" value="(\d+)">', page)]


class TestWorkPage:
    def test_lists_items_with_attempts_and_last_error_and_a_retry_form_for_failed_ones(self, ops):
        stuck = failed(error="PermanentWorkError: no license 7")
        waiting = work_enqueue(kind="custody.ingest_chunk", ref="v1:3", queue="custody")
        page = text_of(staff_client(ops).get(reverse("console:work")))
        assert "PermanentWorkError: no license 7" in page
        assert f"<code>{stuck.ref}</code>" in page and "<code>custody.ingest_chunk</code>" in page
        assert "1/1" in page and "0/5" in page
        assert retry_forms(page) == [stuck.pk]
        assert waiting.pk not in retry_forms(page)
        assert 'name="csrfmiddlewaretoken"' in page

    def test_auditors_read_the_page_without_forms_and_cannot_retry(self, audrey):
        stuck = failed()
        client = staff_client(audrey)
        page = text_of(client.get(reverse("console:work")))
        assert stuck.ref in page
        assert retry_forms(page) == []
        response = client.post(reverse("console:work_retry"), {"item": stuck.pk, "reason": "audit"})
        assert response.status_code == 403
        assert WorkItem.objects.get(pk=stuck.pk).state == WorkState.FAILED
        assert not AuditEvent.objects.filter(action="common.work_retry").exists()

    def test_members_of_organisations_are_refused(self, alice):
        stuck = failed()
        client = staff_client(alice)
        assert client.get(reverse("console:work")).status_code == 403
        assert (
            client.post(reverse("console:work_retry"), {"item": stuck.pk, "reason": "x"}).status_code == 403
        )

    def test_filters_by_state_and_kind_or_its_start(self, audrey):
        settle, expire = failed(), failed(kind="marketplace.license_expire")
        ingest = work_enqueue(kind="custody.ingest_chunk", ref="v1:1", queue="custody")
        client = staff_client(audrey)

        def listed(**query: str) -> set[int]:
            response = client.get(reverse("console:work"), query)
            assert response.status_code == 200
            return {item.pk for item in response.context["page"].object_list}

        assert listed() == {settle.pk, expire.pk, ingest.pk}
        assert listed(state="failed") == {settle.pk, expire.pk}
        assert listed(state="queued") == {ingest.pk}
        assert listed(kind="marketplace.settle_usage") == {settle.pk}
        assert listed(kind="marketplace.") == {settle.pk, expire.pk}
        assert listed(kind="marketplace.", state="queued") == set()
        bad = client.get(reverse("console:work"), {"state": "exploded"})
        assert bad.status_code == 400
        assert "Select a valid choice" in text_of(bad)

    def test_the_nav_links_the_page(self, audrey):
        page = text_of(staff_client(audrey).get(reverse("console:home")))
        assert f'href="{reverse("console:work")}"' in page

    def test_the_page_carries_no_inline_script_or_style(self, ops):
        failed()
        page = staff_client(ops).get(reverse("console:work")).content.decode()
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page)
        assert "<style" not in page
        assert not re.search(r"\sstyle=", page)
        assert not re.search(r"\son[a-z]+=", page)


class TestRetry:
    def test_an_operator_retries_with_a_reason_and_returns_to_the_filtered_list(self, ops):
        stuck = failed()
        client = staff_client(ops)
        response = client.post(
            reverse("console:work_retry"),
            {
                "item": stuck.pk,
                "reason": "ledger key bug fixed",
                "back": "state=failed&kind=marketplace.&x=1",
            },
        )
        assert response.status_code == 302
        assert response["Location"] == reverse("console:work") + "?state=failed&kind=marketplace."
        stuck.refresh_from_db()
        assert (stuck.state, stuck.attempts, stuck.finished_at) == (WorkState.QUEUED, 0, None)
        event = AuditEvent.objects.get(action="common.work_retry")
        assert (event.actor_name, event.object_id, event.details["reason"]) == (
            "ops",
            str(stuck.pk),
            "ledger key bug fixed",
        )
        assert f"Work item {stuck.pk}" in text_of(client.get(response["Location"]))

    def test_a_missing_reason_is_422_beside_the_item(self, ops):
        stuck = failed()
        response = staff_client(ops).post(reverse("console:work_retry"), {"item": stuck.pk, "reason": ""})
        assert response.status_code == 422
        page = text_of(response)
        assert f"Work item {stuck.pk} was not retried" in page
        assert f'id="retry-reason-{stuck.pk}-error"' in page
        assert WorkItem.objects.get(pk=stuck.pk).state == WorkState.FAILED

    def test_an_item_that_is_not_failed_is_409_and_a_missing_one_404(self, ops):
        waiting = work_enqueue(kind="custody.ingest_chunk", ref="v1:1", queue="custody")
        client = staff_client(ops)
        refused = client.post(reverse("console:work_retry"), {"item": waiting.pk, "reason": "why"})
        assert refused.status_code == 409
        assert "is queued, not failed" in text_of(refused)
        missing = client.post(reverse("console:work_retry"), {"item": waiting.pk + 100, "reason": "why"})
        assert missing.status_code == 404
        assert not AuditEvent.objects.filter(action="common.work_retry").exists()

    def test_a_second_retry_of_the_same_item_is_409(self, ops):
        stuck = failed()
        client = staff_client(ops)
        assert (
            client.post(reverse("console:work_retry"), {"item": stuck.pk, "reason": "one"}).status_code == 302
        )
        assert (
            client.post(reverse("console:work_retry"), {"item": stuck.pk, "reason": "two"}).status_code == 409
        )
        assert AuditEvent.objects.filter(action="common.work_retry").count() == 1

    def test_get_is_not_allowed(self, ops):
        assert staff_client(ops).get(reverse("console:work_retry")).status_code == 405

    def test_an_operator_without_the_second_factor_is_sent_to_it(self, ops):
        stuck = failed()
        client = Client()
        client.force_login(ops)
        response = client.post(reverse("console:work_retry"), {"item": stuck.pk, "reason": "x"})
        assert response.status_code == 302
        assert "/login/" in response["Location"]
        assert WorkItem.objects.get(pk=stuck.pk).state == WorkState.FAILED


class TestQueries:
    def test_the_work_list_is_flat_and_paginated(self, ops, monkeypatch):
        monkeypatch.setattr(work_pages, "ITEMS_PER_PAGE", PAGE)
        client = signed_in(ops, otp=True)

        def more_items(k: int) -> None:
            for _ in range(k):
                failed()

        _few, many = measure(
            lambda: load(client, reverse("console:work"), {"state": "failed"}), more_items, "console work"
        )
        assert_page_bounded(many, rows=3 * N)
        assert len(retry_forms(many.response.content.decode())) == PAGE
