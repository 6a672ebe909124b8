"""Hostile uploads through the real custody upload API: every one refused, nothing kept, memory bounded.

The corpus is ``chaos/hostile_corpus.py`` (seeded): 40 files in the quick
profile, 200+ in ``proof``. Where each class is caught:

- at **start** (``POST /versions/{id}/contributions``): file names with NUL,
  names that say no known format, archives by name, a declared size over the
  limit — 413/415/422, nothing created;
- at a **part** (``PUT .../parts/{n}``): a part over the part limit, parts
  adding up past the upload limit — 413; the refused part is never stored and
  abandoning the upload (``DELETE``) shreds the rest;
- at **complete** (``POST .../complete``): every content problem (encoding,
  NUL bytes, shapes, bombs, truncation, Parquet schemas, empty files) for
  files up to ``SYNC_VALIDATE_MAX_BYTES`` — 413/415/422 naming what and
  where, the upload discarded (parts, quarantine key, row);
- at **ingest**, for larger files: the same checks in the ``custody.parse``
  work item end in a *failed contribution* whose reason says what is wrong
  (and an audited ``custody.ingest_failed`` with the same code). The
  encrypted quarantine copy stays until the version is rejected (a retry
  could use it), and rejecting shreds it. ``TestIngestPath`` drives the
  content classes through this path by setting the sync limit to zero.

Each run writes its figures to ``var/test-output/proving/`` for
``chaos/assurance.py``.
"""

from __future__ import annotations

import io
import json
import resource
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection
from rest_framework.test import APIClient

from chaos.hostile_corpus import LIMITS, HostileFile, benign_formula_csv, corpus
from common.models import AuditEvent, WorkItem, WorkState
from common.work import work_run
from custody import services
from custody.models import Contribution, ContributionState, UploadPart
from custody.parsing import FieldSpec, Format, iter_records
from tests.conftest import TEST_OUTPUT

FIGURES = TEST_OUTPUT / "proving"
# Python allocations while one hostile file is uploaded and checked (tracemalloc
# peak): the limits cap a file at 2 MiB, and parsing streams; 64 MiB is generous.
PER_FILE_PEAK_BYTES = 64 * 1024 * 1024
# Growth of the process's peak RSS over the whole corpus (ru_maxrss), which
# also covers pyarrow's and zlib's native buffers.
RSS_GROWTH_BYTES = 384 * 1024 * 1024


@pytest.fixture
def client(alice, acme, token_for) -> APIClient:
    return token_for(alice, acme, ["read", "provide"])


@pytest.fixture
def hostile_limits(settings, tmp_path: Path) -> Iterator[Path]:
    """The corpus's limits as settings, and a private temp directory that must stay empty."""
    for name, value in LIMITS.items():
        setattr(settings, name, value)
    temp = tmp_path / "tmp"
    temp.mkdir()
    settings.FILE_UPLOAD_TEMP_DIR = str(temp)
    saved = tempfile.tempdir
    tempfile.tempdir = str(temp)
    try:
        yield temp
    finally:
        tempfile.tempdir = saved


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _problem_failure(item: HostileFile, response: Any, where: str) -> str | None:
    """Why a response is not the refusal the corpus expects, or None when it is."""
    status = response.status_code
    if status not in item.statuses:
        return f"{where}: status {status}, expected {item.statuses}: {response.content[:300]!r}"
    if response["Content-Type"] != "application/problem+json":
        return f"{where}: Content-Type {response['Content-Type']}"
    body = response.json()
    codes = {body.get("code")} | {e.get("code") for e in body.get("errors") or []}
    if not codes & set(item.codes):
        return f"{where}: codes {sorted(map(str, codes))}, expected one of {item.codes}"
    detail = body.get("detail") or ""
    if len(detail) < 10 or "Traceback" in response.content.decode(errors="replace"):
        return f"{where}: no clear reason: {detail!r}"
    return None


