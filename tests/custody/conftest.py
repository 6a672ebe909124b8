"""Custody fixtures: a provider with a dataset, uploads, and an in-process work drain.

``drain()`` runs queued work items through ``common.work.work_run`` — the same
code a Celery worker runs — in this process, so service tests stay fast; the
tests marked ``worker`` run the pipeline through a real worker instead.
"""

from __future__ import annotations

import gzip as gzip_module
import json
from collections.abc import Callable
from typing import Any

import pytest

from common.models import WorkItem, WorkState
from common.work import work_run
from custody import services
from custody.models import Contribution, Dataset, DatasetVersion


def drain(max_rounds: int = 50) -> int:
    """Run queued work until none is left; returns how many items ran."""
    ran = 0
    for _ in range(max_rounds):
        queued = list(
            WorkItem.objects.filter(state=WorkState.QUEUED).order_by("pk").values_list("pk", flat=True)
        )
        if not queued:
            return ran
        for item_id in queued:
            work_run(item_id=item_id, owner="test-drain")
            ran += 1
    raise AssertionError("work did not drain")


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


@pytest.fixture
def dataset(alice, acme) -> Dataset:
    return services.dataset_create(actor=alice, organisation=acme, name="Support tickets")


@pytest.fixture
def version(alice, dataset) -> DatasetVersion:
    return services.version_create(actor=alice, dataset=dataset)


@pytest.fixture
def upload(alice, acme) -> Callable[..., Contribution]:
    """``upload(version, data, filename=..., parts=N, **fields)`` -> a completed contribution."""

    def _upload(
        version: DatasetVersion,
        data: bytes,
        filename: str = "records.jsonl",
        parts: int = 1,
        compress: bool = False,
        **fields: Any,
    ) -> Contribution:
        if compress:
            data = gzip_module.compress(data)
            filename += ".gz"
        contribution = services.contribution_start(
            actor=alice, organisation=acme, version=version, filename=filename, **fields
        )
        size = max(1, -(-len(data) // parts))
        for number, start in enumerate(range(0, len(data), size), start=1):
            services.contribution_part_put(
                contribution=contribution, number=number, data=data[start : start + size]
            )
        return services.contribution_complete(actor=alice, contribution=contribution)

    return _upload


@pytest.fixture
def sealed_version(alice, version, upload) -> DatasetVersion:
    """A sealed version of 30 short English records (ids 0..29)."""
    records = [{"text": f"Note {i}: the quarterly report for region {i % 5} is late."} for i in range(30)]
    upload(version, jsonl(records))
    services.version_process(actor=alice, version=version)
    drain()
    return services.version_seal(actor=alice, version=version)
