"""The provider's access log shows what each job read from each contribution (issue 15, item 1)."""

from __future__ import annotations

import pytest

from custody import services as custody
from custody.models import Contribution, GrantPurpose
from tests.marketplace.catalog.conftest import sealed_rows  # noqa: F401
from tests.marketplace.orders.conftest import cora, fund, market  # noqa: F401
from tests.portal.test_access_log import EXPORT, LOG, client_for, csv_rows, licensed  # noqa: F401

pytestmark = pytest.mark.django_db


def test_each_jobs_reads_per_contribution_are_listed_under_its_tokens(alice, acme, cora, licensed):  # noqa: F811
    grant = licensed.grant
    mine = {c.contributor_id: c for c in Contribution.objects.filter(version_id=grant.version_id)}
    custody.grant_job_reserve(grant=grant, consumer_ref="job-1")
    custody.grant_stream_open(grant=grant, consumer_ref="job-1", purpose=GrantPurpose.LICENSE)
    custody.usage_record(
        grant=grant,
        consumer_ref="job-1",
        kind="tokens_trained",
        quantity=700,
        by_contribution={mine[acme.pk].pk: 600, mine[cora.pk].pk: 100},
    )
    html = client_for(alice).get(LOG).content.decode()
    assert f'<li data-contribution="{mine[acme.pk].pk}">Acme Corpora: 600</li>' in html
    assert f'<li data-contribution="{mine[cora.pk].pk}">Cora Texts: 100</li>' in html
    assert "<td data-tokens>700<ul" in html
    [row] = csv_rows(client_for(alice).get(EXPORT))
    assert row["tokens_by_contribution"] == f"{mine[acme.pk].public_id}:600; {mine[cora.pk].public_id}:100"