def _leftovers(settings, contribution_id: int, *, row_may_remain: bool = False) -> list[str]:
    """What of an upload is still stored: rows, quarantine blobs, its quarantine key."""
    found = []
    if not row_may_remain and Contribution.objects.filter(pk=contribution_id).exists():
        found.append("contribution row")
    if UploadPart.objects.filter(contribution_id=contribution_id).exists() and not row_may_remain:
        found.append("part rows")
    quarantine = Path(settings.BLOB_DIR) / "quarantine" / str(contribution_id)
    if quarantine.exists() and any(quarantine.iterdir()):
        found.append(f"blobs {sorted(p.name for p in quarantine.iterdir())[:5]}")
    key = Path(settings.KEY_DIR) / f"kek-quarantine-{contribution_id}.json"
    if key.exists():
        found.append("quarantine key")
    return found


def _key(cid: str) -> int:
    """The upload's integer key, which names its quarantine blobs, key and audit rows inside."""
    return Contribution.objects.get(public_id=cid).pk


def _put(client: APIClient, cid: str, number: int, data: bytes) -> Any:
    return client.put(
        f"/api/v1/contributions/{cid}/parts/{number}", data, content_type="application/octet-stream"
    )


def upload_hostile(client: APIClient, version_id: str, item: HostileFile, settings) -> list[str]:
    """Upload one hostile file through the API; return what went wrong (empty: refused cleanly)."""
    response = client.post(
        f"/api/v1/versions/{version_id}/contributions",
        {"filename": item.filename, **item.start},
        format="json",
    )
    if item.stage == "start":
        problem = _problem_failure(item, response, "start")
        if response.status_code == 201:
            return [problem or "start: accepted"]
        return [problem] if problem else []
    if response.status_code != 201:
        return [f"start: {response.status_code} {response.content[:300]!r}"]
    cid = response.json()["id"]
    pk = _key(cid)
    problems: list[str] = []
    for number, data in enumerate(item.parts, start=1):
        response = _put(client, cid, number, data)
        if response.status_code == 200:
            continue
        if item.stage != "part":
            return [f"part {number}: {response.status_code} {response.content[:300]!r}"]
        problem = _problem_failure(item, response, f"part {number}")
        if problem:
            problems.append(problem)
        part_blob = Path(settings.BLOB_DIR) / "quarantine" / str(pk) / f"part-{number:06d}"
        if part_blob.exists() or UploadPart.objects.filter(contribution_id=pk, number=number).exists():
            problems.append(f"part {number}: the refused part was stored")
        if client.delete(f"/api/v1/contributions/{cid}").status_code != 204:
            problems.append("abandon: not 204")
        return problems + [f"left behind: {x}" for x in _leftovers(settings, pk)]
    if item.stage == "part":
        return ["every part accepted"]
    response = client.post(f"/api/v1/contributions/{cid}/complete")
    problem = _problem_failure(item, response, "complete")
    if problem:
        return [problem]
    return [f"left behind: {x}" for x in _leftovers(settings, pk)]


def _write_figures(name: str, figures: dict[str, Any]) -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    (FIGURES / f"{name}.json").write_text(json.dumps(figures, indent=1, sort_keys=True))


def run_corpus(profile: str, client: APIClient, version, settings, temp: Path) -> None:
    files = corpus(profile)
    failures: dict[str, list[str]] = {}
    peaks: dict[str, int] = {}
    rss_before = _peak_rss_bytes()
    tracemalloc.start()
    try:
        for item in files:
            cache.clear()  # the token's rate limit is not what this measures
            tracemalloc.reset_peak()
            problems = upload_hostile(client, version.public_id, item, settings)
            peaks[item.name] = tracemalloc.get_traced_memory()[1]
            if peaks[item.name] > PER_FILE_PEAK_BYTES:
                problems.append(f"memory: peak {peaks[item.name]:,} bytes")
            if any(temp.iterdir()):
                problems.append(f"temp files left: {sorted(p.name for p in temp.iterdir())[:5]}")
            if problems:
                failures[item.name] = problems
    finally:
        tracemalloc.stop()
    rss_growth = _peak_rss_bytes() - rss_before
    worst = max(peaks, key=peaks.__getitem__)
    _write_figures(
        f"hostile-{profile}",
        {
            "profile": profile,
            "database": connection.vendor,
            "total": len(files),
            "rejected": len(files) - len(failures),
            "bytes": sum(f.size for f in files),
            "by_stage": {s: sum(1 for f in files if f.stage == s) for s in ("start", "part", "complete")},
            "peak_python_bytes": peaks[worst],
            "peak_python_file": worst,
            "rss_growth_bytes": rss_growth,
            "failures": failures,
        },
    )
    assert not failures, json.dumps(failures, indent=1)
    assert rss_growth < RSS_GROWTH_BYTES, f"peak RSS grew by {rss_growth:,} bytes"
    assert not Contribution.objects.filter(version=version).exists()


