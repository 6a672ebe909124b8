"""The ingest through a real Celery worker: it finishes, and survives kill -9 mid-way."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.db import transaction

from common.models import WorkItem, WorkState
from common.work import work_sweep
from custody import services
from custody.models import DatasetVersion, GrantPurpose, Shard, VersionState
from custody.services._keys import system_grant
from custody.services.ingest import BATCH_RECORDS
from tests.custody.conftest import jsonl
from tests.custody.scanner import scan_files
from tests.worker.harness import TEST_LEASE_SECONDS, wait_until

pytestmark = pytest.mark.worker


@pytest.fixture
def shared_dirs(celery_worker_process, settings):
    """Point this process at the worker's blob and key directories."""
    settings.BLOB_DIR = Path(celery_worker_process.env["SEALROOM_BLOB_DIR"])
    settings.KEY_DIR = Path(celery_worker_process.env["SEALROOM_KEY_DIR"])
    # A killed worker may take a fetched doorbell with it (the filesystem
    # transport has no redelivery): the sweeper, run by these tests, re-rings
    # queued items after this many seconds instead of the default five minutes.
    settings.WORK_REQUEUE_AFTER_SECONDS = 5
    return celery_worker_process


def start_ingest(alice, acme, records: list[dict]) -> DatasetVersion:
    with transaction.atomic():
        dataset = services.dataset_create(actor=alice, organisation=acme, name=f"Set {time.time_ns()}")
        version = services.version_create(actor=alice, dataset=dataset)
        contribution = services.contribution_start(
            actor=alice, organisation=acme, version=version, filename="records.jsonl"
        )
        services.contribution_part_put(contribution=contribution, number=1, data=jsonl(records))
    services.contribution_complete(actor=alice, contribution=contribution)
    services.version_process(actor=alice, version=version)
    return version


def wait_for_review(version: DatasetVersion, timeout: float = 120) -> DatasetVersion:
    def reviewed() -> DatasetVersion | None:
        work_sweep()  # what beat does every 30 s, sooner
        found = DatasetVersion.objects.get(pk=version.pk)
        assert found.state != VersionState.FAILED, found.failure_reason
        return found if found.state == VersionState.REVIEW else None

    done = wait_until(reviewed, what=f"version {version.pk} to reach review", timeout=timeout, interval=0.5)
    assert done is not None
    return done


def all_ids(version: DatasetVersion) -> list[int]:
    stream = services.grant_stream_open(
        grant=system_grant(version, GrantPurpose.REVIEW), consumer_ref="check", purpose="review"
    )
    return [r["id"] for batch in stream for r in batch]


def test_the_worker_ingests_a_version_and_no_sentinel_reaches_the_broker(
    shared_dirs, alice, acme, celery_test_broker
):
    sentinel = "zqbrokersentinelword"
    version = start_ingest(alice, acme, [{"text": f"Record {i} mentions {sentinel}."} for i in range(40)])
    done = wait_for_review(version)
    assert done.records == 40
    assert sorted(all_ids(done)) == list(range(40))
    places = [Path(celery_test_broker)] if celery_test_broker else []
    if shared_dirs.log_path:
        places.append(Path(shared_dirs.log_path))
    assert scan_files(places, [sentinel]) == {}


def test_a_worker_killed_mid_ingest_finishes_with_every_record_exactly_once(shared_dirs, alice, acme):
    total = BATCH_RECORDS * 4 + 7
    version = start_ingest(alice, acme, [{"text": f"Line {i} of the killed ingest."} for i in range(total)])

    def some_shard_done() -> bool:
        return Shard.objects.filter(version=version).exists()

    wait_until(some_shard_done, what="the first shard", timeout=120, interval=0.05)
    shared_dirs.kill()
    assert DatasetVersion.objects.get(pk=version.pk).state == VersionState.PROCESSING
    time.sleep(TEST_LEASE_SECONDS + 0.5)  # let the dead worker's lease expire
    shared_dirs.restart()
    done = wait_for_review(version)
    ids = all_ids(done)
    assert len(ids) == len(set(ids)) == total == done.records
    assert Shard.objects.filter(version=version).count() == 5
    assert not WorkItem.objects.filter(state=WorkState.FAILED).exists()


@pytest.mark.proof
def test_twenty_kills_mid_ingest_still_finish_with_every_record_exactly_once(shared_dirs, alice, acme):
    total = BATCH_RECORDS * 20 + 3
    version = start_ingest(alice, acme, [{"text": f"Line {i} of the long drill."} for i in range(total)])
    kills = 0
    while kills < 20:
        done_before = Shard.objects.filter(version=version).count()

        def progressed(before: int = done_before) -> bool:
            work_sweep()
            state = DatasetVersion.objects.get(pk=version.pk).state
            return Shard.objects.filter(version=version).count() > before or state == VersionState.REVIEW

        wait_until(progressed, what="progress before the next kill", timeout=120, interval=0.05)
        if DatasetVersion.objects.get(pk=version.pk).state == VersionState.REVIEW:
            break
        shared_dirs.kill()
        kills += 1
        time.sleep(TEST_LEASE_SECONDS + 0.5)
        shared_dirs.restart()
    done = wait_for_review(version, timeout=300)
    ids = all_ids(done)
    assert kills >= 10
    assert len(ids) == len(set(ids)) == total == done.records
