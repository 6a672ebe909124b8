"""The SDK submits a job under the license reference an order returned, idempotently (live server)."""

from __future__ import annotations

import re

from sealroom import Client

from common.models import IdempotencyRecord
from tests.conftest import make_token
from tests.sdk.conftest import TRAINER_SCOPES, run_cli
from training.models import TrainingJob


def licensed(trainer: Client, market, fund, bolt) -> tuple[str, str]:
    """Order a fixed-price offer; returns (order ref, license ref)."""
    offer = market(price="fixed")
    fund(bolt, 100_000)
    order = trainer.order(offer.public_id)
    assert order.license_ref is not None
    return order.ref, order.license_ref


def submit(trainer: Client, license: str, **kwargs):
    return trainer.submit_job(
        license=license,
        template="causal_lm_lora",
        base="gpt2-tiny",
        hyperparameters={"epochs": 1},
        purpose="research",
        **kwargs,
    )


class TestSubmitJob:
    def test_submits_under_the_license_ref_and_the_job_names_it(self, trainer: Client, market, fund, bolt):
        _order_ref, license_ref = licensed(trainer, market, fund, bolt)
        job = submit(trainer, license_ref)
        assert job.state == "queued"
        assert job.license == license_ref
        assert TrainingJob.objects.get().grant.external_ref == license_ref

    def test_an_order_ref_resolves_to_its_license(self, trainer: Client, market, fund, bolt):
        order_ref, license_ref = licensed(trainer, market, fund, bolt)
        assert submit(trainer, order_ref).license == license_ref

    def test_a_retry_with_the_same_key_is_the_same_job(self, trainer: Client, market, fund, bolt):
        _order_ref, license_ref = licensed(trainer, market, fund, bolt)
        first = submit(trainer, license_ref, idempotency_key="submit-retry-0001")
        again = submit(trainer, license_ref, idempotency_key="submit-retry-0001")
        assert again.id == first.id
        assert TrainingJob.objects.count() == 1

    def test_each_call_sends_its_own_key(self, trainer: Client, market, fund, bolt):
        _order_ref, license_ref = licensed(trainer, market, fund, bolt)
        submit(trainer, license_ref)
        submit(trainer, license_ref)
        assert TrainingJob.objects.count() == 2
        keys = IdempotencyRecord.objects.filter(endpoint="training.jobs.submit").values_list("key", flat=True)
        assert len(set(keys)) == 2


class TestSubmitMixedJob:
    def test_mixes_two_licenses_by_weight_and_a_conflict_names_each_term(
        self, trainer: Client, market, fund, bolt
    ):
        from sealroom.errors import ApiError

        licenses = [licensed(trainer, market, fund, bolt)[1] for _ in range(2)]
        job = trainer.submit_mixed_job(
            licenses=[(licenses[0], 70), (licenses[1], 30)],
            template="causal_lm_lora",
            base="gpt2-tiny",
            hyperparameters={"epochs": 1},
            purpose="research",
        )
        assert job.state == "queued"
        assert [(x["license"], x["weight_bps"]) for x in job.raw["licenses"]] == [
            (licenses[0], 7000),
            (licenses[1], 3000),
        ]
        assert all(x["grant_id"].startswith("gnt_") for x in job.raw["licenses"])
        try:
            trainer.submit_mixed_job(
                licenses=[(licenses[0], 1), (licenses[1], 1)],
                template="causal_lm_lora",
                base="gpt2-tiny",
                purpose="commercial",
            )
        except ApiError as error:
            assert error.code == "training.licenses_incompatible"
            assert [e.pointer for e in error.errors] == [
                "/licenses/0/terms/purposes",
                "/licenses/1/terms/purposes",
            ]
        else:
            raise AssertionError("a purpose no license permits was admitted")
        assert TrainingJob.objects.count() == 1


class TestTheCommand:
    def test_search_shows_offers_and_submit_runs_under_the_license(
        self, live_server, bob, bolt, market, fund
    ):
        offer = market(price="fixed")
        fund(bolt, 100_000)
        token = make_token(bob, bolt, TRAINER_SCOPES)
        found = run_cli("catalog", "search", url=live_server.url, token=token)
        assert f"{offer.public_id}: 500.00 EUR" in found.stdout, found.stdout
        ordered = run_cli("order", offer.public_id, url=live_server.url, token=token)
        license_ref = re.search(r"license: (lic_\w+)", ordered.stdout)
        assert license_ref is not None, ordered.stdout
        args = ["jobs", "submit", "--license", license_ref.group(1), "--template", "causal_lm_lora"]
        args += ["--base", "gpt2-tiny", "--hp", "epochs=1", "--purpose", "research"]
        first = run_cli(*args, "--idempotency-key", "cli-submit-0001", url=live_server.url, token=token)
        again = run_cli(*args, "--idempotency-key", "cli-submit-0001", url=live_server.url, token=token)
        assert first.returncode == again.returncode == 0, first.stderr + again.stderr
        assert f"under license {license_ref.group(1)}" in first.stdout
        assert TrainingJob.objects.count() == 1
