"""Who is paid for a custody model (issue 16): a student's teacher's holders, and a model trained on
several versions, each version weighed by the tokens its job read from it.

Every figure is checked to the minor unit on an odd amount (100,003 minor units, a 10 % fee): the
expected parts are worked out by hand below, so a split that lost the teacher or the second
version, or rounded elsewhere, fails.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from fractions import Fraction
from typing import Any, cast

import pytest

from common.models import Organisation
from custody import services as custody
from custody.models import CustodyModel, DatasetVersion, Grant, UsageKind
from custody.services.models_custody import custody_model_record, model_license_use_record
from marketplace.exceptions import TermsInvalid
from marketplace.ledger import escrow_account, payable_account, platform_account
from marketplace.model_terms import model_terms_validate
from marketplace.models import License, Listing, Posting, Settlement, SettlementLine
from marketplace.services.model_listings import (
    model_license_buy,
    model_listing_create,
    model_rights,
    model_rights_basis,
)
from marketplace.services.settlement import usage_settle
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.marketplace.orders.conftest import use
from tests.marketplace.orders.test_models_listings import terms

pytestmark = pytest.mark.django_db

# 100.00 per million tokens: 10,000,300 tokens cost exactly 100,003 minor units.
PRICE = "100.00"
TOKENS = 10_000_300
AMOUNT = 100_003


def org(name: str, *, provider: bool = False) -> Organisation:
    return cast(Organisation, OrganisationFactory(name=name, is_provider=provider, is_trainer=not provider))


def admin_of(organisation: Organisation, username: str) -> Any:
    user = UserFactory(username=username)
    MembershipFactory(user=user, organisation=organisation, role="admin")
    return user


@pytest.fixture
def eve(db) -> Organisation:
    """The student's trainer."""
    return org("Eve Labs")


@pytest.fixture
def finn(db) -> Organisation:
    """The student's data holder."""
    return org("Finn Data", provider=True)


@pytest.fixture
def gus(db) -> Organisation:
    """The buyer of the student's inference."""
    return org("Gus Apps")


@pytest.fixture(autouse=True)
def _fee(settings) -> None:
    settings.MARKETPLACE_FEE_BPS = 1000


def model_terms(model_share_bps: int, **changes: Any) -> dict[str, Any]:
    doc = terms(model_share_bps=model_share_bps, **changes)
    doc["inference"] = {**doc["inference"], "price_per_million_tokens": PRICE, "cap_tokens": 10**10}
    return doc


def record(
    job_ref: str,
    trainer: Organisation,
    versions: Sequence[DatasetVersion],
    *,
    artifact: str,
    extra: Sequence[Mapping[str, Any]] = (),
    lineage: Sequence[Mapping[str, Any]] | None = None,
) -> CustodyModel:
    """A custody model as training records it: one lineage entry per version, then ``extra``."""
    entries = (
        list(lineage)
        if lineage is not None
        else [
            {"version": v.public_id, "merkle_root": v.merkle_root, "license": f"lic_{v.pk}"} for v in versions
        ]
    )
    return custody_model_record(
        job_ref=job_ref,
        version=versions[0],
        trainer=trainer,
        artifact_name=artifact,
        artifact_sha256="cd" * 32,
        receipt_sha256="ef" * 32,
        task="causal_lm",
        template="distill_causal_lm" if extra else "causal_lm",
        base_name="gpt2-tiny",
        metrics={"eval_loss": 2.5},
        lineage=[*entries, *extra],
    )


def settlement_doc(
    teacher: CustodyModel, *, share_bps: int, licenses: Sequence[str] = ("lic_t",)
) -> dict[str, Any]:
    """The lineage entry of a student: ``teacher_settlement``'s output (distillation.py) as stored."""
    return {
        "teacher": teacher.job_ref,
        "settlement": {
            "teacher_model": teacher.job_ref,
            "licenses": [{"ref": ref, "grant": "grt_0000000000000000"} for ref in licenses],
            "dataset_versions": [teacher.version.public_id],
            "share_bps": share_bps,
        },
    }


