"""Grants carry opaque public ids (``gnt_…``, issue 13 item 9): no integer grant key leaves.

A license bought through the API is followed through every answer that names its grant: the
order, the license (list and detail), the training licenses, a job submitted under it (202,
list, detail, metrics), refusals whose messages name the license, the job notification, the
job's receipt body, the job form, the job page and the provider's access log (page and CSV).
The grant's integer key is moved to a number that no other value in these answers takes, so
"the number appears nowhere" is a real check; the positive control shows it would be found.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from common.public_ids import is_public_id
from custody.models import Grant
from marketplace.models import License
from tests.factories import DEFAULT_PASSWORD
from tests.marketplace.catalog.conftest import sealed_rows, terms_doc  # noqa: F401
from tests.marketplace.orders.conftest import cora, fund, market  # noqa: F401
from tests.training.conftest import TINY_HP, job_body
from training.models import BaseModel, TrainingJob
from training.receipts import receipt_body

# What the grant's integer key is moved to: a number no id, count or price in these answers has.
GRANT_PK = 7_654_321
JOBS = "/api/v1/training/jobs"


def _next_grant_pk(value: int) -> None:
    """Make the next grant row take ``value`` as its integer key (Postgres or SQLite)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT setval(pg_get_serial_sequence('custody_grant', 'id'), %s)", [value - 1])
        else:
            cursor.execute("DELETE FROM sqlite_sequence WHERE name = 'custody_grant'")
            cursor.execute(
                "INSERT INTO sqlite_sequence (name, seq) VALUES ('custody_grant', %s)", [value - 1]
            )


def _leaks(text: str, pk: int) -> list[str]:
    """Every place the integer ``pk`` stands as a number of its own in ``text``."""
    return [
        text[max(m.start() - 40, 0) : m.end() + 40] for m in re.finditer(rf"(?<![\w.]){pk}(?![\w.])", text)
    ]


def _grant_fields(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """(path, value) of every key that names a grant, anywhere in a JSON document."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("grant", "grant_id"):
                found.append((f"{path}/{key}", item))
            found += _grant_fields(item, f"{path}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _grant_fields(item, f"{path}/{index}")
    return found


@pytest.fixture
def bought(market, fund, bolt, token_for, bob) -> tuple[Any, dict[str, Any], Grant]:  # noqa: F811
    """A trainer API client, the order it placed (the API's answer) and the license's grant."""
    client = token_for(bob, bolt, ["read", "order", "train"])
    offer = market("fixed")
    fund(bolt, 60_000)
    _next_grant_pk(GRANT_PK)
    response = client.post(
        "/api/v1/orders", {"offer_id": offer.public_id}, format="json", HTTP_IDEMPOTENCY_KEY="grant-ids-1"
    )
    assert response.status_code == 201, response.content
    order = response.json()
    grant = License.objects.select_related("grant").get(ref=order["license_ref"]).grant
    assert grant.pk == GRANT_PK  # the move took: the number below is the grant's key
    return client, order, grant


class TestNoIntegerGrantIdLeaves:
    def test_the_positive_control_finds_the_number(self):
        assert _leaks(json.dumps({"grant_id": GRANT_PK}), GRANT_PK)
        assert _leaks(f"License {GRANT_PK} was revoked.", GRANT_PK)
        assert not _leaks(f"gnt_{GRANT_PK}abcdef01 cost 1.{GRANT_PK}", GRANT_PK)

    def test_no_api_answer_names_the_grant_by_its_integer_key(self, bought, bob, bolt, alice, acme):
        client, order, grant = bought
        answers: dict[str, Any] = {"order": order}
        ref = order["license_ref"]
        answers["licenses"] = client.get("/api/v1/licenses").json()
        answers["license"] = client.get(f"/api/v1/licenses/{ref}").json()
        answers["training_licenses"] = client.get("/api/v1/training/licenses").json()
        submitted = client.post(JOBS, _body(grant), format="json")
        assert submitted.status_code == 202, submitted.content
        job = submitted.json()
        answers["job"] = job
        answers["jobs"] = client.get(JOBS).json()
        answers["job_detail"] = client.get(f"{JOBS}/{job['id']}").json()
        answers["metrics"] = client.get(f"{JOBS}/{job['id']}/metrics").json()
        # Refusals whose messages name the license.
        refusals = {
            "purpose": _body(grant, purpose="weapons"),
            "epochs": _body(grant, hyperparameters={**TINY_HP, "epochs": 99}),
            "old_grant_id": {**{k: v for k, v in _body(grant).items() if k != "license"}, "grant": GRANT_PK},
        }
        for name, body in refusals.items():
            refused = client.post(JOBS, body, format="json")
            assert refused.status_code in (404, 409, 422), (name, refused.content)
            answers[f"refused_{name}"] = refused.json()
        answers["notifications"] = client.get(f"/api/v1/organisations/{bolt.public_id}/notifications").json()
        queued = TrainingJob.objects.select_related("grant", "organisation", "base").get(public_id=job["id"])
        answers["receipt_body"] = receipt_body(queued, version=grant.version)

        text = json.dumps(answers, default=str)
        assert _leaks(text, GRANT_PK) == []
        # Every field that names a grant names it by its public id.
        fields = _grant_fields(answers)
        assert {path for path, _ in fields} >= {
            "/licenses/results/0/grant_id",
            "/license/grant_id",
            "/job/grant_id",
            "/jobs/results/0/grant_id",
            "/job_detail/grant_id",
            "/notifications/results/0/payload/grant",
            "/receipt_body/grant",
        }, fields
        assert all(is_public_id(value, "gnt") for _, value in fields), fields
        assert {value for _, value in fields} == {grant.public_id}
        assert [item["id"] for item in answers["training_licenses"]["results"]] == [grant.public_id]
        assert answers["refused_old_grant_id"]["code"] == "training.license_not_found"

    def test_no_page_names_the_grant_by_its_integer_key(self, bought, bob, alice, acme, bolt):
        client, _order, grant = bought
        submitted = client.post(JOBS, _body(grant), format="json")
        assert submitted.status_code == 202, submitted.content
        job_id = submitted.json()["id"]
        trainer = Client()
        assert trainer.login(username=bob.username, password=DEFAULT_PASSWORD)
        provider = Client()
        assert provider.login(username=alice.username, password=DEFAULT_PASSWORD)
        pages = {
            "job_form": trainer.get("/training/jobs/new/"),
            "job": trainer.get(f"/training/jobs/{job_id}/"),
            "access_log": provider.get("/portal/access-log/"),
            "access_log_csv": provider.get("/portal/access-log/export/"),
        }
        for name, page in pages.items():
            assert page.status_code == 200, (name, page.status_code)
            body = b"".join(page.streaming_content) if page.streaming else page.content  # type: ignore[attr-defined]
            text = body.decode()
            # The job page names the license by its reference; the others carry the grant's id.
            assert (grant.external_ref if name == "job" else grant.public_id) in text, name
            assert _leaks(text, GRANT_PK) == [], name


def _body(grant: Grant, **overrides: Any) -> dict[str, Any]:
    """A job body the fixture's terms permit (LoRA on the tiny base; research)."""
    return job_body(grant, _tiny(), **{"template": "causal_lm_lora", **overrides})


def _tiny() -> BaseModel:
    return BaseModel.objects.get(name="gpt2-tiny", owner=None)