class TestHostileUploads:
    def test_the_quick_corpus_is_refused_cleanly(self, client, version, settings, hostile_limits):
        run_corpus("quick", client, version, settings, hostile_limits)

    @pytest.mark.proof
    def test_the_proof_corpus_is_refused_cleanly(self, client, version, settings, hostile_limits):
        run_corpus("proof", client, version, settings, hostile_limits)

    def test_formula_looking_csv_cells_are_accepted_as_text(self, client, version, hostile_limits):
        response = client.post(
            f"/api/v1/versions/{version.public_id}/contributions",
            {"filename": "sheet.csv", "metadata_fields": ["label"]},
            format="json",
        )
        cid = response.json()["id"]
        assert _put(client, cid, 1, benign_formula_csv()).status_code == 200
        response = client.post(f"/api/v1/contributions/{cid}/complete")
        assert response.status_code == 202, response.content
        assert response.json()["state"] == ContributionState.UPLOADED
        # Kept verbatim: neutralising is for exports, never for custody text.
        records = iter_records(
            io.BytesIO(benign_formula_csv()),
            Format.CSV,
            False,
            FieldSpec(("text",), ("label",)),
            max_records=100,
            max_record_chars=1000,
            max_bytes=10_000,
            max_gzip_ratio=200,
        )
        texts = [r.text["text"] for r in records]
        assert texts[:3] == ['=HYPERLINK("http://evil.example/","click")', "=1+2", "+SUM(A1:A9)"]
        assert {t[0] for t in texts} == {"=", "+", "-", "@", "\t"}

    def test_hostile_names_are_neutralised_when_the_content_is_fine(self, client, version, hostile_limits):
        for name in (
            "../../etc/\x1b[31mpasswd.jsonl",
            "..\\..\\x\u202egnp.jsonl",
            "a\r\nSet-Cookie: x.jsonl",
        ):
            response = client.post(
                f"/api/v1/versions/{version.public_id}/contributions", {"filename": name}, format="json"
            )
            assert response.status_code == 201, response.content
            shown = response.json()["filename"]
            assert not {"/", "\\", "\x1b", "\r", "\n", "\u202e"} & set(shown), shown
            assert shown.endswith(".jsonl")

    @pytest.mark.parametrize("size", ["3_0", "٣٠", "３０", "1e3", 30.5, True])
    def test_a_declared_size_int_would_read_is_refused(self, client, version, hostile_limits, size):
        response = client.post(
            f"/api/v1/versions/{version.public_id}/contributions",
            {"filename": "rows.jsonl", "size": size},
            format="json",
        )
        assert response.status_code == 422, response.content
        assert [e["pointer"] for e in response.json()["errors"]] == ["/size"]
        assert not Contribution.objects.filter(version=version).exists()

    @pytest.mark.parametrize("depth", [65, 1000, 100_000])
    def test_a_start_body_nested_deeply_is_refused_before_parsing(
        self, client, version, hostile_limits, depth
    ):
        body = '{"filename": "rows.jsonl", "metadata_fields": ' + "[" * depth + "]" * depth + "}"
        response = client.post(
            f"/api/v1/versions/{version.public_id}/contributions", body, content_type="application/json"
        )
        assert response.status_code == 400, response.content
        assert response.json()["code"] == "common.json_too_deep"
        assert not Contribution.objects.filter(version=version).exists()


def _content_files(profile: str) -> list[HostileFile]:
    # Empty uploads are refused before the sync limit is consulted, so at complete always.
    return [f for f in corpus(profile) if f.stage == "complete" and f.parts]


