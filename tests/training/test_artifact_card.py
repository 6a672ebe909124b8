"""A released causal-LM artifact loads with transformers, generates clean text, and carries a model
card that names its receipt (issue 18, item 5).

The job runs for real: the launcher streams the sealed version's records into the runner in the
sandbox (gpt2-tiny, tiny settings), the gate passes it, and the archive is the one a trainer
downloads.
"""

from __future__ import annotations

import importlib
import io
import json
import sys
import tarfile
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from tests.training.conftest import drain
from training.artifacts import artifact_bytes
from training.model_card import card_front_matter
from training.models import JobState, TrainingJob
from training.receipts import receipt_sha256

transformers = pytest.importorskip("transformers")


@pytest.fixture(autouse=True)
def _work_dir(settings, tmp_path: Path) -> Path:
    settings.TRAINING_WORK_DIR = tmp_path / "training-work"
    settings.TRAINING_WALL_SECONDS = 300
    settings.TRAINING_MEMORY_BYTES = 4 * 1024**3
    settings.TRAINING_CANARY_CANDIDATES = 31
    return settings.TRAINING_WORK_DIR


def _unpack(archive: bytes, into: Path) -> Path:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        tar.extractall(into, filter="data")
    return into / "model"


def test_the_causal_artifact_generates_clean_text_and_its_card_names_the_receipt(
    submit, grant, sealed_version, tmp_path
):
    job = submit(grant)
    drain()
    job = TrainingJob.objects.get(pk=job.pk)
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)
    archive = artifact_bytes(job)
    model_dir = _unpack(archive, tmp_path / "download")

    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        "<|endoftext|>",
        "<|endoftext|>",
        "<|pad|>",
    )
    assert tokenizer.eos_token_id == model.config.eos_token_id == model.generation_config.eos_token_id
    prompt = tokenizer("the quarterly report", return_tensors="pt")
    assert prompt["input_ids"][0].tolist()[0] == tokenizer.bos_token_id
    output = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    for text in (tokenizer.decode(output[0]), tokenizer.decode(output[0], skip_special_tokens=True)):
        assert "[CLS]" not in text and "[SEP]" not in text and "[PAD]" not in text
    clean = tokenizer.decode(output[0], skip_special_tokens=True)
    assert clean.startswith("the quarterly report") and "<|" not in clean

    # The model card: Hugging Face front matter that parses, naming the receipt by its hash.
    card = (model_dir / "README.md").read_text()
    metadata = card_front_matter(card)
    lineage = metadata["sealroom"]
    assert lineage["receipt_sha256"] == receipt_sha256(job.receipt)
    assert lineage["merkle_root"] == sealed_version.merkle_root
    assert lineage["license_ref"] == grant.external_ref
    assert lineage["terms_sha256"] == job.receipt["receipt"]["license"]["terms_sha256"]
    assert metadata["license"] == "other" and "sealroom" in metadata["tags"]
    assert metadata["pipeline_tag"] == "text-generation" and lineage["epsilon"] is None
    assert "non-commercial research" in card and "without differential privacy" in card
    # The receipt covers every other file; the card is outside it (it names the receipt).
    listed = {f["name"] for f in job.receipt["receipt"]["artifact_files"]}
    assert {p.name for p in model_dir.iterdir()} == listed | {"README.md"}

    # The platform's verifier accepts the archive, and refuses a card that names another receipt.
    receipt_path = tmp_path / "receipt.json"
    receipt_path.write_text(json.dumps(job.receipt))
    (tmp_path / "model.tar.gz").write_bytes(archive)
    out = io.StringIO()
    call_command("verify_receipt", str(receipt_path), artifact=str(tmp_path / "model.tar.gz"), stdout=out)
    assert "archive matches" in out.getvalue()
    forged = tmp_path / "forged.tar.gz"
    (model_dir / "README.md").write_text(card.replace(lineage["receipt_sha256"], "0" * 64))
    with tarfile.open(forged, mode="w:gz") as tar:
        tar.add(model_dir, arcname="model")
    with pytest.raises(CommandError, match=r"README\.md: the model card does not name this receipt"):
        call_command("verify_receipt", str(receipt_path), artifact=str(forged), stdout=io.StringIO())

    # The SDK's verifier (sdk/, imported from the repository as tests/sdk does) agrees.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk"))
    sealroom_receipts = importlib.import_module("sealroom.receipts")
    assert sealroom_receipts.archive_problems(job.receipt["receipt"], tmp_path / "model.tar.gz") == []
    assert sealroom_receipts.archive_problems(job.receipt["receipt"], forged) == [
        "README.md: the model card does not name this receipt's sha256"
    ]
