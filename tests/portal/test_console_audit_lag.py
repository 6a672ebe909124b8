"""The console shows the audit sequencer's lag: events appended, not yet integrated (docs/audit.md)."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from common.audit import audit_integrate, audit_record
from tests.helpers import staff_client

pytestmark = pytest.mark.django_db


def text_of(response) -> str:
    return response.content.decode()


def appended(count: int, *, integrate: bool) -> None:
    for n in range(count):
        audit_record(action="test.event", object_type="thing", object_id=n)
    if integrate:
        audit_integrate()


def test_the_overview_shows_no_lag_when_everything_is_integrated(audrey):
    appended(2, integrate=True)
    page = text_of(staff_client(audrey).get(reverse("console:home")))
    assert "Sequencer lag" in page
    assert "none: every committed event is in the chain" in page


def test_the_overview_shows_the_pending_count_and_the_oldest_age(audrey):
    appended(2, integrate=True)
    appended(3, integrate=False)
    page = text_of(staff_client(audrey).get(reverse("console:home")))
    assert re.search(r"3 events appended but not yet integrated, the oldest \d+\.\d s old", page)


def test_the_audit_log_lists_integrated_events_and_counts_the_pending(audrey):
    appended(2, integrate=True)
    appended(1, integrate=False)
    page = text_of(staff_client(audrey).get(reverse("console:audit")))
    assert re.findall(r'<th scope="row">(\d+)</th>', page) == ["2", "1"]
    assert "1 more event appended but not yet integrated into the chain" in page


def test_verification_reports_pending_events_as_not_verified(audrey):
    appended(2, integrate=True)
    appended(1, integrate=False)
    page = text_of(staff_client(audrey).get(reverse("console:audit_verify")))
    assert "OK: the chain is intact." in page
    assert re.search(
        r"<dt>Pending, not yet integrated</dt><dd>1 event, the oldest \d+\.\d s old: not verified", page
    )