def _run_parse_items() -> None:
    # Only the parse step: a file that parsed would go on to desensitization,
    # which is not what these files are about (and would load the NER model).
    for item_id in WorkItem.objects.filter(kind="custody.parse", state=WorkState.QUEUED).values_list(
        "pk", flat=True
    ):
        work_run(item_id=item_id, owner="test-proving")


def ingest_hostile(client: APIClient, alice, dataset, item: HostileFile, settings) -> list[str]:
    """Upload past the sync limit: 202, then the parse work item must fail it with a clear reason."""
    version = services.version_create(actor=alice, dataset=dataset)
    response = client.post(
        f"/api/v1/versions/{version.public_id}/contributions",
        {"filename": item.filename, **item.start},
        format="json",
    )
    cid = response.json()["id"]
    pk = _key(cid)
    for number, data in enumerate(item.parts, start=1):
        assert _put(client, cid, number, data).status_code == 200
    response = client.post(f"/api/v1/contributions/{cid}/complete")
    if response.status_code != 202:
        return [f"complete: {response.status_code} {response.content[:200]!r}"]
    _run_parse_items()
    body = client.get(f"/api/v1/contributions/{cid}").json()
    problems = []
    if body["state"] != ContributionState.FAILED:
        problems.append(f"ingest: state {body['state']}")
    if len(body["failure_reason"]) < 10:
        problems.append(f"ingest: no clear reason: {body['failure_reason']!r}")
    event = AuditEvent.objects.filter(action="custody.ingest_failed", object_id=str(pk)).first()
    if event is None or event.details.get("code") not in item.codes:
        problems.append(f"ingest: audited code {event and event.details.get('code')}, expected {item.codes}")
    if client.get(f"/api/v1/versions/{version.public_id}").json()["state"] != "failed":
        problems.append("ingest: the version did not fail")
    if client.post(f"/api/v1/versions/{version.public_id}/reject", {}, format="json").status_code != 200:
        problems.append("reject: not 200")
    problems.extend(f"after reject: {leftover}" for leftover in _leftovers(settings, pk, row_may_remain=True))
    return problems


def run_ingest_corpus(profile: str, client: APIClient, alice, dataset, settings, temp: Path) -> None:
    settings.SYNC_VALIDATE_MAX_BYTES = 0
    files = _content_files(profile)
    failures = {}
    for item in files:
        cache.clear()
        problems = ingest_hostile(client, alice, dataset, item, settings)
        if any(temp.iterdir()):
            problems.append("temp files left")
        if problems:
            failures[item.name] = problems
    _write_figures(
        f"hostile-ingest-{profile}",
        {
            "profile": profile,
            "total": len(files),
            "rejected": len(files) - len(failures),
            "failures": failures,
        },
    )
    assert not failures, json.dumps(failures, indent=1)


class TestIngestPath:
    def test_the_quick_content_classes_fail_at_ingest_with_a_reason(
        self, client, alice, dataset, settings, hostile_limits
    ):
        run_ingest_corpus("quick", client, alice, dataset, settings, hostile_limits)

    def test_staged_batches_of_a_failed_parse_are_shredded(
        self, client, alice, dataset, settings, hostile_limits
    ):
        settings.SYNC_VALIDATE_MAX_BYTES = 0
        version = services.version_create(actor=alice, dataset=dataset)
        cid = client.post(
            f"/api/v1/versions/{version.public_id}/contributions", {"filename": "rows.txt"}, format="json"
        ).json()["id"]
        pk = _key(cid)
        # One record past the limit: the parse stages full batches, then fails.
        _put(client, cid, 1, b"x\n" * (LIMITS["UPLOAD_MAX_RECORDS"] + 1))
        assert client.post(f"/api/v1/contributions/{cid}/complete").status_code == 202
        _run_parse_items()
        assert client.get(f"/api/v1/contributions/{cid}").json()["state"] == ContributionState.FAILED
        assert (
            client.post(f"/api/v1/versions/{version.public_id}/reject", {}, format="json").status_code == 200
        )
        assert _leftovers(settings, pk, row_may_remain=True) == []

    @pytest.mark.proof
    def test_the_proof_content_classes_fail_at_ingest_with_a_reason(
        self, client, alice, dataset, settings, hostile_limits
    ):
        run_ingest_corpus("proof", client, alice, dataset, settings, hostile_limits)
