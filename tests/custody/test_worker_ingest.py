"""The ingest through a real Celery worker: it finishes, and survives kill -9 mid-way.

The kill drills run a stream of uploads through the worker and SIGKILL it on
a seeded schedule (tests/worker/drill.py); the verdict comes from the
offline checkers of chaos/checks.py reading the drill's history: every
acknowledged upload reaches review with each record exactly once, and the
audit chain verifies.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.db import transaction

from chaos.checks import check_audit_chain, check_uploads
from common.models import WorkItem, WorkState
from common.processes import wait_until
from common.work import work_sweep
from custody import services
from custody.models import DatasetVersion, GrantPurpose, Shard, VersionState
from custody.services.ingest import BATCH_RECORDS
from tests.custody.conftest import jsonl
from tests.custody.scanner import scan_files
from tests.worker.drill import KillDrill, use_worker_dirs

pytestmark = pytest.mark.worker

INGEST_KINDS = ("custody.parse", "custody.batch", "custody.finalize")


@pytest.fixture
def shared_dirs(celery_worker_process, settings):
    """Point this process at the worker's blob, key and audit export directories."""
    use_worker_dirs(settings, celery_worker_process)
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
        grant=services.system_grant(version, GrantPurpose.REVIEW), consumer_ref="check", purpose="review"
    )
    return [r["id"] for batch in stream for r in batch]


class UploadStream:
    """Uploads of ``records`` records each, one at a time, each acknowledgement in the drill's history."""

    def __init__(self, drill: KillDrill, alice, acme, *, records: int) -> None:
        self.drill, self.alice, self.acme, self.records = drill, alice, acme, records
        self.versions: list[int] = []

    def upload(self) -> None:
        n = len(self.versions) + 1
        self.drill.invoke("upload", n=n, records=self.records)
        rows = [{"text": f"Line {i} of upload {n} in the kill drill."} for i in range(self.records)]
        version = start_ingest(self.alice, self.acme, rows)
        self.versions.append(version.pk)
        self.drill.ok("upload", n=n, version=version.pk, records=self.records)

    def in_progress(self) -> bool:
        return DatasetVersion.objects.filter(pk__in=self.versions, state=VersionState.PROCESSING).exists()

    def feed(self) -> None:
        if not self.in_progress():
            self.upload()

    def busy(self) -> str | None:
        item = self.drill.holding()
        if item is None:
            return None
        return f"{item.kind} {item.ref} (attempt {item.attempts})"

    def done(self) -> bool:
        return not self.in_progress()


def ingest_drill(
    worker, alice, acme, *, name: str, faults: int, latest: float, records: int, finish_within: float = 600
) -> UploadStream:
    """Upload, kill the worker ``faults`` times mid-ingest, and return the stream once all is ingested."""
    with KillDrill(
        name, worker, kinds=INGEST_KINDS, faults=faults, earliest=1.0, latest=latest, recover=work_sweep
    ) as drill:
        stream = UploadStream(drill, alice, acme, records=records)
        stream.upload()
        drill.strike_all(busy=stream.busy, feed=stream.feed, done=stream.done)
        drill.finish(stream.done, what="every acknowledged upload through ingest", timeout=finish_within)
        assert drill.check([check_uploads, check_audit_chain]) == []
    assert drill.kills == faults
    assert not WorkItem.objects.filter(state=WorkState.FAILED).exists()
    return stream


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
    stream = ingest_drill(
        shared_dirs, alice, acme, name="ingest-quick", faults=1, latest=3.0, records=BATCH_RECORDS * 4 + 7
    )
    for version_id in stream.versions:
        assert Shard.objects.filter(version_id=version_id).count() == 5


# The English tagger made each batch several times dearer: at 12:44 on 2026-12-06 (make proof at
# fd9756e, load average 10-30 on 2 cores) all 20 kills were survived but the last batches were
# still running when 900 s ran out. The limit is time to finish, not a property under test.
@pytest.mark.proof
@pytest.mark.timeout(2400)
def test_twenty_kills_mid_ingest_still_finish_with_every_record_exactly_once(shared_dirs, alice, acme):
    stream = ingest_drill(
        shared_dirs,
        alice,
        acme,
        name="ingest-proof",
        faults=20,
        latest=300.0,
        records=BATCH_RECORDS * 20 + 3,
        finish_within=1800,
    )
    for version_id in stream.versions:
        assert Shard.objects.filter(version_id=version_id).count() == 21
