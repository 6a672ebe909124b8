"""A new co-contributor, in the browser: signs up, finds its contribution to a pooled version,
withdraws it, and follows the re-seal to the lineage page that names the job which read it.

The pooled version is prepared through the services (the owner's upload and seal are another
journey, test_flow_provider.py); the re-seal's work item is drained by the test on the database
the live server reads, as the provider journey drains ingest.
"""

from __future__ import annotations

import pytest

from common import services as common_services
from common.models import Membership, Notification, Organisation, User
from custody import services
from custody.models import ContributionWithdrawal, DatasetVersion, VersionState, WithdrawalState
from tests.custody.conftest import drain, jsonl
from tests.grants import grant_for_test

pytestmark = pytest.mark.browser

PASSWORD = "a long and quiet harbour"


def sign_in(page, live_server, username: str) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")


def put(
    user: User, organisation: Organisation, version: DatasetVersion, rows: list[str], filename: str
) -> None:
    contribution = services.contribution_start(
        actor=user, organisation=organisation, version=version, filename=filename
    )
    services.contribution_part_put(
        contribution=contribution, number=1, data=jsonl([{"text": t} for t in rows])
    )
    services.contribution_complete(actor=user, contribution=contribution)


def test_a_co_contributor_withdraws_from_the_portal_and_reads_the_lineage(
    page, shot, live_server, console_messages, alice, acme, bolt
):
    common_services.organisation_signup(
        username="nadia",
        email="nadia@example.test",
        password=PASSWORD,
        organisation_name="Nadia Notes",
        is_provider=True,
        is_trainer=False,
    )
    nadia = User.objects.get(username="nadia")
    nadia_org = Membership.objects.get(user=nadia).organisation
    dataset = services.dataset_create(actor=alice, organisation=acme, name="Pooled notes")
    version = services.version_create(actor=alice, dataset=dataset)
    services.contributor_invite(actor=alice, version=version, organisation=nadia_org)
    put(alice, acme, version, [f"Acme note {i} on a late delivery." for i in range(12)], "acme.jsonl")
    put(nadia, nadia_org, version, [f"Nadia line {i} about a broken pump." for i in range(6)], "nadia.jsonl")
    services.version_process(actor=alice, version=version)
    drain()
    version = services.version_seal(actor=alice, version=version)
    grant = grant_for_test(version, bolt)
    theirs = version.contributions.get(contributor=nadia_org)
    services.usage_record(
        grant=grant,
        consumer_ref="training-job-901",
        kind="tokens_trained",
        quantity=theirs.tokens,
        by_contribution={theirs.pk: theirs.tokens},
    )

    sign_in(page, live_server, "nadia")
    page.get_by_role("link", name="Withdraw a contribution, and its lineage").click()
    page.get_by_role("heading", name="Withdrawals", exact=True).wait_for()
    assert page.get_by_text("pooled, owned by Acme Corpora").is_visible()
    shot("withdrawals")
    page.get_by_role("link", name="Withdraw nadia.jsonl from Pooled notes v1").click()
    page.get_by_role("heading", name="Withdraw nadia.jsonl").wait_for()
    shot("withdraw-form")

    # Forgetting the confirmation is answered on the page (422, which Chromium logs), and nothing happens.
    console_messages.allow(r"status of 422 \(Unprocessable Entity\)")
    page.get_by_label("Reason").fill("Our consent to share these notes ended.")
    page.get_by_role("button", name="Withdraw the contribution").click()
    page.get_by_text("Confirm that you mean to withdraw the contribution.").first.wait_for()
    assert not ContributionWithdrawal.objects.exists()

    page.get_by_label("Re-seal the version without this contribution").check()
    page.get_by_role("button", name="Withdraw the contribution").click()
    page.get_by_role("heading", name="Lineage: nadia.jsonl").wait_for()
    assert page.get_by_text("Re-sealing").is_visible()
    shot("lineage-pending")

    drain()  # the re-seal, as a custody worker would run it
    page.reload()
    page.locator('[data-state="done"]').wait_for()
    withdrawal = ContributionWithdrawal.objects.get()
    assert withdrawal.state == WithdrawalState.DONE
    assert withdrawal.to_version is not None and withdrawal.to_version.state == VersionState.SEALED
    row = page.locator('tr[data-job="training-job-901"]')
    assert "Bolt Models" in row.inner_text() and str(theirs.tokens) in row.inner_text()
    # Every figure on the page against the data: the cells of the read, the versions, the counts.
    cells = [c.inner_text().strip() for c in row.locator("th, td").all()]
    assert cells == ["training-job-901", "Bolt Models", "v1", str(theirs.tokens), "—", "none"]
    successor = withdrawal.to_version
    new_version = page.locator('dt:text-is("New version") + dd').inner_text()
    assert new_version.startswith(f"v{successor.number} (sealed), Merkle root {successor.merkle_root[:19]}")
    assert new_version.endswith(f", {successor.records} records") and successor.records == 12
    closed = page.locator('dt:text-is("Closed version") + dd').inner_text()
    assert closed.startswith("v1 (superseded), Merkle root " + version.merkle_root[:19])
    assert page.locator('dt:text-is("Licenses moved") + dd').inner_text() == "1"
    assert "1 recorded read; 0 with weights released for download" in page.content()
    # The reason is quoted once, without a second full stop after the closing quote.
    lead = page.locator(".page-head .lead").inner_text()
    assert lead.endswith("(UTC): “Our consent to share these notes ended.”") and "”." not in lead
    shot("lineage-done")

    # The withdrawal is listed for Nadia, and the owner was told.
    page.get_by_role("link", name="All withdrawals").click()
    assert page.locator(f'tr[data-withdrawal="{withdrawal.public_id}"]').is_visible()
    assert Notification.objects.filter(organisation=acme, kind="dataset.contribution_withdrawn").exists()
