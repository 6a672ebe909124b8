"""Uploaded bases that would cost more than they are: decompression bombs, quotas, and what a base
alone says about a job before any record is read. The archives are hand-built (no torch): a base's
safetensors header and config.json are all the web side reads."""

from __future__ import annotations

import io
import json
import struct
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from common.models import AuditEvent
from training import services
from training.exceptions import Invalid
from training.models import BaseKind, BaseModel, BaseState
from training.services.jobs import spec_check

URL = "/api/v1/training/bases"
HIDDEN = 16
ZEROS = b"\0" * (1 << 20)


@pytest.fixture
def bob_api(token_for, bob, bolt):
    return token_for(bob, bolt, ["read", "train"])


def weights(vocab: int) -> tuple[bytes, int]:
    """A GPT-2-shaped safetensors header for one layer, and how many zero bytes of data follow."""
    shapes = {
        "transformer.wte.weight": [vocab, HIDDEN],
        "transformer.h.0.attn.c_attn.weight": [HIDDEN, 3 * HIDDEN],
        "transformer.h.0.mlp.c_fc.weight": [HIDDEN, 4 * HIDDEN],
    }
    header: dict[str, Any] = {}
    offset = 0
    for name, shape in shapes.items():
        size = shape[0] * shape[1] * 4
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw, offset


def config(vocab: int = 64, **overrides: Any) -> bytes:
    fields = {"model_type": "gpt2", "vocab_size": vocab, "n_embd": HIDDEN, "n_layer": 1, "n_positions": 64}
    return json.dumps({**fields, "eos_token_id": 1, "pad_token_id": 0, **overrides}).encode()


def zipped(vocab: int = 64, **config_overrides: Any) -> bytes:
    """A zip of the base, its weights streamed in (a large vocabulary makes a zero-filled bomb)."""
    header, size = weights(vocab)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", config(vocab, **config_overrides))
        archive.writestr("tokenizer.json", b"{}")
        with archive.open("model.safetensors", "w", force_zip64=True) as out:
            out.write(header)
            for start in range(0, size, len(ZEROS)):
                out.write(ZEROS[: min(len(ZEROS), size - start)])
    return buffer.getvalue()


def upload(client, data: bytes, name: str = "my-gpt"):
    return client.post(f"{URL}?name={name}", data=data, content_type="application/octet-stream")


def nothing_stored(settings) -> bool:
    blobs = Path(settings.BLOB_DIR) / "training" / "bases"
    return not BaseModel.objects.filter(kind=BaseKind.UPLOADED).exists() and not (
        blobs.exists() and any(blobs.iterdir())
    )


BOMB_VOCAB = 100 * 1024**2 // (HIDDEN * 4)  # 100 MiB of zeros: about 100 KiB deflated


class TestBombs:
    def test_a_zip_bomb_is_refused_from_its_declared_sizes(self, bob_api, settings):
        bomb = zipped(BOMB_VOCAB)
        assert len(bomb) < 1024**2
        response = upload(bob_api, bomb)
        assert response.status_code == 422, response.content
        assert response.json()["code"] == "training.base_compression_ratio"
        assert nothing_stored(settings)
        refused = AuditEvent.objects.get(action="training.base_refused")
        assert refused.details["code"] == "training.base_compression_ratio"

    def test_the_same_archive_passes_where_the_ratio_allows_it(self, bob_api, settings):
        """Positive control: what refused the bomb was the ratio, not something else about it."""
        settings.TRAINING_BASE_MAX_RATIO = 100_000
        response = upload(bob_api, zipped(BOMB_VOCAB))
        assert response.status_code == 202, response.content
        assert BaseModel.objects.get(public_id=response.json()["id"]).size > 100 * 1024**2

    def test_a_tar_gz_bomb_is_refused_while_streaming(self, bob_api, settings):
        header, size = weights(BOMB_VOCAB)

        class Zeros(io.RawIOBase):
            def __init__(self) -> None:
                self.left = size

            def readable(self) -> bool:
                return True

            def readinto(self, buffer: Any) -> int:
                n = min(len(buffer), self.left)
                buffer[:n] = b"\0" * n
                self.left -= n
                return n

        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            info = tarfile.TarInfo("model.safetensors")
            info.size = len(header) + size
            tar.addfile(info, io.BufferedReader(_Chain(header, Zeros())))
        response = upload(bob_api, buffer.getvalue())
        assert response.status_code == 422, response.content
        assert response.json()["code"] == "training.base_compression_ratio"
        assert nothing_stored(settings)

    def test_a_huge_pax_header_is_refused_before_it_is_buffered(self, bob_api, settings):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo("config.json")
            info.pax_headers = {"comment": "x" * (20 * 1024**2)}
            info.size = len(config())
            tar.addfile(info, io.BytesIO(config()))
        response = upload(bob_api, buffer.getvalue())
        assert response.status_code == 422, response.content
        assert "headers are too large" in response.json()["detail"]

    def test_a_zip_of_many_entries_is_refused_before_its_directory_is_parsed(self, bob_api, settings):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for i in range(2000):
                archive.writestr(f"{i}.json", b"{}")
        response = upload(bob_api, buffer.getvalue())
        assert response.status_code == 422, response.content
        assert "2,000 entries" in response.json()["detail"]


