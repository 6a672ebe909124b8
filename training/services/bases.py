"""Uploaded base models: a trainer's Hugging Face directory, as a zip or tar.

The archive is unpacked here only as far as is safe to do outside the sandbox, with bounded
memory and work (``base_archives``: declared sizes, compression ratio, member counts, streamed to
disk), and checked without torch: plain files with plain names, no pickles, safetensors headers
that match their files, a config.json whose positions and special ids make sense. Only then, in
one short transaction (no database write is held while a big file is read), the organisation's
quota (count and bytes of its uploads) is checked under a row lock and the row created. The files
are stored as a plain tar in the blob store, and the runner's ``validate-base`` loads them inside
the sandbox (a work item on queue ``training``), since loading a model is handling untrusted
input. What is refused leaves nothing behind: a refused upload stores nothing (the refusal is
audited); a base the sandbox rejects has its blob deleted (audited), keeping only its row and
reason, which a new upload of the same name replaces.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tarfile
import tempfile
import uuid
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from common.audit import audit_record
from common.blobs import blob_store
from common.exceptions import DomainError
from common.models import Organisation, User, WorkItem
from common.work import work_enqueue, work_handler
from training import sandbox
from training.exceptions import Conflict, Invalid, NotPermitted, TooLarge
from training.models import BaseKind, BaseModel, BaseState, BaseTask
from training.services.base_archives import archive_unpack, refusal

logger = logging.getLogger(__name__)

VALIDATE_KIND = "training.base_validate"
_CHUNK = 1 << 20
_MAX_CONFIG = 1024**2
_MAX_SAFETENSORS_HEADER = 16 * 1024**2
# States whose bases count against the organisation's quota (a rejected base holds no blob).
_HELD = (BaseState.PENDING, BaseState.VALIDATED)


def _files_listing(directory: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(directory.iterdir()):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        out.append({"name": path.name, "size": path.stat().st_size, "sha256": digest.hexdigest()})
    return out


def _tar_into(directory: Path, out: IO[bytes]) -> None:
    """A plain tar of the directory's files, written to ``out`` (a file: never held in memory)."""
    with tarfile.open(fileobj=out, mode="w") as tar:
        for path in sorted(directory.iterdir()):
            info = tarfile.TarInfo(name=path.name)
            info.size = path.stat().st_size
            info.mode = 0o644
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
    out.seek(0)


def _weights_problems(directory: Path) -> list[str]:
    """The safetensors headers (read alone, bounded) and config.json, checked without torch."""
    from training.runner.bases import config_limit_problems

    shapes: dict[str, list[int]] = {}
    for path in sorted(directory.glob("*.safetensors")):
        try:
            tensors = sandbox.safetensors_header(path, max_header=_MAX_SAFETENSORS_HEADER)
        except (ValueError, OSError) as error:
            return [f"{path.name[:100]}: {error}"]
        shapes.update({name: info["shape"] for name, info in tensors.items()})
    config_path = directory / "config.json"
    if config_path.stat().st_size > _MAX_CONFIG:
        return [f"config.json is over {_MAX_CONFIG:,} bytes"]
    config = json.loads(config_path.read_bytes())
    if "model.safetensors.index.json" in {p.name for p in directory.iterdir()}:
        return config_limit_problems(config)  # sharded: shapes span files the index names
    return config_limit_problems(config) + sandbox.config_problems(config, shapes)


def base_blob_key() -> str:
    return f"training/bases/{uuid.uuid4().hex}.tar"


def _quota_check(organisation: Organisation, size: int) -> None:
    """:raises Conflict: too many bases held. :raises TooLarge: too many bytes held."""
    held = BaseModel.objects.filter(owner=organisation, kind=BaseKind.UPLOADED, state__in=_HELD).aggregate(
        count=Count("pk"), size=Sum("size")
    )
    count, used = held["count"], int(held["size"] or 0)
    if count + 1 > settings.TRAINING_BASE_QUOTA_COUNT:
        raise Conflict(
            f"{organisation.name} holds {count} uploaded base models; the quota is "
            f"{settings.TRAINING_BASE_QUOTA_COUNT}.",
            code="training.base_quota_count",
        )
    if used + size > settings.TRAINING_BASE_QUOTA_BYTES:
        raise TooLarge(
            f"{organisation.name} holds {used:,} bytes of uploaded base models; this one ({size:,} "
            f"bytes) would pass the quota of {settings.TRAINING_BASE_QUOTA_BYTES:,}.",
            code="training.base_quota_bytes",
        )


