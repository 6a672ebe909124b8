"""Uploaded base models: safe unpacking (no traversal, links or pickles), validation in the sandbox."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from common.models import AuditEvent
from tests.training.conftest import drain
from training.models import BaseKind, BaseModel, BaseState

URL = "/api/v1/training/bases"


@pytest.fixture(autouse=True)
def _work_dir(settings, tmp_path: Path) -> None:
    settings.TRAINING_WORK_DIR = tmp_path / "training-work"


@pytest.fixture
def bob_api(token_for, bob, bolt):
    return token_for(bob, bolt, ["read", "train"])


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    """A tiny GPT-2 saved the Hugging Face way (safetensors), with the platform tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from training.runner.data import load_tokenizer

    tokenizer = load_tokenizer(None)
    config = GPT2Config(
        vocab_size=tokenizer.get_vocab_size(),
        n_positions=64,
        n_layer=1,
        n_head=2,
        n_embd=16,
        eos_token_id=tokenizer.token_to_id("[SEP]"),
        pad_token_id=tokenizer.token_to_id("[PAD]"),
    )
    directory = tmp_path / "base"
    GPT2LMHeadModel(config).save_pretrained(directory, safe_serialization=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    return directory


def zipped(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def of_dir(directory: Path, prefix: str = "") -> dict[str, bytes]:
    return {prefix + p.name: p.read_bytes() for p in directory.iterdir()}


def upload(client, data: bytes, name: str = "my-gpt", content_type: str = "application/zip"):
    return client.post(f"{URL}?name={name}", data=data, content_type=content_type)


def assert_refused(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    assert response.json()["code"] == code
    assert not BaseModel.objects.filter(kind=BaseKind.UPLOADED).exists()


class TestUpload:
    def test_a_zipped_model_is_stored_and_validated_in_the_sandbox(self, bob_api, base_dir):
        response = upload(bob_api, zipped(of_dir(base_dir, "my-gpt/")))
        assert response.status_code == 202, response.content
        assert response.json()["state"] == "pending"
        drain()
        base = BaseModel.objects.get(public_id=response.json()["id"])
        assert base.state == BaseState.VALIDATED, base.failure_reason
        assert base.architecture == "GPT2LMHeadModel"
        assert base.parameters > 0 and len(base.file_hash) == 64
        listed = [b["name"] for b in bob_api.get(URL).json()["results"]]
        assert "my-gpt" in listed and "gpt2-tiny" in listed

    def test_a_tarball_works_too(self, bob_api, base_dir):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for path in base_dir.iterdir():
                tar.add(path, arcname=path.name)
        assert upload(bob_api, buffer.getvalue(), content_type="application/gzip").status_code == 202

    def test_truncated_weights_are_refused_at_upload(self, bob_api, base_dir, settings):
        files = of_dir(base_dir)
        files["model.safetensors"] = files["model.safetensors"][:200]
        assert_refused(upload(bob_api, zipped(files)), 422, "training.base_invalid")
        assert not any((settings.BLOB_DIR / "training").rglob("*.tar"))

    def test_a_base_the_sandbox_rejects_keeps_its_reason_but_not_its_blob(self, bob_api, base_dir, settings):
        """A tokenizer larger than the embeddings would fail only once records flow: the sandbox's
        validation refuses it, the blob is deleted (audited), and the name can be used again."""
        from transformers import GPT2Config, GPT2LMHeadModel

        small = base_dir.parent / "small"
        config = GPT2Config(vocab_size=100, n_positions=64, n_layer=1, n_head=2, n_embd=16, eos_token_id=1)
        GPT2LMHeadModel(config).save_pretrained(small, safe_serialization=True)
        (small / "tokenizer.json").write_bytes((base_dir / "tokenizer.json").read_bytes())
        response = upload(bob_api, zipped(of_dir(small)))
        assert response.status_code == 202, response.content
        blob = settings.BLOB_DIR / BaseModel.objects.get(public_id=response.json()["id"]).blob_key
        assert blob.is_file()
        drain()
        base = BaseModel.objects.get(public_id=response.json()["id"])
        assert base.state == BaseState.REJECTED
        assert "more than the 100 embedding rows" in base.failure_reason
        assert not blob.exists() and base.blob_key == ""
        event = AuditEvent.objects.get(action="training.base_rejected", object_id=str(base.pk))
        assert event.details["blob_deleted"] is True
        again = upload(bob_api, zipped(of_dir(base_dir)))  # same name: the rejected row is replaced
        assert again.status_code == 202, again.content
        assert not BaseModel.objects.filter(pk=base.pk).exists()

    def test_other_organisations_do_not_see_an_upload(self, bob_api, base_dir, token_for, alice, acme):
        base_id = upload(bob_api, zipped(of_dir(base_dir))).json()["id"]
        other = token_for(alice, acme, ["read"])
        assert other.get(f"{URL}/{base_id}").status_code == 404


class TestRefused:
    def test_a_path_that_climbs_out(self, bob_api, base_dir):
        files = {**of_dir(base_dir), "../../evil.json": b"{}"}
        assert_refused(upload(bob_api, zipped(files)), 422, "training.base_invalid")

    def test_a_symlink(self, bob_api, base_dir, tmp_path):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for path in base_dir.iterdir():
                tar.add(path, arcname=path.name)
            link = tarfile.TarInfo("vocab.txt")
            link.type = tarfile.SYMTYPE
            link.linkname = "/etc/passwd"
            tar.addfile(link)
        assert_refused(upload(bob_api, buffer.getvalue()), 422, "training.base_invalid")

    def test_a_pickle(self, bob_api, base_dir):
        files = {**of_dir(base_dir), "pytorch_model.bin": b"\x80\x04K\x01."}
        assert_refused(upload(bob_api, zipped(files)), 422, "training.base_invalid")

    def test_a_subfolder(self, bob_api, base_dir):
        files = {**of_dir(base_dir), "a/b/extra.json": b"{}"}
        assert_refused(upload(bob_api, zipped(files)), 422, "training.base_invalid")

    def test_not_an_archive(self, bob_api):
        assert_refused(upload(bob_api, b"just some bytes, no archive"), 415, "training.base_format")

    def test_too_large(self, bob_api, base_dir, settings):
        settings.TRAINING_BASE_MAX_BYTES = 1000
        assert_refused(upload(bob_api, zipped(of_dir(base_dir))), 413, "training.base_too_large")

    def test_a_name_is_required(self, bob_api, base_dir):
        assert_refused(upload(bob_api, zipped(of_dir(base_dir)), name=""), 422, "training.base_name_invalid")

    def test_a_provider_cannot_upload(self, token_for, alice, acme, base_dir):
        client = token_for(alice, acme, ["train"])
        assert_refused(upload(client, zipped(of_dir(base_dir))), 403, "training.not_trainer")


@pytest.mark.timeout(900)  # validation, training and the gate: three sandboxed runs
def test_a_job_trains_an_uploaded_base(bob_api, base_dir, submit, sealed_version, bolt, license_terms):
    from tests.grants import grant_for_test
    from training.models import JobState

    base_id = upload(bob_api, zipped(of_dir(base_dir))).json()["id"]
    drain()
    base = BaseModel.objects.get(public_id=base_id)
    # Weights of an uploaded base leave custody only from a DP job (issue 20, docs/threat-model.md):
    # without DP they stay in custody. LoRA, so the gate's weights check has adapters to compare.
    kept = grant_for_test(sealed_version, bolt, **{**license_terms, "weights_may_leave": False})
    job = submit(kept, base=base, template="causal_lm_lora")
    assert job.spec["base"] == {"kind": "uploaded", "path": "base"}
    drain()
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, job.failure_reason
    assert job.receipt["receipt"]["base_model"]["sha256"] == base.file_hash
    assert job.gate["checks"]["weights"] == "passed"  # only the adapted layers changed
