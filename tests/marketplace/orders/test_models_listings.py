"""Model listings (issue 16 item 1): terms validation, listing a custody model, buying it through the
ledger, and the settlement of tokens_inferred paying the data's holders and the trainer exactly."""

from __future__ import annotations

from fractions import Fraction
from typing import Any, cast

import pytest

from common.models import Organisation
from custody.exceptions import NotFound as CustodyNotFound
from custody.models import CustodyModel, DatasetVersion, Grant, UsageKind
from custody.services.models_custody import custody_model_record, model_use_allowed
from marketplace.exceptions import (
    AmountInvalid,
    InsufficientFunds,
    ListingNotFound,
    ListingStateConflict,
    NotPermitted,
    OrderingRefused,
    TermsInvalid,
)
from marketplace.ledger import split
from marketplace.model_terms import model_shares, model_terms_validate
from marketplace.models import License, Listing, Settlement, SettlementLine
from marketplace.selectors_catalog import CatalogFilters, listing_search
from marketplace.services.model_listings import model_license_buy, model_listing_create
from marketplace.services.settlement import usage_settle
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.marketplace.orders.conftest import use

pytestmark = pytest.mark.django_db


def terms(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "purposes": ["research"],
        "inference": {
            "allowed": True,
            "price_per_million_tokens": "2.50",
            "currency": "EUR",
            "max_tokens_per_call": 256,
            "cap_tokens": 2_000_000,
        },
        "distillation_allowed": False,
        "generation_allowed": False,
        "fine_tune_allowed": False,
        "model_share_bps": 3000,
        "term_days": 30,
    }
    doc.update(changes)
    return doc


@pytest.fixture
def custody_model(bolt, acme, cora, sealed_rows) -> CustodyModel:
    """A model Bolt trained on a version Acme (3,000 tokens) and Cora (1,000) contributed to."""
    version: DatasetVersion = sealed_rows(tokens={acme: 3000, cora: 1000})
    return custody_model_record(
        job_ref="job_00000000000000aa",
        version=version,
        trainer=bolt,
        artifact_name="training-job-1",
        artifact_sha256="cd" * 32,
        receipt_sha256="ef" * 32,
        task="causal_lm",
        template="causal_lm",
        base_name="gpt2-tiny",
        metrics={"eval_loss": 2.5},
        lineage=[{"version": version.public_id, "merkle_root": version.merkle_root, "license": "lic_x"}],
    )


@pytest.fixture
def dyna(db) -> Organisation:
    return cast(Organisation, OrganisationFactory(name="Dyna Apps", is_provider=False, is_trainer=True))


@pytest.fixture
def dan(dyna):
    user = UserFactory(username="dan")
    MembershipFactory(user=user, organisation=dyna, role="admin")
    return user


@pytest.fixture
def listed(bob, bolt, custody_model) -> Listing:
    return model_listing_create(
        actor=bob, organisation=bolt, model_ref=custody_model.job_ref, title="Support LM", terms=terms()
    )


class TestModelTermsValidate:
    def test_normalises_the_price_to_minor_units(self):
        clean = model_terms_validate(terms(), currency="EUR")
        assert clean["inference"]["price_minor"] == 250
        assert clean["kind"] == "model" and clean["model_share_bps"] == 3000

    @pytest.mark.parametrize(
        ("changes", "pointer"),
        [
            ({"model_share_bps": 10_001}, "/terms/model_share_bps"),
            ({"model_share_bps": "3000"}, "/terms/model_share_bps"),
            ({"purposes": []}, "/terms/purposes"),
            ({"purposes": ["spying"]}, "/terms/purposes"),
            ({"distillation_allowed": "yes"}, "/terms/distillation_allowed"),
            ({"surprise": 1}, "/terms/surprise"),
            ({"term_days": 0}, "/terms/term_days"),
            ({"inference": None}, "/terms/inference"),
        ],
    )
    def test_points_at_the_bad_term(self, changes, pointer):
        with pytest.raises(TermsInvalid) as caught:
            model_terms_validate(terms(**changes), currency="EUR")
        assert pointer in [e["pointer"] for e in caught.value.errors]

    @pytest.mark.parametrize(
        ("inference", "pointer"),
        [
            ({"price_per_million_tokens": 2.5}, "/terms/inference/price_per_million_tokens"),
            ({"price_per_million_tokens": "-1"}, "/terms/inference/price_per_million_tokens"),
            ({"max_tokens_per_call": 0}, "/terms/inference/max_tokens_per_call"),
            ({"max_tokens_per_call": 100_000}, "/terms/inference/max_tokens_per_call"),
            ({"cap_tokens": 0}, "/terms/inference/cap_tokens"),
            ({"allowed": 1}, "/terms/inference/allowed"),
            ({"currency": "USD"}, "/terms/inference/currency"),
        ],
    )
    def test_points_at_the_bad_inference_term(self, inference, pointer):
        doc = terms()
        doc["inference"] = {**doc["inference"], **inference}
        with pytest.raises(TermsInvalid) as caught:
            model_terms_validate(doc, currency="EUR")
        assert pointer in [e["pointer"] for e in caught.value.errors]