def _name_check(organisation: Organisation, name: str) -> BaseModel | None:
    """The rejected base this upload replaces, if any. :raises Conflict: the name is taken."""
    same = BaseModel.objects.filter(Q(owner=organisation) | Q(owner__isnull=True), name=name).first()
    if same is not None and not (same.owner_id == organisation.pk and same.state == BaseState.REJECTED):
        raise Conflict(f"A base model named {name!r} exists already.", code="training.base_name_taken")
    return same


def _base_prepare(directory: Path, data: IO[bytes]) -> tuple[list[dict[str, Any]], str]:
    """Unpack and check the archive into ``directory``; returns its listing and hash. :raises DomainError."""
    from training.runner.bases import base_files_check, base_hash

    archive_unpack(
        data,
        directory,
        max_bytes=settings.TRAINING_BASE_MAX_BYTES,
        ratio=settings.TRAINING_BASE_MAX_RATIO,
    )
    problems = base_files_check(directory, max_bytes=settings.TRAINING_BASE_MAX_BYTES)
    if not problems:
        problems = _weights_problems(directory)
    if problems:
        raise refusal("; ".join(problems)[:1000])
    return _files_listing(directory), base_hash(directory)


def base_upload(
    *, actor: User, organisation: Organisation, name: str, data: IO[bytes], size: int
) -> BaseModel:
    """Check and store an uploaded base model, and queue its validation in the sandbox.

    :raises NotPermitted: not a trainer. :raises TooLarge, UnsupportedFormat, Invalid: a bad archive.
    :raises Conflict: the name is taken, or the organisation's base count quota is used up.
    :raises TooLarge: ``training.base_quota_bytes``: the organisation's byte quota would be passed.
    """
    if not organisation.is_trainer:
        raise NotPermitted(f"{organisation.name} is not a trainer organisation.", code="training.not_trainer")
    try:
        if size > settings.TRAINING_BASE_MAX_BYTES:
            raise TooLarge(
                f"The archive is {size:,} bytes; at most {settings.TRAINING_BASE_MAX_BYTES:,}.",
                code="training.base_too_large",
            )
        # Cheap refusals first (read-only queries), before anything is inflated.
        _name_check(organisation, name)
        _quota_check(organisation, 0)
        return _base_store(actor=actor, organisation=organisation, name=name, data=data)
    except DomainError as error:
        with transaction.atomic():
            audit_record(
                action="training.base_refused",
                actor=actor,
                organisation=organisation,
                object_type="base_model",
                details={"name": name[:120], "size": size, "code": error.code},
            )
        raise


def _base_store(*, actor: User, organisation: Organisation, name: str, data: IO[bytes]) -> BaseModel:
    key = base_blob_key()
    stored = False
    try:
        with tempfile.TemporaryDirectory(prefix="sealroom-base-") as tmp:
            directory = Path(tmp) / "base"
            directory.mkdir()
            files, file_hash = _base_prepare(directory, data)
            total = sum(f["size"] for f in files)
            _quota_check(organisation, total)
            with tempfile.TemporaryFile(dir=tmp) as packed:
                _tar_into(directory, packed)
                blob_store().put(key, packed)
                stored = True
        return _base_record(
            actor=actor, organisation=organisation, name=name, key=key, files=files, file_hash=file_hash
        )
    except BaseException:
        if stored:
            blob_store().delete(key)
        raise


@transaction.atomic
def _base_record(
    *,
    actor: User,
    organisation: Organisation,
    name: str,
    key: str,
    files: list[dict[str, Any]],
    file_hash: str,
) -> BaseModel:
    """The short write: quota and name again under the organisation's row lock, then the row."""
    Organisation.objects.select_for_update().filter(pk=organisation.pk).first()
    size = sum(f["size"] for f in files)
    _quota_check(organisation, size)
    replaced = _name_check(organisation, name)
    if replaced is not None:
        audit_record(
            action="training.base_delete",
            actor=actor,
            organisation=organisation,
            object_type="base_model",
            object_id=replaced.pk,
            details={"name": replaced.name, "reason": "a new upload of a rejected base's name"},
        )
        replaced.delete()
    base = BaseModel.objects.create(
        name=name,
        kind=BaseKind.UPLOADED,
        task=BaseTask.CAUSAL_LM,
        owner=organisation,
        uploaded_by=actor,
        file_hash=file_hash,
        files=files,
        size=size,
        blob_key=key,
        state=BaseState.PENDING,
    )
    audit_record(
        action="training.base_upload",
        actor=actor,
        organisation=organisation,
        object_type="base_model",
        object_id=base.pk,
        details={"name": name, "sha256": base.file_hash, "size": base.size},
    )
    work_enqueue(kind=VALIDATE_KIND, ref=str(base.pk), queue="training")
    return base


