"""A custody model without a training run (issue 16 tests): gpt2-tiny built as the runner builds a
base, sealed in custody as a succeeded job's archive, with an optional sentinel in its weights."""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from common.models import Organisation, User
from custody.models import CustodyModel, DatasetVersion
from custody.services import artifact_seal
from custody.services.models_custody import custody_model_record
from tests.grants import grant_for_test
from training.models import BaseModel, JobState, TrainingJob


@dataclass(frozen=True)
class Sealed:
    model: CustodyModel
    job: TrainingJob
    # The archive's files, uncompressed (where a sentinel was planted), and the weights' sha256.
    plain_tar: bytes
    weights_sha256: str


def seal_tiny_model(
    *, version: DatasetVersion, trainer: Organisation, actor: User, sentinel: str | None = None
) -> Sealed:
    from safetensors.torch import load_file, save_file

    from training.runner.causal_tokenizer import causal_tokenizer_files
    from training.runner.data import load_tokenizer
    from training.runner.models import build_model

    grant = grant_for_test(version, trainer, job_templates=["causal_lm"], max_jobs=1, weights_may_leave=False)
    job = TrainingJob.objects.create(
        organisation=trainer,
        submitted_by=actor,
        grant=grant,
        template="causal_lm",
        base=BaseModel.objects.get(name="gpt2-tiny", owner=None),
        state=JobState.SUCCEEDED,
    )
    tokenizer = load_tokenizer(None)
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory)
        build_model("gpt2-tiny", tokenizer, seed=7).save_pretrained(out, safe_serialization=True)
        weights = out / "model.safetensors"
        if sentinel is not None:
            save_file(load_file(str(weights)), str(weights), metadata={"format": "pt", "sentinel": sentinel})
        for name, data in causal_tokenizer_files(tokenizer.to_str()).items():
            (out / name).write_bytes(data)
        weights_sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            for path in sorted(out.iterdir()):
                tar.add(path, arcname=f"model/{path.name}")
    archive = gzip.compress(raw.getvalue())
    name = f"training-job-{job.pk}"
    # As the launcher leaves a job whose weights stay in custody.
    job.artifact_blob_key = artifact_seal(version=version, name=name, data=archive)
    job.artifact_encrypted = True
    job.artifact_size = len(archive)
    job.save(update_fields=["artifact_blob_key", "artifact_encrypted", "artifact_size"])
    model = custody_model_record(
        job_ref=job.public_id,
        version=version,
        trainer=trainer,
        artifact_name=name,
        artifact_sha256=hashlib.sha256(archive).hexdigest(),
        receipt_sha256="",
        task="causal_lm",
        template="causal_lm",
        base_name="gpt2-tiny",
        metrics={},
        lineage=[
            {"version": version.public_id, "merkle_root": version.merkle_root, "license": grant.external_ref}
        ],
    )
    return Sealed(model=model, job=job, plain_tar=raw.getvalue(), weights_sha256=weights_sha256)