def shares_of(weights: Mapping[int, int]) -> dict[int, Fraction]:
    total = sum(weights.values())
    return {holder: Fraction(weight, total) for holder, weight in weights.items()}


def settle_one_sale(
    listing: Listing, buyer: Organisation, fund: Callable[..., None]
) -> tuple[Settlement, dict[int, int], License]:
    """Buy TOKENS of inference, meter them all and settle: the settlement and its lines by holder."""
    fund(buyer, 2 * AMOUNT)
    buyer_admin = admin_of(buyer, f"admin-{buyer.pk}")
    license_ = model_license_buy(actor=buyer_admin, buyer=buyer, listing=listing, tokens=TOKENS)
    assert license_.escrowed == AMOUNT
    usage = use(license_, "inf_00000000000000a1", UsageKind.TOKENS_INFERRED, TOKENS)
    settlement = usage_settle(usage_id=usage.pk)
    assert settlement is not None and settlement.amount == AMOUNT
    lines = {line.holder_id: line.amount for line in SettlementLine.objects.filter(settlement=settlement)}
    return settlement, lines, license_


def assert_ledger_balanced(settlement: Settlement, license_: License, lines: Mapping[int, int]) -> None:
    """The release's postings: escrow gives the amount; each holder's payable and the fee take it all."""
    assert settlement.transaction is not None
    postings = {p.account_id: p.amount for p in Posting.objects.filter(transaction=settlement.transaction)}
    assert sum(postings.values()) == 0
    assert postings[escrow_account(order_ref=license_.order.ref, currency="EUR").pk] == -AMOUNT
    holders = Organisation.objects.in_bulk(list(lines))
    for holder, part in lines.items():
        assert postings[payable_account(organisation=holders[holder], currency="EUR").pk] == part
    assert postings[platform_account(kind="platform_fee", currency="EUR").pk] == settlement.fee
    assert sum(lines.values()) == AMOUNT - settlement.fee


@pytest.fixture
def teacher(bolt, acme, cora, sealed_rows) -> CustodyModel:
    """Bolt's model on a version Acme (3,000 tokens) and Cora (1,000) contributed: 75 / 25 of its data."""
    return record(
        "job_000000000000007e", bolt, [sealed_rows(tokens={acme: 3000, cora: 1000})], artifact="t-1"
    )


@pytest.fixture
def teacher_listing(bob, bolt, teacher) -> Listing:
    """The teacher listed with a 30 % model share (its own holders: Bolt 30 %, Acme 52.5 %, Cora 17.5 %)."""
    return model_listing_create(
        actor=bob,
        organisation=bolt,
        model_ref=teacher.job_ref,
        title="Teacher",
        terms=model_terms(3000, distillation_allowed=True, distill_share_bps=2500),
    )