def base_unpack(*, base: BaseModel, into: Path) -> None:
    """Unpack a stored uploaded base (a tar this module wrote) into ``into``, streamed from the blob."""
    into.mkdir(mode=0o700)
    with blob_store().open(base.blob_key) as handle:
        # Our own plain tar: ratio 1, but the same bounded reader guards a tampered blob.
        archive_unpack(handle, into, max_bytes=settings.TRAINING_BASE_MAX_BYTES, ratio=1.5)


def base_positions(*, base: BaseModel) -> int | None:
    """How many positions an uploaded base takes (config.json, read from its blob); None if unknown."""
    from training.runner.bases import base_positions as positions_of

    if base.kind != BaseKind.UPLOADED or not base.blob_key:
        return None
    with blob_store().open(base.blob_key) as handle, tarfile.open(fileobj=handle, mode="r|") as tar:
        for member in tar:
            if member.name == "config.json" and member.isfile() and member.size <= _MAX_CONFIG:
                src = tar.extractfile(member)
                config = json.loads(src.read()) if src is not None else None
                return positions_of(config) if isinstance(config, dict) else None
    return None


def base_spec_check(*, base: BaseModel, spec: dict[str, Any]) -> None:
    """What the base alone says about a job's spec, before any record is read or slot spent.

    :raises Invalid: ``training.base_positions``: max_seq_len is over the base's positions.
    """
    max_seq_len = (spec.get("hyperparameters") or {}).get("max_seq_len")
    positions = base_positions(base=base)
    if positions is not None and isinstance(max_seq_len, int) and max_seq_len > positions:
        detail = f"max_seq_len {max_seq_len} is over the {positions} positions base model {base.name} takes."
        raise Invalid(
            detail,
            code="training.base_positions",
            errors=[
                {"pointer": "/hyperparameters/max_seq_len", "code": "over_base_positions", "detail": detail}
            ],
        )


def base_validate(*, base_id: int) -> BaseModel:
    """Load an uploaded base inside the sandbox and record what the runner found; a rejected base's
    blob is deleted (its row stays, with the reason)."""
    base = BaseModel.objects.get(pk=base_id)
    if base.state != BaseState.PENDING:
        return base
    found, reason = _validate_in_sandbox(base)
    with transaction.atomic():
        base = BaseModel.objects.select_for_update().get(pk=base_id)
        if base.state != BaseState.PENDING:
            return base
        key = base.blob_key
        if found is not None and found.get("ok") and reason is None:
            base.state = BaseState.VALIDATED
            base.architecture = str(found.get("architecture") or "")[:120]
            base.parameters = int(found.get("parameters") or 0)
            base.task = BaseTask.CAUSAL_LM if found.get("causal") else BaseTask.CLASSIFICATION
            base.validated_at = timezone.now()
        else:
            base.state = BaseState.REJECTED
            detail = (found or {}).get("detail") or reason or "no result"
            base.failure_reason = f"The model could not be loaded safely: {detail}"[:500]
            base.blob_key = ""
        base.save()
        audit_record(
            action=f"training.base_{base.state}",
            organisation=base.owner,
            object_type="base_model",
            object_id=base.pk,
            details={
                "architecture": base.architecture,
                "parameters": base.parameters,
                "blob_deleted": base.state == BaseState.REJECTED,
                "size": base.size,
            },
        )
    if base.state == BaseState.REJECTED and key:
        blob_store().delete(key)
    return base


def _validate_in_sandbox(base: BaseModel) -> tuple[dict[str, Any] | None, str | None]:
    """The runner's ``base`` event and, when the run failed, why."""
    events: list[dict[str, Any]] = []
    root = Path(settings.TRAINING_WORK_DIR)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    workdir = Path(tempfile.mkdtemp(prefix=f"base-{base.pk}-", dir=root))
    try:
        try:
            base_unpack(base=base, into=workdir / "base")
        except (DomainError, OSError) as error:
            return None, f"the stored archive cannot be read ({type(error).__name__})"
        result = sandbox.run_runner(
            ["validate-base", "--dir", "base", "--max-bytes", str(settings.TRAINING_BASE_MAX_BYTES)],
            workdir=workdir,
            limits=sandbox.Limits(
                memory_bytes=settings.TRAINING_MEMORY_BYTES,
                wall_seconds=float(settings.TRAINING_BASE_VALIDATE_SECONDS),
                max_processes=settings.TRAINING_MAX_PROCESSES,
                # The unpacked base is in the working directory; validating writes next to nothing.
                disk_bytes=settings.TRAINING_BASE_MAX_BYTES + 256 * 1024**2,
            ),
            on_event=events.append,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    found = next((e for e in events if e.get("event") == "base"), None)
    return found, None if result.exit_code == 0 else (result.reason or f"exit code {result.exit_code}")


@work_handler(VALIDATE_KIND)
def _validate_handler(item: WorkItem) -> None:
    base_validate(base_id=int(item.ref))