class TestModelShares:
    def test_trainer_gets_the_model_share_and_holders_the_rest_by_allocation(self):
        weights = model_shares(data_shares={1: 7500, 2: 2500}, trainer_id=9, model_share_bps=3000)
        total = sum(weights.values())
        assert Fraction(weights[9], total) == Fraction(3, 10)
        assert Fraction(weights[1], total) == Fraction(7, 10) * Fraction(3, 4)
        assert Fraction(weights[2], total) == Fraction(7, 10) * Fraction(1, 4)

    def test_a_trainer_holding_data_gets_both(self):
        weights = model_shares(data_shares={9: 5000, 2: 5000}, trainer_id=9, model_share_bps=2000)
        assert Fraction(weights[9], sum(weights.values())) == Fraction(2, 10) + Fraction(8, 10) / 2

    def test_no_model_share_pays_only_the_data(self):
        assert model_shares(data_shares={1: 10_000}, trainer_id=9, model_share_bps=0) == {1: 1}


class TestModelListingCreate:
    def test_lists_the_model_with_receipt_metrics_and_lineage(self, listed, custody_model, bolt):
        assert listed.kind == "model" and listed.model_ref == custody_model.job_ref
        assert listed.provider == bolt and listed.state == "published"
        facts = listed.statistics
        assert facts["receipt_sha256"] == "ef" * 32 and facts["metrics"] == {"eval_loss": 2.5}
        assert facts["lineage"][0]["merkle_root"] == custody_model.version.merkle_root
        # The weights' hash is the custody model's, never the listing's.
        assert custody_model.artifact_sha256 not in str(facts)

    def test_stays_out_of_the_dataset_catalog(self, listed):
        assert listed not in list(listing_search(filters=CatalogFilters()))

    def test_only_the_trainer_lists_it(self, alice, acme, custody_model):
        with pytest.raises((ListingNotFound, CustodyNotFound)):
            model_listing_create(
                actor=alice, organisation=acme, model_ref=custody_model.job_ref, title="Mine", terms=terms()
            )

    def test_an_unknown_model_is_not_found(self, bob, bolt):
        with pytest.raises(CustodyNotFound):
            model_listing_create(
                actor=bob, organisation=bolt, model_ref="job_00000000000000ff", title="X", terms=terms()
            )

    def test_a_model_is_listed_once(self, listed, bob, bolt, custody_model):
        with pytest.raises(ListingStateConflict):
            model_listing_create(
                actor=bob, organisation=bolt, model_ref=custody_model.job_ref, title="Again", terms=terms()
            )

    def test_bad_terms_leave_nothing(self, bob, bolt, custody_model):
        with pytest.raises(TermsInvalid):
            model_listing_create(
                actor=bob,
                organisation=bolt,
                model_ref=custody_model.job_ref,
                title="X",
                terms=terms(purposes=[]),
            )
        assert not Listing.objects.filter(kind="model").exists()