class TestTeacherShare:
    def test_a_students_inference_pays_the_teachers_holders_to_the_unit(
        self, teacher, teacher_listing, eve, finn, gus, bolt, acme, cora, sealed_rows, fund
    ):
        student_version = sealed_rows(tokens={finn: 1000})
        student = record(
            "job_00000000000000c1",
            eve,
            [student_version],
            artifact="s-1",
            extra=[settlement_doc(teacher, share_bps=2000)],
        )
        listing = model_listing_create(
            actor=admin_of(eve, "erin"),
            organisation=eve,
            model_ref=student.job_ref,
            title="Student",
            terms=model_terms(4000),
        )
        settlement, lines, license_ = settle_one_sale(listing, gus, fund)
        # Fee 10 % of 100,003 = 10,000.3; holders 90,002.7. The teacher's 20 % (18,000.54) splits as
        # its own rights: Bolt 30 % = 5,400.162, Acme 52.5 % = 9,450.2835, Cora 17.5 % = 3,150.0945.
        # The student's 80 % (72,002.16): Eve (trainer) 40 % = 28,800.864, Finn (data) 60 % = 43,201.296.
        # Floors sum to 100,001; the two largest remainders (Eve .864, the fee .3) get the last units.
        assert lines == {bolt.pk: 5400, acme.pk: 9450, cora.pk: 3150, eve.pk: 28801, finn.pk: 43201}
        assert settlement.fee == 10_001
        assert_ledger_balanced(settlement, license_, lines)
        # Frozen at the sale: the order's weights are the ones the settlement used.
        assert license_.order.shares == model_rights(listing)

    def test_the_share_recorded_at_submit_sets_the_teachers_part(
        self, teacher, teacher_listing, eve, finn, bolt, acme, cora, sealed_rows
    ):
        student = record(
            "job_00000000000000c2",
            eve,
            [sealed_rows(tokens={finn: 1000})],
            artifact="s-2",
            extra=[settlement_doc(teacher, share_bps=5000)],
        )
        listing = model_listing_create(
            actor=admin_of(eve, "erin"),
            organisation=eve,
            model_ref=student.job_ref,
            title="S",
            terms=model_terms(0),
        )
        shares = shares_of(model_rights(listing))
        half = Fraction(1, 2)
        assert shares == {
            bolt.pk: half * Fraction(3, 10),
            acme.pk: half * Fraction(7, 10) * Fraction(3, 4),
            cora.pk: half * Fraction(7, 10) * Fraction(1, 4),
            finn.pk: half,
        }

    def test_a_teacher_licensed_to_the_student_splits_as_its_license_froze(
        self, teacher, teacher_listing, eve, finn, sealed_rows, fund
    ):
        """The licensee path: the student's job ran under a model license of the teacher; the share
        is the teacher's terms' ``distill_share_bps`` (the license's grant carries it, and it wins
        over the share recorded at submit) and its holders are the ones that license's order froze."""
        fund(eve, 10_000)
        erin = admin_of(eve, "erin")
        teacher_license = model_license_buy(actor=erin, buyer=eve, listing=teacher_listing, tokens=1000)
        grant = Grant.objects.get(pk=teacher_license.grant_id)
        assert grant.terms["distill_share_bps"] == 2500
        doc = settlement_doc(teacher, share_bps=2000)
        doc["settlement"]["model_license"] = {"ref": teacher_license.ref, "grant": grant.public_id}
        student = record(
            "job_00000000000000c3", eve, [sealed_rows(tokens={finn: 1000})], artifact="s-3", extra=[doc]
        )
        listing = model_listing_create(
            actor=erin, organisation=eve, model_ref=student.job_ref, title="S", terms=model_terms(2000)
        )
        shares, basis = model_rights_basis(listing)
        exact = shares_of(shares)
        frozen = shares_of(teacher_license.order.shares)
        quarter = Fraction(1, 4)
        assert exact[finn.pk] == (1 - quarter) * Fraction(8, 10)
        assert exact[eve.pk] == (1 - quarter) * Fraction(2, 10)
        for holder, part in frozen.items():
            assert exact[holder] == quarter * part
        assert basis["teacher"]["split_as"] == f"license {teacher_license.ref}"

    def test_custodys_metering_of_the_model_license_names_the_teacher(
        self, teacher, teacher_listing, eve, finn, bolt, acme, cora, sealed_rows, fund
    ):
        """A student whose lineage carries no settlement: custody metered the teacher's model license
        for the student's job (``model_license_use_record``), which names the teacher and its terms."""
        fund(eve, 10_000)
        erin = admin_of(eve, "erin")
        teacher_license = model_license_buy(actor=erin, buyer=eve, listing=teacher_listing, tokens=1000)
        grant = Grant.objects.get(pk=teacher_license.grant_id)
        student = record(
            "job_00000000000000c7", eve, [sealed_rows(tokens={finn: 1000})], artifact="training-job-77"
        )
        model_license_use_record(grant=grant, consumer_ref=student.artifact_name, use="distill", tokens=500)
        listing = model_listing_create(
            actor=erin, organisation=eve, model_ref=student.job_ref, title="S", terms=model_terms(0)
        )
        quarter = Fraction(1, 4)
        assert shares_of(model_rights(listing)) == {
            bolt.pk: quarter * Fraction(3, 10),
            acme.pk: quarter * Fraction(21, 40),
            cora.pk: quarter * Fraction(7, 40),
            finn.pk: 1 - quarter,
        }

    def test_a_license_keeps_the_weights_it_froze_at_the_sale(
        self, teacher, teacher_listing, eve, finn, gus, sealed_rows, fund
    ):
        fund(eve, 10_000)
        erin = admin_of(eve, "erin")
        teacher_license = model_license_buy(actor=erin, buyer=eve, listing=teacher_listing, tokens=1000)
        student = record(
            "job_00000000000000c8", eve, [sealed_rows(tokens={finn: 1000})], artifact="training-job-78"
        )
        listing = model_listing_create(
            actor=erin, organisation=eve, model_ref=student.job_ref, title="S", terms=model_terms(0)
        )
        fund(gus, 10_000)
        sold = model_license_buy(actor=admin_of(gus, "gil"), buyer=gus, listing=listing, tokens=1000)
        assert sold.order.shares == {finn.pk: 1}
        # Custody meters the teacher's use afterwards: a sale made now pays the teacher, the one made
        # before keeps what it froze.
        grant = Grant.objects.get(pk=teacher_license.grant_id)
        model_license_use_record(grant=grant, consumer_ref=student.artifact_name, use="distill", tokens=500)
        assert Fraction(model_rights(listing)[finn.pk], sum(model_rights(listing).values())) == Fraction(3, 4)
        sold.order.refresh_from_db()
        assert sold.order.shares == {finn.pk: 1}

    def test_a_teacher_of_a_teacher_is_paid_through_the_chain(
        self, teacher, teacher_listing, eve, finn, bolt, acme, cora, sealed_rows
    ):
        middle = record(
            "job_00000000000000c4",
            eve,
            [sealed_rows(tokens={finn: 1000})],
            artifact="s-4",
            extra=[settlement_doc(teacher, share_bps=2000)],
        )
        last = record(
            "job_00000000000000c5",
            eve,
            [sealed_rows(tokens={finn: 1000})],
            artifact="s-5",
            extra=[settlement_doc(middle, share_bps=2000, licenses=["lic_m"])],
        )
        listing = model_listing_create(
            actor=admin_of(eve, "erin"),
            organisation=eve,
            model_ref=last.job_ref,
            title="L",
            terms=model_terms(0),
        )
        shares = shares_of(model_rights(listing))
        # The middle model is unlisted: no trainer share; its data (Finn) 80 %, its teacher 20 %.
        to_teacher = Fraction(2, 10) * Fraction(2, 10)
        assert shares[bolt.pk] == to_teacher * Fraction(3, 10)
        assert shares[acme.pk] == to_teacher * Fraction(21, 40)
        assert shares[cora.pk] == to_teacher * Fraction(7, 40)
        assert shares[finn.pk] == 1 - to_teacher

    def test_a_lineage_naming_itself_as_teacher_pays_no_teacher(self, eve, finn, sealed_rows):
        version = sealed_rows(tokens={finn: 1000})
        loop = {"teacher": "job_00000000000000c6", "settlement": {"teacher_model": "job_00000000000000c6"}}
        model = record("job_00000000000000c6", eve, [version], artifact="s-6", extra=[loop])
        listing = model_listing_create(
            actor=admin_of(eve, "erin"),
            organisation=eve,
            model_ref=model.job_ref,
            title="L",
            terms=model_terms(2000),
        )
        shares, basis = model_rights_basis(listing)
        assert shares_of(shares) == {eve.pk: Fraction(2, 10), finn.pk: Fraction(8, 10)}
        assert "teacher" not in basis  # the cycle is cut, not followed 8 deep