class _Chain(io.RawIOBase):
    def __init__(self, head: bytes, rest: io.RawIOBase) -> None:
        self.head = head
        self.rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        return self.rest.readinto(buffer)


class TestNoWriteHeldWhileReading:
    def test_the_archive_is_read_outside_any_transaction(self, bob, bolt):
        """The database write (quota, row, audit) is one short transaction after the reading."""
        from django.db import connection

        outer = len(connection.atomic_blocks)  # the test's own transaction
        depths: list[int] = []

        class Watched(io.BytesIO):
            def read(self, size: int | None = -1) -> bytes:
                depths.append(len(connection.atomic_blocks) - outer)
                return super().read(size)

        base = services.base_upload(
            actor=bob, organisation=bolt, name="watched", data=Watched(zipped()), size=1
        )
        assert base.state == BaseState.PENDING and depths and set(depths) == {0}


class TestQuota:
    def test_the_count_quota_answers_409(self, bob_api, settings):
        settings.TRAINING_BASE_QUOTA_COUNT = 1
        assert upload(bob_api, zipped(), name="first").status_code == 202
        response = upload(bob_api, zipped(), name="second")
        assert response.status_code == 409 and response.json()["code"] == "training.base_quota_count"
        assert BaseModel.objects.filter(kind=BaseKind.UPLOADED).count() == 1

    def test_the_byte_quota_answers_413_and_stores_nothing(self, bob_api, settings):
        first = upload(bob_api, zipped(), name="first")
        assert first.status_code == 202
        settings.TRAINING_BASE_QUOTA_BYTES = 2 * first.json()["size"] - 1
        response = upload(bob_api, zipped(), name="second")
        assert response.status_code == 413 and response.json()["code"] == "training.base_quota_bytes"
        assert BaseModel.objects.filter(kind=BaseKind.UPLOADED).count() == 1
        blobs = list((Path(settings.BLOB_DIR) / "training" / "bases").iterdir())
        assert len(blobs) == 1  # the refused one's blob is gone

    def test_rejected_bases_do_not_count(self, bob_api, settings):
        settings.TRAINING_BASE_QUOTA_COUNT = 1
        first = BaseModel.objects.get(public_id=upload(bob_api, zipped(), name="first").json()["id"])
        BaseModel.objects.filter(pk=first.pk).update(state=BaseState.REJECTED, blob_key="")
        assert upload(bob_api, zipped(), name="second").status_code == 202


class TestWhatTheBaseAloneSays:
    @pytest.mark.parametrize(
        ("overrides", "field"),
        [
            ({"n_positions": 4}, "4 positions"),
            ({"eos_token_id": 64}, "eos_token_id 64 is outside the vocabulary"),
            ({"pad_token_id": -1}, "pad_token_id -1 is outside the vocabulary"),
        ],
    )
    def test_config_problems_are_refused_at_upload(self, bob_api, settings, overrides, field):
        response = upload(bob_api, zipped(**overrides))
        assert response.status_code == 422, response.content
        assert response.json()["code"] == "training.base_invalid" and field in response.json()["detail"]
        assert nothing_stored(settings)

    def test_weights_that_do_not_match_the_config_are_refused_at_upload(self, bob_api, settings):
        response = upload(bob_api, zipped(n_embd=32))
        assert response.status_code == 422 and "no embedding of shape [64, 32]" in response.json()["detail"]

    def test_a_job_asking_more_positions_than_the_base_has_is_refused_at_submit(self, bob_api):
        """job_submit runs spec_check first, before it locks the license or reserves anything."""
        base = BaseModel.objects.get(public_id=upload(bob_api, zipped()).json()["id"])
        base.state = BaseState.VALIDATED  # as validate-base would record it (not run here: no torch)
        base.save()
        hyperparameters = {"epochs": 1, "batch_size": 4, "learning_rate": 0.001, "seed": 3}

        def check(max_seq_len: int) -> dict[str, Any]:
            request = services.JobRequest(
                template="causal_lm",
                base=base,
                hyperparameters={**hyperparameters, "max_seq_len": max_seq_len},
            )
            return spec_check(request, gate_max_exposure=7.0)

        with pytest.raises(Invalid) as refused:
            check(128)
        assert refused.value.code == "training.base_positions"
        assert refused.value.errors[0]["pointer"] == "/hyperparameters/max_seq_len"
        assert check(64)["hyperparameters"]["max_seq_len"] == 64  # positive control: within 64 positions