class TestModelLicenseBuy:
    def test_escrows_the_tokens_price_and_issues_a_model_grant(self, listed, dyna, dan, fund):
        fund(dyna, 10_000)
        license_ = model_license_buy(actor=dan, buyer=dyna, listing=listed, tokens=1_000_000)
        assert license_.escrowed == 250 and license_.order.tokens_cap == 1_000_000
        grant = Grant.objects.get(pk=license_.grant_id)
        assert grant.terms["kind"] == "model" and grant.terms["model"] == listed.model_ref
        # No job can read the data under a model license.
        assert grant.terms["job_templates"] == [] and grant.terms["max_jobs"] == 0
        assert model_use_allowed(grant.terms, "inference")
        assert not model_use_allowed(grant.terms, "distill")
        assert not model_use_allowed({"inference": {"allowed": True}}, "inference")  # not a model license

    def test_is_idempotent_per_key(self, listed, dyna, dan, fund):
        fund(dyna, 10_000)
        first = model_license_buy(actor=dan, buyer=dyna, listing=listed, tokens=1000, idempotency_key="k1")
        again = model_license_buy(actor=dan, buyer=dyna, listing=listed, tokens=1000, idempotency_key="k1")
        assert first.pk == again.pk and License.objects.count() == 1

    @pytest.mark.parametrize("tokens", [0, -1, "100", True, 2_000_001])
    def test_refuses_tokens_outside_the_cap(self, listed, dyna, dan, fund, tokens):
        fund(dyna, 10_000)
        with pytest.raises(AmountInvalid) as caught:
            model_license_buy(actor=dan, buyer=dyna, listing=listed, tokens=tokens)
        assert caught.value.errors[0]["pointer"] == "/tokens"

    def test_needs_the_money(self, listed, dyna, dan):
        with pytest.raises(InsufficientFunds):
            model_license_buy(actor=dan, buyer=dyna, listing=listed, tokens=1_000_000)
        assert not License.objects.exists()

    def test_the_trainer_cannot_buy_its_own(self, listed, bolt, bob, fund):
        fund(bolt, 10_000)
        with pytest.raises(OrderingRefused):
            model_license_buy(actor=bob, buyer=bolt, listing=listed, tokens=1000)

    def test_refuses_when_inference_is_not_offered(self, bob, bolt, custody_model, dyna, dan, fund):
        doc = terms()
        doc["inference"]["allowed"] = False
        listing = model_listing_create(
            actor=bob, organisation=bolt, model_ref=custody_model.job_ref, title="No calls", terms=doc
        )
        fund(dyna, 10_000)
        with pytest.raises(NotPermitted):
            model_license_buy(actor=dan, buyer=dyna, listing=listing, tokens=1000)


class TestInferenceSettlement:
    def test_tokens_inferred_pay_holders_and_trainer_exactly_once(
        self, listed, dyna, dan, fund, acme, cora, bolt
    ):
        fund(dyna, 100_000)
        license_ = model_license_buy(actor=dan, buyer=dyna, listing=listed, tokens=2_000_000)
        assert license_.escrowed == 500
        usage = use(license_, "inf_0000000000000001", UsageKind.TOKENS_INFERRED, 1_000_000)
        settlement = usage_settle(usage_id=usage.pk)
        assert settlement is not None and settlement.amount == 250
        repeat = usage_settle(usage_id=usage.pk)  # a repeat settles nothing again
        assert repeat is not None and repeat.pk == settlement.pk
        assert Settlement.objects.filter(usage=usage).count() == 1
        lines = {line.holder_id: line.amount for line in SettlementLine.objects.filter(settlement=settlement)}
        expected = split(250, license_.order.shares, license_.order.fee_bps)
        assert lines == {k: v for k, v in expected.parts.items() if v}
        assert sum(lines.values()) + settlement.fee == 250
        holders = 250 - settlement.fee
        exact = {
            bolt.pk: Fraction(holders * 3, 10),
            acme.pk: Fraction(holders * 7 * 3, 40),
            cora.pk: Fraction(holders * 7, 40),
        }
        for holder, value in exact.items():
            assert abs(lines[holder] - value) < 1

    def test_releases_are_cumulative_and_rounded_down(self, listed, dyna, dan, fund):
        fund(dyna, 100_000)
        license_ = model_license_buy(actor=dan, buyer=dyna, listing=listed, tokens=2_000_000)
        amounts = [
            usage_settle(usage_id=use(license_, f"inf_{i:016x}", UsageKind.TOKENS_INFERRED, 3).pk).amount  # type: ignore[union-attr]
            for i in range(1, 401)
        ]
        # 1,200 tokens at 2.50 per million: 0.3 minor units in all, nothing released yet.
        assert sum(amounts) == 1200 * 250 // 1_000_000
        license_.refresh_from_db()
        assert license_.tokens_settled == 1200