def license_grant(version: DatasetVersion, licensee: Organisation, ref: str) -> Grant:
    return custody.grant_issue(
        version=version,
        licensee_org=licensee,
        terms={"purposes": ["research"], "job_templates": ["causal_lm"], "weights_may_leave": False},
        external_ref=ref,
    )


@pytest.fixture
def two_versions(acme, cora, sealed_rows) -> tuple[DatasetVersion, DatasetVersion]:
    """Acme's version and Cora's, each 100 % its contributor's."""
    return sealed_rows(tokens={acme: 3000}), sealed_rows(tokens={cora: 1000})


def mixed_lineage(versions: Sequence[DatasetVersion], weights: Sequence[int]) -> list[dict[str, Any]]:
    return [
        {"version": v.public_id, "merkle_root": v.merkle_root, "license": f"lic_m{v.pk}", "weight_bps": w}
        for v, w in zip(versions, weights, strict=True)
    ]


class TestMixedVersions:
    def test_a_70_30_mixed_model_splits_its_data_side_by_tokens_read(
        self, two_versions, bolt, bob, acme, cora, gus, fund
    ):
        first, second = two_versions
        consumer = "training-job-9001"
        # The job read 70,000 tokens from Acme's version and 30,000 from Cora's (mixed at 50 / 50:
        # the tokens read decide, not the weights asked for).
        for version, tokens in ((first, 70_000), (second, 30_000)):
            grant = license_grant(version, bolt, f"lic_m{version.pk}")
            custody.usage_record(
                grant=grant, consumer_ref=consumer, kind=UsageKind.TOKENS_TRAINED, quantity=tokens
            )
        model = record(
            "job_00000000000000d1",
            bolt,
            two_versions,
            artifact=consumer,
            lineage=mixed_lineage(two_versions, [5000, 5000]),
        )
        listing = model_listing_create(
            actor=bob, organisation=bolt, model_ref=model.job_ref, title="Mixed", terms=model_terms(3000)
        )
        settlement, lines, license_ = settle_one_sale(listing, gus, fund)
        # Holders 90,002.7: Bolt 30 % = 27,000.81; Acme 70 % x 70 % = 44,101.323; Cora 70 % x 30 % =
        # 18,900.567; floors and the fee (10,000) sum to 100,001: Bolt (.81) and Cora (.567) get one more.
        assert lines == {bolt.pk: 27001, acme.pk: 44101, cora.pk: 18901}
        assert settlement.fee == 10_000
        assert_ledger_balanced(settlement, license_, lines)
        assert model_rights_basis(listing)[1]["weighed_by"] == "tokens_read"

    def test_without_usage_the_mixing_weights_split_it(self, two_versions, bolt, bob, acme, cora):
        model = record(
            "job_00000000000000d2",
            bolt,
            two_versions,
            artifact="training-job-9002",
            lineage=mixed_lineage(two_versions, [7000, 3000]),
        )
        listing = model_listing_create(
            actor=bob, organisation=bolt, model_ref=model.job_ref, title="Mixed", terms=model_terms(0)
        )
        assert shares_of(model_rights(listing)) == {acme.pk: Fraction(7, 10), cora.pk: Fraction(3, 10)}

    def test_each_versions_part_follows_its_own_allocation(self, bolt, bob, acme, cora, finn, sealed_rows):
        shared = sealed_rows(tokens={acme: 3000, cora: 1000})  # 75 / 25
        alone = sealed_rows(tokens={finn: 500})
        model = record(
            "job_00000000000000d3",
            bolt,
            [shared, alone],
            artifact="training-job-9003",
            lineage=mixed_lineage([shared, alone], [6000, 4000]),
        )
        listing = model_listing_create(
            actor=bob, organisation=bolt, model_ref=model.job_ref, title="Mixed", terms=model_terms(0)
        )
        assert shares_of(model_rights(listing)) == {
            acme.pk: Fraction(6, 10) * Fraction(3, 4),
            cora.pk: Fraction(6, 10) * Fraction(1, 4),
            finn.pk: Fraction(4, 10),
        }


class TestDistillShareTerm:
    def test_is_optional_and_kept_when_given(self):
        assert "distill_share_bps" not in model_terms_validate(terms(), currency="EUR")
        assert (
            model_terms_validate(terms(distill_share_bps=1500), currency="EUR")["distill_share_bps"] == 1500
        )

    @pytest.mark.parametrize("value", [-1, 10_001, "2000", True, 2.5])
    def test_points_at_a_bad_share(self, value):
        with pytest.raises(TermsInvalid) as caught:
            model_terms_validate(terms(distill_share_bps=value), currency="EUR")
        assert "/terms/distill_share_bps" in [e["pointer"] for e in caught.value.errors]
