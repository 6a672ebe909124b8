"""Public ids for the objects named under another one (issue 13, item 9, finished).

Uploads, screening findings, memberships, invitations, notifications, webhook
deliveries (and, in ``tests/marketplace/catalog/test_rights_public_ids.py``,
rights allocations and terms) counted rows platform-wide through their integer
keys. Each now shows ``<prefix>_<16 hex>``; its route takes only that shape (an
old integer route matches nothing), a malformed id in a body is refused with
a pointer to it, and another organisation's id answers exactly as an unknown one.
"""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse
from rest_framework.test import APIClient

from common.models import Membership, Notification, WebhookDelivery, WebhookEndpoint
from common.notifications import notification_unread_count
from common.public_ids import is_public_id, new_public_id, pks_for
from custody import services as custody
from custody.models import Contribution, DatasetVersion, Finding, VersionState

PROBLEM = "application/problem+json"
UNKNOWN = {prefix: f"{prefix}_0000000000000000" for prefix in ("ctb", "fnd", "mem", "ntf")}


def api(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def same_answer(one, other) -> bool:
    return (one.status_code, one["Content-Type"], one.json()) == (
        other.status_code,
        other["Content-Type"],
        other.json(),
    )


def assert_integer_route_is_gone(response, path: str) -> None:
    assert response.status_code == 404
    assert response["Content-Type"] == PROBLEM
    assert response.json()["code"] == "not_found"
    assert path in response.json()["detail"]  # says where: no endpoint at that path


@pytest.fixture
def version(alice, acme) -> DatasetVersion:
    dataset = custody.dataset_create(actor=alice, organisation=acme, name="Tickets")
    return custody.version_create(actor=alice, dataset=dataset)


@pytest.fixture
def upload(alice, acme, version) -> Contribution:
    return custody.contribution_start(actor=alice, organisation=acme, version=version, filename="a.jsonl")


def notify(organisation, n: int = 1) -> list[Notification]:
    return [
        Notification.objects.create(organisation=organisation, kind="job.succeeded", subject=f"Job {i}")
        for i in range(n)
    ]


class TestSchema:
    def test_routes_and_lists_of_ids_carry_their_pattern(self, db):
        schema = APIClient().get("/api/v1/schema/", {"format": "json"}).json()
        params = {
            p["name"]: p["schema"]
            for path in schema["paths"].values()
            for op in path.values()
            if isinstance(op, dict)
            for p in op.get("parameters", [])
            if p.get("in") == "path"
        }
        for name, prefix in (("contribution_id", "ctb"), ("allocation_id", "alc"), ("membership_id", "mem")):
            assert params[name]["pattern"] == f"^{prefix}_[0-9a-f]{{16}}$", name
        components = schema["components"]["schemas"]
        findings = next(c for n, c in components.items() if "finding_ids" in c.get("properties", {}))
        assert findings["properties"]["finding_ids"]["items"]["pattern"] == "^fnd_[0-9a-f]{16}$"


class TestMe:
    def test_names_the_caller_by_a_usr_id(self, alice):
        me = api(alice).get("/api/v1/me").json()
        assert me["id"] == alice.public_id and is_public_id(me["id"], "usr")


class TestPksFor:
    def test_resolves_in_order_with_0_for_unknown_ids(self, version, upload):
        other = custody.contribution_start(
            actor=version.dataset.owner.memberships.get().user,
            organisation=version.dataset.owner,
            version=version,
            filename="b.jsonl",
        )
        ids = [other.public_id, UNKNOWN["ctb"], upload.public_id, other.public_id]
        assert pks_for("ctb", ids) == [other.pk, 0, upload.pk, other.pk]

    def test_within_narrows_what_may_match(self, version, upload):
        assert pks_for("ctb", [upload.public_id], within=Contribution.objects.none()) == [0]

    def test_refuses_a_malformed_or_other_kind_of_id(self, upload):
        for bad in (str(upload.pk), new_public_id("fnd"), upload.public_id.upper()):
            with pytest.raises(ValueError):
                pks_for("ctb", [upload.public_id, bad])

    def test_resolves_more_ids_than_one_query_takes(self, version):
        rows = [Finding(version=version, record_id=n, kind="empty", detail="x") for n in range(1200)]
        Finding.objects.bulk_create(rows)
        made = list(Finding.objects.filter(version=version).order_by("pk").values_list("public_id", "pk"))
        assert len({public for public, _ in made}) == 1200
        assert pks_for("fnd", [public for public, _ in made]) == [pk for _, pk in made]


class TestUploads:
    def test_show_and_take_a_ctb_id(self, alice, upload):
        client = api(alice)
        shown = client.get(f"/api/v1/contributions/{upload.public_id}")
        assert shown.status_code == 200
        assert shown.json()["id"] == upload.public_id and is_public_id(upload.public_id, "ctb")
        part = client.put(
            f"/api/v1/contributions/{upload.public_id}/parts/1",
            b'{"text": "a"}\n',
            content_type="application/octet-stream",
        )
        assert part.status_code == 200

    def test_the_integer_routes_no_longer_answer(self, alice, upload):
        client = api(alice)
        for path in (
            f"/api/v1/contributions/{upload.pk}",
            f"/api/v1/contributions/{upload.pk}/complete",
            "/api/v1/contributions/ctb_12/complete",
        ):
            response = client.post(path) if path.endswith("complete") else client.get(path)
            assert_integer_route_is_gone(response, path)

    def test_another_organisations_upload_answers_as_an_unknown_one(self, alice, bob, upload):
        theirs = api(bob).get(f"/api/v1/contributions/{upload.public_id}")
        unknown = api(alice).get(f"/api/v1/contributions/{UNKNOWN['ctb']}")
        assert theirs.status_code == 404
        assert same_answer(theirs, unknown)

    def test_the_upload_widget_is_given_the_public_id_route(self, alice, version):
        client = Client()
        client.force_login(alice)
        page = client.get(reverse("custody:version", kwargs={"version_id": version.public_id}))
        assert 'data-contribution-url="/api/v1/contributions/"' in page.content.decode()


@pytest.fixture
def in_review(version) -> DatasetVersion:
    DatasetVersion.objects.filter(pk=version.pk).update(state=VersionState.REVIEW)
    version.refresh_from_db()
    return version


class TestFindings:
    def test_are_listed_and_marked_by_fnd_id(self, alice, in_review):
        finding = Finding.objects.create(version=in_review, record_id=3, kind="empty", detail="x")
        url = f"/api/v1/versions/{in_review.public_id}/findings"
        client = api(alice)
        (shown,) = client.get(url).json()["results"]
        assert shown["id"] == finding.public_id and shown["record_id"] == 3
        marked = client.post(url, {"finding_ids": [finding.public_id], "drop": True}, format="json")
        assert marked.json() == {"changed": 1}
        assert Finding.objects.get(pk=finding.pk).drop

    @pytest.mark.parametrize("bad", [7, "7", "fnd_7", "ctb_0123456789abcdef", None])
    def test_a_malformed_finding_id_is_refused_where_it_is(self, alice, in_review, bad):
        finding = Finding.objects.create(version=in_review, record_id=3, kind="empty", detail="x")
        response = api(alice).post(
            f"/api/v1/versions/{in_review.public_id}/findings",
            {"finding_ids": [finding.public_id, bad], "drop": True},
            format="json",
        )
        assert response.status_code == 422
        assert response["Content-Type"] == PROBLEM
        (error,) = response.json()["errors"]
        assert error["pointer"] == "/finding_ids/1"
        if bad is not None:
            assert error["code"] == "invalid_public_id" and "fnd_0123456789abcdef" in error["detail"]
        assert not Finding.objects.get(pk=finding.pk).drop

    def test_another_versions_finding_answers_as_an_unknown_one(self, alice, in_review):
        other = custody.version_create(actor=alice, dataset=in_review.dataset)
        theirs = Finding.objects.create(version=other, record_id=1, kind="empty", detail="x")
        url = f"/api/v1/versions/{in_review.public_id}/findings"
        client = api(alice)
        foreign = client.post(url, {"finding_ids": [theirs.public_id], "drop": True}, format="json")
        unknown = client.post(url, {"finding_ids": [UNKNOWN["fnd"]], "drop": True}, format="json")
        assert foreign.status_code == 404
        assert same_answer(foreign, unknown)
        assert not Finding.objects.get(pk=theirs.pk).drop

    def test_the_report_form_names_findings_by_public_id(self, alice, in_review):
        finding = Finding.objects.create(version=in_review, record_id=3, kind="empty", detail="x")
        client = Client()
        client.force_login(alice)
        mark = reverse("custody:findings_mark", kwargs={"version_id": in_review.public_id})
        # An integer (the old form) names nothing: ignored, nothing changes.
        client.post(mark, {"shown": [str(finding.pk)], "drop": [str(finding.pk)]})
        assert not Finding.objects.get(pk=finding.pk).drop
        client.post(mark, {"shown": [finding.public_id], "drop": [finding.public_id]})
        assert Finding.objects.get(pk=finding.pk).drop


class TestMembers:
    def test_show_and_take_a_mem_id(self, alice, acme, acme_member):
        membership = Membership.objects.get(user=acme_member, organisation=acme)
        client = api(alice)
        listed = client.get(f"/api/v1/organisations/{acme.public_id}/members").json()["results"]
        assert membership.public_id in {m["id"] for m in listed}
        assert all(is_public_id(m["id"], "mem") for m in listed)
        url = f"/api/v1/organisations/{acme.public_id}/members/{membership.public_id}"
        changed = client.patch(url, {"role": "viewer"}, format="json")
        assert changed.status_code == 200 and changed.json()["role"] == "viewer"

    def test_the_integer_route_no_longer_answers(self, alice, acme, acme_member):
        membership = Membership.objects.get(user=acme_member, organisation=acme)
        path = f"/api/v1/organisations/{acme.public_id}/members/{membership.pk}"
        assert_integer_route_is_gone(api(alice).delete(path), path)
        assert Membership.objects.filter(pk=membership.pk).exists()

    def test_another_organisations_member_answers_as_an_unknown_one(self, alice, acme, bob, bolt):
        bobs = Membership.objects.get(user=bob, organisation=bolt)
        base = f"/api/v1/organisations/{acme.public_id}/members"
        client = api(alice)
        theirs = client.delete(f"{base}/{bobs.public_id}")
        unknown = client.delete(f"{base}/{UNKNOWN['mem']}")
        assert theirs.status_code == 404
        assert same_answer(theirs, unknown)
        assert Membership.objects.filter(pk=bobs.pk).exists()

    def test_an_invitation_is_answered_with_an_inv_id(self, alice, acme):
        response = api(alice).post(
            f"/api/v1/organisations/{acme.public_id}/invitations",
            {"email": "new@example.test", "role": "viewer"},
            format="json",
            HTTP_IDEMPOTENCY_KEY="invite-new-person",
        )
        assert response.status_code == 201, response.content
        assert is_public_id(response.json()["id"], "inv")


class TestNotifications:
    def test_are_shown_and_marked_read_by_ntf_id(self, alice, acme):
        first, _second = notify(acme, 2)
        url = f"/api/v1/organisations/{acme.public_id}/notifications"
        client = api(alice)
        ids = {n["id"] for n in client.get(url).json()["results"]}
        assert first.public_id in ids and all(is_public_id(i, "ntf") for i in ids)
        assert client.post(url, {"ids": [first.public_id]}, format="json").json() == {
            "marked": 1,
            "unread": 1,
        }

    def test_an_integer_id_is_refused_where_it_is(self, alice, acme):
        (first,) = notify(acme)
        response = api(alice).post(
            f"/api/v1/organisations/{acme.public_id}/notifications", {"ids": [first.pk]}, format="json"
        )
        assert response.status_code == 422
        assert response["Content-Type"] == PROBLEM
        (error,) = response.json()["errors"]
        assert (error["pointer"], error["code"]) == ("/ids/0", "invalid_public_id")
        assert notification_unread_count(organisation=acme) == 1

    def test_another_organisations_notification_is_marked_as_an_unknown_one_is(self, alice, acme, bolt):
        (theirs,) = notify(bolt)
        url = f"/api/v1/organisations/{acme.public_id}/notifications"
        client = api(alice)
        foreign = client.post(url, {"ids": [theirs.public_id]}, format="json")
        unknown = client.post(url, {"ids": [UNKNOWN["ntf"]]}, format="json")
        assert foreign.json() == unknown.json() == {"marked": 0, "unread": 0}
        assert notification_unread_count(organisation=bolt) == 1

    def test_the_page_marks_one_read_by_its_public_id(self, acme, acme_viewer):
        first, _second = notify(acme, 2)
        client = Client()
        client.force_login(acme_viewer)
        page = client.get(reverse("common:notifications", kwargs={"org_id": acme.public_id}))
        assert f'name="id" value="{first.public_id}"' in page.content.decode()
        url = reverse("common:notifications_read", kwargs={"org_id": acme.public_id})
        assert client.post(url, {"id": first.public_id}).status_code == 302
        assert Notification.objects.get(pk=first.pk).read_at is not None
        assert notification_unread_count(organisation=acme) == 1


class TestWebhookDeliveries:
    def test_are_listed_with_a_dlv_id(self, alice, acme):
        endpoint = WebhookEndpoint.objects.create(
            organisation=acme, url="http://127.0.0.1:9/hook", secret="s" * 32, event_kinds=["*"]
        )
        delivery = WebhookDelivery.objects.create(endpoint=endpoint, kind="job.succeeded", payload={})
        response = api(alice).get(
            f"/api/v1/organisations/{acme.public_id}/webhooks/{endpoint.public_id}/deliveries"
        )
        assert response.status_code == 200
        (shown,) = response.json()["results"]
        assert shown["id"] == delivery.public_id and is_public_id(shown["id"], "dlv")
