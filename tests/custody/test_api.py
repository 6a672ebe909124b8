"""The custody API: chunked, resumable upload; bad input is problem+json and leaves nothing."""

from __future__ import annotations

import gzip
import json

import pytest
from rest_framework.test import APIClient

from custody.models import Contribution, UploadPart, VersionState
from tests.custody.conftest import drain, jsonl

RECORDS = [{"text": f"Record {i} is about the weather in spring.", "source": "forum"} for i in range(12)]


@pytest.fixture
def client(alice, acme, token_for) -> APIClient:
    return token_for(alice, acme, ["read", "provide"])


def start(client: APIClient, version_id: str, **body: object) -> dict:
    response = client.post(f"/api/v1/versions/{version_id}/contributions", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def put_part(client: APIClient, contribution_id: str, number: int, data: bytes):
    return client.put(
        f"/api/v1/contributions/{contribution_id}/parts/{number}",
        data,
        content_type="application/octet-stream",
    )


def key_of(contribution_id: str) -> int:
    """The upload's integer key (its quarantine and key names use it), read while the row exists."""
    return Contribution.objects.get(public_id=contribution_id).pk


def nothing_stored(settings, contribution_id: int) -> bool:
    quarantine = settings.BLOB_DIR / "quarantine" / str(contribution_id)
    return (
        not Contribution.objects.filter(pk=contribution_id).exists()
        and not UploadPart.objects.filter(contribution_id=contribution_id).exists()
        and not (quarantine.exists() and any(quarantine.iterdir()))
    )


class TestChunkedUpload:
    def test_uploads_in_parts_resumes_and_processes(self, client, version, alice):
        data = jsonl(RECORDS)
        body = start(
            client, version.public_id, filename="forum.jsonl", metadata_fields=["source"], size=len(data)
        )
        cid = body["id"]
        third = len(data) // 3
        assert put_part(client, cid, 1, data[:third]).status_code == 200
        # The connection drops; the client asks what arrived and sends the rest.
        assert client.get(f"/api/v1/contributions/{cid}").json()["parts_received"] == [1]
        assert put_part(client, cid, 2, data[third : 2 * third]).status_code == 200
        assert put_part(client, cid, 2, data[third : 2 * third]).status_code == 200  # resent: replaced
        assert put_part(client, cid, 3, data[2 * third :]).status_code == 200
        response = client.post(f"/api/v1/contributions/{cid}/complete")
        assert response.status_code == 202
        assert client.post(f"/api/v1/versions/{version.public_id}/process").status_code == 202
        drain()
        body = client.get(f"/api/v1/versions/{version.public_id}").json()
        assert body["state"] == VersionState.REVIEW
        assert (body["records_done"], body["records"]) == (12, 12)
        report = client.get(f"/api/v1/versions/{version.public_id}/report").json()
        assert report["counts"]["languages"] == {"en": 12}

    def test_a_missing_part_is_named(self, client, version):
        cid = start(client, version.public_id, filename="x.jsonl")["id"]
        put_part(client, cid, 1, jsonl(RECORDS[:2]))
        put_part(client, cid, 3, jsonl(RECORDS[2:4]))
        response = client.post(f"/api/v1/contributions/{cid}/complete")
        assert response.status_code == 422
        assert response.json()["code"] == "custody.parts_missing"
        assert "2" in response.json()["detail"]

    def test_a_part_over_the_limit_is_413(self, client, version, settings):
        settings.UPLOAD_PART_MAX_BYTES = 100
        cid = start(client, version.public_id, filename="x.jsonl")["id"]
        response = put_part(client, cid, 1, b"x" * 101)
        assert response.status_code == 413
        assert response.json()["code"] == "common.part_too_large"

    def test_a_part_sent_as_json_is_415(self, client, version):
        cid = start(client, version.public_id, filename="x.jsonl")["id"]
        response = client.put(f"/api/v1/contributions/{cid}/parts/1", {"a": 1}, format="json")
        assert response.status_code == 415


BAD_INPUTS = [
    ("invalid_utf8.jsonl", {}, b'{"text": "ok"}\n{"text": "caf\xe9"}\n', 422, "line 2"),
    ("broken.jsonl", {}, b'{"text": "ok"}\n{"text": "no end}\n', 422, "line 2"),
    ("missing.jsonl", {}, b'{"text": "ok"}\n{"body": "wrong field"}\n', 422, "line 2"),
    ("columns.csv", {"text_fields": ["text"]}, b"title,body\na,b\n", 422, "text"),
    ("empty.jsonl", {}, b"", 422, "empty"),
    ("blank.jsonl", {}, b"\n\n\n", 422, ""),
    ("notes.exe", {}, b"MZ\x90\x00", 415, ""),
]


class TestBadInput:
    @pytest.mark.parametrize(("filename", "fields", "data", "status", "where"), BAD_INPUTS)
    def test_is_a_clear_problem_and_leaves_nothing(
        self, client, version, settings, filename, fields, data, status, where
    ):
        response = client.post(
            f"/api/v1/versions/{version.public_id}/contributions",
            {"filename": filename, **fields},
            format="json",
        )
        if response.status_code == 201:
            cid = response.json()["id"]
            pk = key_of(cid)
            if data:
                put_part(client, cid, 1, data)
            response = client.post(f"/api/v1/contributions/{cid}/complete")
            assert nothing_stored(settings, pk)
        assert response.status_code == status, response.content
        assert response["Content-Type"] == "application/problem+json"
        assert where.lower() in response.json()["detail"].lower()

    def test_a_decompression_bomb_is_413(self, client, version, settings):
        # Valid-looking lines, so the inflation ratio (not a record limit) trips.
        bomb = gzip.compress(b'{"text": "a"}\n' * (5 * 1024 * 1024), 9)
        cid = start(client, version.public_id, filename="bomb.jsonl.gz")["id"]
        pk = key_of(cid)
        put_part(client, cid, 1, bomb)
        response = client.post(f"/api/v1/contributions/{cid}/complete")
        assert response.status_code == 413
        assert response.json()["code"] == "custody.decompression_bomb"
        assert nothing_stored(settings, pk)

    def test_an_over_size_record_is_413_naming_it(self, client, version, settings):
        settings.RECORD_MAX_CHARS = 50
        cid = start(client, version.public_id, filename="long.jsonl")["id"]
        put_part(client, cid, 1, jsonl([{"text": "short"}, {"text": "x" * 200}]))
        response = client.post(f"/api/v1/contributions/{cid}/complete")
        assert response.status_code == 413
        assert "2" in response.json()["detail"]

    def test_a_hostile_file_name_is_neutralised(self, client, version):
        body = start(client, version.public_id, filename="../../etc/\x1b[31mpasswd.jsonl")
        assert "/" not in body["filename"] and "\x1b" not in body["filename"]
        response = client.post(
            f"/api/v1/versions/{version.public_id}/contributions", {"filename": "a\x00.jsonl"}, format="json"
        )
        assert response.status_code == 422
        assert response.json()["errors"][0]["pointer"] == "/filename"

    def test_formula_cells_are_ordinary_text(self, client, version, alice):
        cid = start(client, version.public_id, filename="sheet.csv", text_fields=["text"])["id"]
        put_part(client, cid, 1, b'text\n"=HYPERLINK(""http://evil"")"\n')
        assert client.post(f"/api/v1/contributions/{cid}/complete").status_code == 202

    def test_uploads_to_a_closed_version_are_409(self, client, version, alice, upload):
        upload(version, jsonl(RECORDS))
        client.post(f"/api/v1/versions/{version.public_id}/process")
        response = client.post(
            f"/api/v1/versions/{version.public_id}/contributions", {"filename": "late.jsonl"}, format="json"
        )
        assert response.status_code == 409
        assert response.json()["code"] == "custody.version_closed"


def test_another_providers_version_is_404(bob, bolt, token_for, version):
    client = token_for(bob, bolt, ["read", "provide"])
    assert client.get(f"/api/v1/versions/{version.public_id}").status_code == 404
    response = client.post(
        f"/api/v1/versions/{version.public_id}/contributions", {"filename": "a.jsonl"}, format="json"
    )
    assert response.status_code == 404
    assert json.loads(response.content)["code"] == "custody.version_not_found"


def test_an_abandoned_upload_is_shredded_and_lets_the_version_proceed(client, version, settings, upload):
    upload(version, jsonl(RECORDS))
    cid = start(client, version.public_id, filename="half.jsonl")["id"]
    pk = key_of(cid)
    put_part(client, cid, 1, jsonl(RECORDS[:3]))
    assert (
        client.post(f"/api/v1/versions/{version.public_id}/process").json()["code"]
        == "custody.upload_in_progress"
    )
    assert client.delete(f"/api/v1/contributions/{cid}").status_code == 204
    assert nothing_stored(settings, pk)
    assert client.post(f"/api/v1/versions/{version.public_id}/process").status_code == 202
