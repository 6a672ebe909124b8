"""The admin audit console: staff-only access, filters, keyset pages, exports, verification, ledger, keys."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from common.audit import audit_integrate, audit_record
from common.audit_checkpoints import checkpoint_tick
from common.models import AuditEvent, Organisation, User
from custody import services as custody
from marketplace.ledger import ledger_post, organisation_balance_account, platform_account
from marketplace.models import AccountKind, LedgerAccount, LedgerTransaction, Posting
from tests.helpers import staff_client

pytestmark = pytest.mark.django_db


def text_of(response) -> str:
    return response.content.decode()


def seqs_on(page_html: str) -> list[int]:
    return [int(s) for s in re.findall(r'<th scope="row">(\d+)</th>', page_html)]


def record_events(acme: Organisation, alice: User, count: int, action: str = "test.event") -> None:
    for n in range(count):
        audit_record(
            action=action,
            actor=alice,
            organisation=acme,
            object_type="thing",
            object_id=n,
            details={"n": n},
        )
    # What the writers' commits do outside a test's transaction: give them their seqs.
    audit_integrate()


def textarea(page: str, element_id: str) -> str:
    match = re.search(rf'id="{element_id}"[^>]*>([^<]*)</textarea>', page)
    assert match is not None, element_id
    return html.unescape(match.group(1))


@contextmanager
def triggers_off() -> Iterator[None]:
    """Bypass the append-only and balance triggers on Postgres (as the owner); a no-op on SQLite."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = DEFAULT")


def streamed(response) -> str:
    return b"".join(response.streaming_content).decode()


class TestAccess:
    @pytest.mark.parametrize(
        "name", ["home", "audit", "audit_verify", "checkpoint", "ledger", "keys", "master_rotate"]
    )
    def test_auditors_and_operators_read_every_page(self, audrey, ops, name):
        for user in (audrey, ops):
            assert staff_client(user).get(reverse(f"console:{name}")).status_code == 200

    def test_members_of_organisations_are_refused(self, alice, bob, carol):
        for user in (alice, bob, carol):
            client = Client()
            client.force_login(user)
            assert client.get(reverse("console:audit")).status_code == 403

    def test_an_operator_without_the_second_factor_is_sent_to_it(self, ops):
        client = Client()
        client.force_login(ops)
        response = client.get(reverse("console:audit"))
        assert response.status_code == 302
        assert "/login/" in response["Location"]

    @pytest.mark.parametrize(
        "name", ["home", "audit", "audit_verify", "checkpoint", "ledger", "keys", "master_rotate"]
    )
    def test_pages_carry_no_inline_script_or_style(self, ops, name):
        checkpoint_tick()
        page = text_of(staff_client(ops).get(reverse(f"console:{name}")))
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page)
        assert "<style" not in page
        assert not re.search(r"\sstyle=", page)
        assert not re.search(r"\son[a-z]+=", page)

    def test_the_nav_links_the_console_for_staff_only(self, audrey, alice):
        assert reverse("console:home") in text_of(staff_client(audrey).get(reverse("portal:home")))
        client = Client()
        client.force_login(alice)
        assert reverse("console:home") not in text_of(client.get(reverse("portal:home")))


