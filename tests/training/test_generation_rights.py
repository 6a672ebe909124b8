"""The default allocation of a model-generated version (issue 17 item 2): the source's holders and
the model's trainer, in the shares the source terms state (30% to the trainer by default), exactly
10,000 basis points, and a sale split by it pays each holder exactly."""

from __future__ import annotations

from fractions import Fraction

import pytest

from custody.models import Dataset, DatasetVersion
from marketplace.ledger import split
from marketplace.services.rights import allocation_in_force, allocation_shares
from marketplace.services.synthetic_rights import DEFAULT_MODEL_SHARE_BPS


def synthetic_of(source: DatasetVersion, owner, **provenance) -> DatasetVersion:
    dataset = Dataset.objects.create(owner=owner, name="Synthetic", slug=f"synthetic-{source.pk}")
    return DatasetVersion.objects.create(
        dataset=dataset,
        number=1,
        provenance={"model_generated": True, "source_version": source.public_id, **provenance},
    )


def test_the_trainer_gets_the_default_share_and_the_source_holders_the_rest(sealed_version, acme, bolt):
    synthetic = synthetic_of(sealed_version, bolt)
    shares = allocation_shares(allocation_in_force(version=synthetic))
    assert shares == {acme.pk: 10_000 - DEFAULT_MODEL_SHARE_BPS, bolt.pk: DEFAULT_MODEL_SHARE_BPS}


def test_the_source_terms_share_is_used_and_a_sale_pays_exactly(sealed_version, acme, bolt):
    synthetic = synthetic_of(sealed_version, bolt, model_share_bps=2_501)
    shares = allocation_shares(allocation_in_force(version=synthetic))
    assert shares == {acme.pk: 7_499, bolt.pk: 2_501}
    paid = split(100_003, shares, 500)
    assert sum(paid.parts.values()) + paid.fee == 100_003
    for holder, bps in shares.items():
        exact = Fraction(100_003 * 9_500, 10_000) * bps / 10_000
        assert abs(paid.parts[holder] - exact) < 1


@pytest.mark.parametrize("provenance", [{}, {"model_generated": False}])
def test_an_uploaded_version_keeps_the_contribution_default(sealed_version, acme, bolt, provenance):
    # Negative control: without the model-generated mark, the owner of an empty version holds all.
    dataset = Dataset.objects.create(owner=bolt, name="Plain", slug="plain")
    plain = DatasetVersion.objects.create(dataset=dataset, number=1, provenance=provenance)
    assert allocation_shares(allocation_in_force(version=plain)) == {bolt.pk: 10_000}
