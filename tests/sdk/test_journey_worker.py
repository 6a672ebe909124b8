"""The getting-started page, run: a new token to a downloaded, verified artifact, through a real worker.

The five SDK calls of sdk/README.md ("From a token to a verified model"): search (its results
carry offers and prices), order, submit (under the order's license ref), follow, download (which
verifies the receipt against the published keys and every file of the archive against the receipt).
"""

from __future__ import annotations

import json
import time

import pytest
from sealroom import Client, Job

from marketplace.services import catalog
from marketplace.services.funding import topup_record
from tests.conftest import make_token
from tests.marketplace.catalog.conftest import terms_doc
from tests.sdk.conftest import TRAINER_SCOPES
from tests.training.conftest import TINY_HP
from tests.training.test_worker_jobs import sealed, shared_dirs  # noqa: F401 - a fixture

pytestmark = pytest.mark.worker

RECORDS = [{"text": f"Depot {i % 7} note {i}: the pallet left the dock on time."} for i in range(48)]


@pytest.mark.timeout(1500)
def test_a_new_token_reaches_a_verified_artifact_in_five_calls(
    shared_dirs,  # noqa: F811
    live_server,
    alice,
    acme,
    bob,
    bolt,
    ops,
    tmp_path,
):
    version = sealed(alice, acme, RECORDS)
    listing = catalog.listing_create(
        actor=alice, version=version, title=f"Depot notes {time.time_ns()}", domain_tags=["logistics"]
    )
    terms = terms_doc(
        permission={"purposes": ["research"], "job_templates": ["causal_lm"], "weights_may_leave": True},
        duty={"release_gate": {"max_exposure": 30.0}},
    )
    catalog.offer_create(
        actor=alice,
        listing=listing,
        name="Research",
        terms=terms,
        price={"model": "fixed", "unit_price": "100.00"},
    )
    catalog.listing_publish(actor=alice, listing=listing)
    topup_record(organisation=bolt, amount=50_000, currency="EUR", external_ref="bank-sdk-1", actor=ops)
    client = Client(token=make_token(bob, bolt, TRAINER_SCOPES), base_url=live_server.url)

    [found] = client.search_catalog("depot")  # 1: the results carry their offers and prices
    order = client.order(found.offers[0].id)  # 2
    assert order.license_ref is not None
    job = client.submit_job(  # 3: under the license ref the order returned
        license=order.license_ref, template="causal_lm", base="gpt2-tiny", hyperparameters=dict(TINY_HP)
    )
    seen: list[Job] = []
    job = client.follow_job(job.id, interval=2.0, timeout=1200, on_update=seen.append)  # 4
    archive = client.download_artifact(job.id, tmp_path)  # 5: raises unless the receipt verifies

    assert job.succeeded, (job.failure_code, job.failure_reason)
    assert "running" in [update.state for update in seen]
    assert seen[-1].state == "succeeded"
    receipt = json.loads((tmp_path / f"job-{job.id}-receipt.json").read_text())["receipt"]
    assert receipt["merkle_root"] == version.merkle_root
    assert receipt["grant"] == client.get_license(order.license_ref).grant_id
    assert receipt["platform_tokens_trained"] == job.tokens_trained > 0
    assert archive.stat().st_size > 0
