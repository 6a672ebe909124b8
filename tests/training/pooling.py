"""Shared set-up for tests of a version pooled by two organisations and licensed, metered, to Bolt.

Acme (``alice``) and Cora (``dana``, its admin) each contribute labelled records to one sealed
version; Bolt buys a metered license on it. Used by the metering and withdrawal tests.
"""

from __future__ import annotations

from typing import cast

import pytest

from common.models import Organisation, User
from custody import services as custody
from custody.models import Contribution, Dataset, DatasetVersion, UsageByContribution, UsageRecord
from marketplace.models import License
from marketplace.services import catalog
from marketplace.services.funding import topup_record
from marketplace.services.orders import order_place
from tests.custody.conftest import drain, jsonl
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.marketplace.catalog.conftest import terms_doc
from training.models import TrainingJob


@pytest.fixture
def cora(db) -> Organisation:
    return cast(Organisation, OrganisationFactory(name="Cora Texts", is_provider=True))


@pytest.fixture
def dana(cora) -> User:
    user = UserFactory(username="dana")
    MembershipFactory(user=user, organisation=cora, role="admin")
    return cast(User, user)


def contribution_put(
    actor: User, organisation: Organisation, version: DatasetVersion, records: list[dict], filename: str
) -> Contribution:
    """Upload ``records`` (labelled in ``kind``) as one completed contribution."""
    contribution = custody.contribution_start(
        actor=actor, organisation=organisation, version=version, filename=filename, metadata_fields=["kind"]
    )
    custody.contribution_part_put(contribution=contribution, number=1, data=jsonl(records))
    return custody.contribution_complete(actor=actor, contribution=contribution)


def pooled_seal(
    *,
    alice: User,
    acme: Organisation,
    dana: User,
    cora: Organisation,
    dataset: Dataset,
    acme_rows: list[dict],
    cora_rows: list[dict],
    filenames: tuple[str, str] = ("acme.jsonl", "cora.jsonl"),
) -> DatasetVersion:
    """A sealed version: Acme's rows, then Cora's (Cora invited as a contributor)."""
    version = custody.version_create(actor=alice, dataset=dataset)
    custody.contributor_invite(actor=alice, version=version, organisation=cora)
    contribution_put(alice, acme, version, acme_rows, filenames[0])
    contribution_put(dana, cora, version, cora_rows, filenames[1])
    custody.version_process(actor=alice, version=version)
    drain()
    return custody.version_seal(actor=alice, version=version)


def metered_license(
    version: DatasetVersion,
    *,
    alice: User,
    bolt: Organisation,
    bob: User,
    ops: User,
    job_templates: list[str],
    unit_price: str,
) -> License:
    """Bolt's metered license (research, weights may leave; 5 jobs, 2 epochs, 20,000 tokens),
    ``unit_price`` per million platform tokens, with 1,000,000 minor units topped up to pay it."""
    listing = catalog.listing_create(actor=alice, version=version, title="Pooled tickets")
    doc = terms_doc(
        permission={"purposes": ["research"], "job_templates": job_templates, "weights_may_leave": True},
        duty={"attribution": "Acme and Cora", "release_gate": {"max_exposure": 20.0}},
    )
    doc["constraint"] = {"max_jobs": 5, "max_epochs": 2, "max_tokens": 20_000, "term_days": 30}
    offer = catalog.offer_create(
        actor=alice,
        listing=listing,
        name="Metered",
        terms=doc,
        price={"model": "metered", "unit_price": unit_price},
    )
    catalog.listing_publish(actor=alice, listing=listing)
    topup_record(organisation=bolt, amount=1_000_000, currency="EUR", external_ref="bank-1", actor=ops)
    return License.objects.select_related("grant").get(order=order_place(buyer=bolt, offer=offer, actor=bob))


def reads_of(job: TrainingJob) -> dict[int, int]:
    """The platform tokens the job read from each contribution (contribution key -> tokens)."""
    usage = UsageRecord.objects.get(grant=job.grant, consumer_ref=job.consumer_ref, kind="tokens_trained")
    return dict(UsageByContribution.objects.filter(usage=usage).values_list("contribution", "quantity"))