class TestAuditLog:
    def test_filters_by_actor_organisation_action_object_and_time(self, acme, bolt, alice, bob, audrey):
        record_events(acme, alice, 3, action="custody.key_disable")
        record_events(bolt, bob, 2, action="order.paid")
        client = staff_client(audrey)
        url = reverse("console:audit")
        alice_seqs = [
            seq for seq in AuditEvent.objects.filter(actor_name="alice").values_list("seq", flat=True) if seq
        ]
        bolt_seqs = [
            seq
            for seq in AuditEvent.objects.filter(organisation_id=bolt.pk).values_list("seq", flat=True)
            if seq
        ]
        assert seqs_on(text_of(client.get(url, {"actor": "ALICE"}))) == sorted(alice_seqs, reverse=True)
        assert seqs_on(text_of(client.get(url, {"actor": str(bob.pk)}))) == sorted(bolt_seqs, reverse=True)
        assert seqs_on(text_of(client.get(url, {"organisation": "Bolt Models"}))) == sorted(
            bolt_seqs, reverse=True
        )
        assert len(seqs_on(text_of(client.get(url, {"action": "custody."})))) == 3
        assert len(seqs_on(text_of(client.get(url, {"action": "custody.key"})))) == 0
        assert seqs_on(
            text_of(client.get(url, {"organisation": acme.pk, "object_type": "thing", "object_id": "1"}))
        )
        assert len(seqs_on(text_of(client.get(url, {"object_type": "thing", "object_id": "1"})))) == 2
        later = (timezone.now() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
        earlier = (timezone.now() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
        ranged = text_of(client.get(url, {"since": earlier, "until": later}))
        assert len(seqs_on(ranged)) == 5
        # The range stays in the form, in the format a datetime-local input takes.
        assert f'value="{earlier}"' in ranged
        # Each event's details: key facts in a column, the whole JSON behind "All details".
        assert "<dt>n</dt><dd>0</dd>" in ranged
        assert '<pre class="json">{\n  &quot;n&quot;: 0\n}</pre>' in ranged
        assert seqs_on(text_of(client.get(url, {"since": later}))) == []

    def test_bad_filters_answer_400_with_the_error_beside_the_field(self, audrey):
        client = staff_client(audrey)
        response = client.get(reverse("console:audit"), {"since": "2026-02-02", "until": "2026-01-01"})
        assert response.status_code == 400
        assert "Until must be after From." in text_of(response)
        assert client.get(reverse("console:audit"), {"since": "yesterday"}).status_code == 400

    def test_pages_by_sequence_number_newest_first(self, acme, alice, audrey):
        record_events(acme, alice, 120)
        client = staff_client(audrey)
        url = reverse("console:audit")
        first = text_of(client.get(url))
        newest = AuditEvent.objects.order_by("-seq").first()
        assert newest is not None and newest.seq is not None
        top = newest.seq
        assert seqs_on(first) == list(range(top, top - 50, -1))
        assert f"before={top - 49}" in first and "after=" not in first
        second = text_of(client.get(url, {"before": top - 49}))
        assert seqs_on(second) == list(range(top - 50, top - 100, -1))
        back = text_of(client.get(url, {"after": top - 50}))
        assert seqs_on(back) == seqs_on(first)
        last = text_of(client.get(url, {"before": top - 99}))
        assert seqs_on(last) == list(range(top - 100, 0, -1))
        assert "before=" not in last
        assert f"after={top - 100}" in last
        # Filtered to the oldest events only, nothing is newer: no link to newer pages.
        only_old = text_of(client.get(url, {"object_id": "0", "before": str(top + 1)}))
        assert seqs_on(only_old) == [1] and "after=" not in only_old

    def test_a_page_costs_the_same_few_queries_however_many_events(
        self, acme, alice, audrey, django_assert_max_num_queries
    ):
        client = staff_client(audrey)
        record_events(acme, alice, 5)
        with django_assert_max_num_queries(6) as few:
            client.get(reverse("console:audit"), {"organisation": acme.pk})
        record_events(acme, alice, 200)
        with django_assert_max_num_queries(len(few.captured_queries)):
            response = client.get(reverse("console:audit"), {"organisation": acme.pk})
        assert len(seqs_on(text_of(response))) == 50


class TestExport:
    def test_csv_neutralizes_formulas_and_is_audited(self, acme, alice, audrey):
        audit_record(
            action="test.hostile",
            actor_name='=HYPERLINK("http://evil.test","x")',
            organisation=acme,
            object_type="thing",
            object_id="@SUM(A1)",
            details={"note": "+cmd"},
        )
        record_events(acme, alice, 2)
        client = staff_client(audrey)
        response = client.get(reverse("console:audit_export"), {"organisation": acme.pk, "format": "csv"})
        assert response.status_code == 200
        assert response["Content-Type"] == "text/csv; charset=utf-8"
        assert re.fullmatch(
            r'attachment; filename="sealroom-audit-\d{8}T\d{6}Z\.csv"', response["Content-Disposition"]
        )
        rows = list(csv.reader(io.StringIO(streamed(response), newline="")))
        assert rows[0][:3] == ["seq", "at", "actor_id"]
        body = rows[1:]
        assert [r[6] for r in body] == ["test.hostile", "test.event", "test.event"]
        assert [int(r[0]) for r in body] == sorted(int(r[0]) for r in body)
        hostile = body[0]
        assert hostile[3] == '\'=HYPERLINK("http://evil.test","x")'
        assert hostile[8] == "'@SUM(A1)"
        assert json.loads(hostile[9]) == {"note": "+cmd"}
        for row in body:
            assert not any(cell.startswith(("=", "+", "@", "\t", "\r")) for cell in row)
        event = AuditEvent.objects.filter(action="console.audit_export").get()
        assert (event.actor_name, event.details) == (
            "audrey",
            {"format": "csv", "filters": {"organisation": str(acme.pk)}},
        )

    def test_jsonl_streams_every_matching_event_with_its_hashes(self, acme, alice, audrey):
        record_events(acme, alice, 3)
        response = staff_client(audrey).get(
            reverse("console:audit_export"), {"action": "test.event", "format": "jsonl"}
        )
        lines = [json.loads(line) for line in streamed(response).splitlines()]
        stored = list(AuditEvent.objects.filter(action="test.event").order_by("seq"))
        assert [line["seq"] for line in lines] == [e.seq for e in stored]
        assert [line["hash"] for line in lines] == [e.hash for e in stored]
        assert lines[0]["details"] == {"n": 0}
        assert lines[0]["at"] == stored[0].at.isoformat()

    def test_an_unknown_format_answers_400_and_records_nothing(self, audrey):
        response = staff_client(audrey).get(reverse("console:audit_export"), {"format": "xlsx"})
        assert response.status_code == 400
        assert not AuditEvent.objects.filter(action="console.audit_export").exists()


class TestVerify:
    def test_reports_ok_and_is_audited(self, acme, alice, audrey):
        record_events(acme, alice, 4)
        response = staff_client(audrey).get(reverse("console:audit_verify"))
        assert "OK: the chain is intact." in text_of(response)
        event = AuditEvent.objects.get(action="console.audit_verify")
        assert event.details["ok"] is True and event.details["first_bad_seq"] is None
        assert event.details["events_checked"] == 4

    def test_names_the_first_bad_sequence_number(self, acme, alice, audrey):
        record_events(acme, alice, 6)
        bad = AuditEvent.objects.get(object_id="2").seq
        with triggers_off():
            AuditEvent.objects.filter(seq=bad).update(details={"n": 999})
        response = staff_client(audrey).get(reverse("console:audit_verify"))
        assert f"First bad sequence number: {bad}" in text_of(response)
        event = AuditEvent.objects.get(action="console.audit_verify")
        assert (event.details["ok"], event.details["first_bad_seq"]) == (False, bad)


class TestCheckpoint:
    def test_shows_what_verifies_with_nothing_but_the_public_key(self, acme, alice, audrey, settings):
        # Only the tick signs here: a chain head committed long ago (by an earlier test's sequencer
        # thread) would otherwise make the integration sign one first, as due by time.
        settings.AUDIT_CHECKPOINT_SECONDS = 10**9
        record_events(acme, alice, 3)
        checkpoint = checkpoint_tick()
        assert checkpoint is not None
        page = text_of(staff_client(audrey).get(reverse("console:checkpoint")))
        assert "The signature verifies under key" in page
        message, pem = textarea(page, "signed-bytes"), textarea(page, "public-key")
        public = serialization.load_pem_public_key(pem.encode())
        assert isinstance(public, Ed25519PublicKey)
        public.verify(base64.b64decode(checkpoint.signature), message.encode())
        assert json.loads(message)["seq"] == checkpoint.seq

    def test_without_a_checkpoint_says_so(self, audrey):
        assert "No checkpoint has been signed yet." in text_of(
            staff_client(audrey).get(reverse("console:checkpoint"))
        )


class TestLedger:
    def test_a_sound_ledger_shows_zero_per_currency_and_the_check_is_audited(self, acme, audrey):
        ledger_post(
            kind="funding.topup",
            postings=[
                (platform_account(kind=AccountKind.EXTERNAL_FUNDING, currency="EUR"), -500),
                (organisation_balance_account(organisation=acme, currency="EUR"), 500),
            ],
            idempotency_key="console-1",
        )
        page = text_of(staff_client(audrey).get(reverse("console:ledger")))
        assert "OK: the ledger is sound." in page
        assert re.search(r'<th scope="row">EUR</th><td>€0\.00 <span class="tag tag--ok">balanced', page)
        event = AuditEvent.objects.get(action="console.ledger_check")
        assert event.details == {"ok": True, "problems": 0, "currencies": ["EUR"]}

    def test_a_broken_invariant_is_listed(self, audrey):
        account = LedgerAccount.objects.create(kind=AccountKind.PLATFORM_FEE, currency="USD")
        with triggers_off():
            # What only someone bypassing the ledger's services and the database's checks could do.
            txn = LedgerTransaction.objects.create(kind="test.broken", idempotency_key="broken")
            Posting.objects.create(transaction=txn, account=account, amount=7)
        page = text_of(staff_client(audrey).get(reverse("console:ledger")))
        assert "currency USD sums to 7, not 0" in page
        assert AuditEvent.objects.get(action="console.ledger_check").details["ok"] is False
        with triggers_off():
            Posting.objects.filter(transaction=txn).delete()
            txn.delete()


@pytest.fixture
def version(acme, alice):
    dataset = custody.dataset_create(actor=alice, organisation=acme, name="Tickets")
    return custody.version_create(actor=alice, dataset=dataset)


class TestKeys:
    def test_lists_each_version_key(self, version, audrey):
        page = text_of(staff_client(audrey).get(reverse("console:keys")))
        assert custody.version_label(version) in page
        assert "Master key version <strong>" in page

    def test_auditors_see_the_confirmation_but_cannot_act(self, version, audrey):
        client = staff_client(audrey)
        url = reverse("console:key_disable", kwargs={"version_id": version.public_id})
        assert "Only operators act on keys." in text_of(client.get(url))
        assert client.post(url, {"reason": "audit"}).status_code == 403
        assert custody.version_key_status(version).key_state == "active"
        assert client.post(reverse("console:master_rotate")).status_code == 403

    def test_operator_disables_with_a_reason_then_enables(self, version, ops):
        client = staff_client(ops)
        url = reverse("console:key_disable", kwargs={"version_id": version.public_id})
        missing = client.post(url, {"reason": ""})
        assert missing.status_code == 422
        assert custody.version_key_status(version).key_state == "active"
        assert client.post(url, {"reason": "suspected leak"}).status_code == 302
        assert custody.version_key_status(version).key_state == "disabled"
        event = AuditEvent.objects.get(action="custody.key_disable")
        assert (event.actor_name, event.details["reason"]) == ("ops", "suspected leak")
        enable = reverse("console:key_enable", kwargs={"version_id": version.public_id})
        assert client.post(enable, {"reason": "false alarm"}).status_code == 302
        assert custody.version_key_status(version).key_state == "active"

    def test_destroy_refuses_a_version_in_use_and_a_wrong_label(self, version, ops):
        client = staff_client(ops)
        url = reverse("console:key_destroy", kwargs={"version_id": version.public_id})
        page = text_of(client.get(url))
        assert "This cannot be undone." in page and custody.version_label(version) in page
        assert client.post(url, {"confirm": ""}).status_code == 422
        refused = client.post(url, {"confirm": custody.version_label(version)})
        assert refused.status_code == 409
        assert "take it down" in html.unescape(text_of(refused))
        assert custody.version_key_status(version).key_state == "active"
        assert not AuditEvent.objects.filter(action="custody.key_destroy").exists()

    def test_operator_rotates_the_master_key(self, ops):
        client = staff_client(ops)
        before = custody.master_key_version()
        assert client.post(reverse("console:master_rotate")).status_code == 302
        assert custody.master_key_version() == before + 1
        assert AuditEvent.objects.filter(action="custody.master_rotate", actor_name="ops").exists()
