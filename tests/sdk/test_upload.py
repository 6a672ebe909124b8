"""Resumable uploads through the SDK: a dropped upload resumes, sending only the parts the server lacks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from sealroom import Client, ConfigurationError

from custody import services as custody
from custody.models import Contribution as ContributionRow
from custody.models import ContributionState
from tests.conftest import make_token
from tests.sdk.conftest import run_cli

PART = 256


class Dropped(Exception):
    """The connection 'drops' (the process stops) after some parts."""


@pytest.fixture
def version(alice, acme):
    dataset = custody.dataset_create(actor=alice, organisation=acme, name="Tickets")
    return custody.version_create(actor=alice, dataset=dataset)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "tickets.jsonl"
    lines = [f'{{"text": "Ticket {i}: the parcel for depot {i % 7} is late."}}\n' for i in range(40)]
    path.write_text("".join(lines))
    return path


def provider_client(live_server, alice, acme, puts: list[str]) -> Client:
    def count(request: httpx.Request) -> None:
        if request.method == "PUT":
            puts.append(request.url.path.rsplit("/", 1)[-1])

    http = httpx.Client(timeout=30, event_hooks={"request": [count]})
    return Client(token=make_token(alice, acme, ["read", "provide"]), base_url=live_server.url, http=http)


def assert_parts_are_the_file(contribution_id: str, corpus: Path) -> None:
    data = corpus.read_bytes()
    row = ContributionRow.objects.get(public_id=contribution_id)
    parts = list(row.parts.order_by("number").values_list("number", "sha256"))
    expected = [
        (n, hashlib.sha256(data[(n - 1) * PART : n * PART]).hexdigest()) for n in range(1, len(parts) + 1)
    ]
    assert parts == expected
    assert row.size_received == len(data)


def test_a_dropped_upload_resumes_with_the_missing_parts_only(live_server, alice, acme, version, corpus):
    count = -(-corpus.stat().st_size // PART)
    assert count >= 5
    puts: list[str] = []
    client = provider_client(live_server, alice, acme, puts)

    def drop_after_two(done: int, total: int) -> None:
        if done >= 2 * PART:
            raise Dropped

    with pytest.raises(Dropped):
        client.upload(version.public_id, corpus, part_size=PART, on_progress=drop_after_two)
    [started] = ContributionRow.objects.filter(version=version)
    assert started.state == ContributionState.UPLOADING
    assert client.get_upload(started.public_id).parts_received == [1, 2]

    progress: list[tuple[int, int]] = []
    done = client.upload(
        version.public_id, corpus, part_size=PART, on_progress=lambda d, t: progress.append((d, t))
    )
    assert done.id == started.public_id
    assert done.state != "uploading"
    assert puts == ["1", "2", *[str(n) for n in range(3, count + 1)]]  # parts 1-2 were not sent again
    assert progress[0] == (2 * PART, corpus.stat().st_size)
    assert progress[-1][0] == corpus.stat().st_size
    assert_parts_are_the_file(started.public_id, corpus)


def test_resuming_with_another_part_size_is_refused_before_sending(live_server, alice, acme, version, corpus):
    puts: list[str] = []
    client = provider_client(live_server, alice, acme, puts)
    started = client.start_upload(version.public_id, filename=corpus.name, size=corpus.stat().st_size)
    client.put_part(started.id, 1, corpus.read_bytes()[:PART])
    with pytest.raises(ConfigurationError, match="part size"):
        client.upload(version.public_id, corpus, part_size=4 * PART, contribution_id=started.id)
    assert puts == ["1"]


def test_the_cli_resumes_a_given_upload(live_server, alice, acme, version, corpus):
    token = make_token(alice, acme, ["read", "provide"])
    client = Client(token=token, base_url=live_server.url)
    started = client.start_upload(version.public_id, filename=corpus.name, size=corpus.stat().st_size)
    client.put_part(started.id, 1, corpus.read_bytes()[:PART])
    args = [
        "upload",
        version.public_id,
        str(corpus),
        "--contribution",
        str(started.id),
        "--part-size",
        str(PART),
    ]
    result = run_cli(*args, url=live_server.url, token=token)
    assert result.returncode == 0, result.stderr
    assert f"upload {started.id}:" in result.stdout
    assert "ingest started" in result.stdout
    assert_parts_are_the_file(started.id, corpus)
