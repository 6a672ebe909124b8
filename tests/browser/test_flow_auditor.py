"""An auditor, in the console: filter the audit log, verify the chain, export what the filter matched."""

from __future__ import annotations

import csv
import io
import re

import pytest
from django.db import transaction

from common.audit import audit_record
from common.models import AuditEvent
from custody import services as custody
from tests.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.browser


def sign_in(page, live_server, username: str) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(DEFAULT_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")


def test_auditor_filters_the_log_verifies_the_chain_and_exports(page, shot, live_server, audrey, alice, acme):
    # Some history: a dataset with two versions (custody events), and unrelated noise.
    dataset = custody.dataset_create(actor=alice, organisation=acme, name="Support tickets")
    for _ in range(2):
        custody.version_create(actor=alice, dataset=dataset)
    with transaction.atomic():
        for n in range(3):
            audit_record(
                action="test.noise", actor=alice, organisation=acme, object_type="thing", object_id=n
            )
    custody_events = AuditEvent.objects.filter(action__startswith="custody.")
    assert custody_events.count() >= 3

    sign_in(page, live_server, "audrey")
    assert page.get_by_text("You are a platform auditor.").is_visible()
    shot("signed-in")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Console").click()
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Audit log").click()
    page.get_by_role("heading", name="Audit log").wait_for()
    events = page.get_by_role("table", name="Events")
    assert events.get_by_text("test.noise").count() == 3
    shot("audit-log")

    # Filter: custody actions (a prefix) by alice.
    page.get_by_label("Action").fill("custody.")
    page.get_by_label("Actor").fill("alice")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*action=custody\..*"))
    assert events.get_by_text("test.noise").count() == 0
    shown = events.locator("tbody tr")
    assert shown.count() == custody_events.filter(actor_name="alice").count()
    assert all(a.startswith("custody.") for a in events.locator("tbody code:not(.hash)").all_inner_texts())
    shot("filtered")

    # Export what the filter matched, as CSV.
    with page.expect_download() as download_info:
        page.get_by_role("link", name="CSV").click()
    download = download_info.value
    assert download.suggested_filename.startswith("sealroom-audit-")
    assert download.suggested_filename.endswith(".csv")
    with open(download.path(), encoding="utf-8") as handle:
        rows = list(csv.DictReader(io.StringIO(handle.read())))
    expected = list(
        custody_events.filter(actor_name="alice").order_by("seq").values_list("seq", "action", "hash")
    )
    assert [(int(r["seq"]), r["action"], r["hash"]) for r in rows] == expected
    export_event = AuditEvent.objects.get(action="console.audit_export")
    assert export_event.actor_name == "audrey"
    assert export_event.details["filters"] == {"action": "custody.", "actor": "alice"}

    # Verify the whole chain.
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Verify the chain").click()
    page.get_by_role("heading", name="Chain verification").wait_for()
    status = page.get_by_role("status").filter(has_text="OK: the chain is intact.")
    assert status.is_visible()
    checked = AuditEvent.objects.filter(action="console.audit_verify").latest("seq").details
    assert checked["ok"] is True and checked["problems"] == 0
    assert page.get_by_text(f"{checked['events_checked']} events checked").is_visible()
    shot("chain-verified")

    # The console's own reads are in the log.
    page.goto("/console/audit/?action=console.")
    assert events.get_by_text("console.audit_export").count() == 1
    assert events.get_by_text("console.audit_verify").count() == 1
    shot("console-events-logged")
