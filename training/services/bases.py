"""Uploaded base models: a trainer's Hugging Face directory, as a zip or tar.

The archive is unpacked here only as far as is safe to do outside the sandbox:
plain files with plain names (one optional top folder), no links, devices or
paths that climb out, sizes counted while reading (no bombs), no pickles. The
files are stored as a plain tar in the blob store, and the runner's
``validate-base`` loads them inside the sandbox (a work item on queue
``training``), since loading a model is handling untrusted input.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from common.audit import audit_record
from common.blobs import blob_store
from common.models import Organisation, User, WorkItem
from common.work import work_enqueue, work_handler
from training import sandbox
from training.exceptions import Conflict, Invalid, NotPermitted, TooLarge, UnsupportedFormat
from training.models import BaseKind, BaseModel, BaseState, BaseTask

logger = logging.getLogger(__name__)

VALIDATE_KIND = "training.base_validate"
MAX_FILES = 64
_CHUNK = 1 << 20


def _refuse(detail: str) -> Invalid:
    return Invalid(
        detail,
        code="training.base_invalid",
        errors=[{"pointer": "/file", "code": "invalid", "detail": detail}],
    )


def _plain_name(raw: str) -> str:
    """The file's name inside the model directory. :raises Invalid: anything but a plain relative path."""
    path = PurePosixPath(raw.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or any(p in ("", ".") for p in path.parts[:-1]):
        raise _refuse(f"{raw!r} is not a plain relative path.")
    if len(path.parts) > 2:
        raise _refuse(f"{raw!r} is in a subfolder: put the model's files at the top of the archive.")
    name = path.parts[-1]
    if name.startswith(".") or "\x00" in name:
        raise _refuse(f"{raw!r} is not a plain file name.")
    return name


class _Budget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> None:
        self.used += n
        if self.used > self.limit:
            raise TooLarge(
                f"The unpacked model is over {self.limit:,} bytes.", code="training.base_too_large"
            )


def _copy(src: IO[bytes], dest: Path, budget: _Budget) -> None:
    with open(dest, "xb") as out:
        while chunk := src.read(_CHUNK):
            budget.take(len(chunk))
            out.write(chunk)


def _members_zip(archive: zipfile.ZipFile) -> Iterator[tuple[str, zipfile.ZipInfo]]:
    for info in archive.infolist():
        if info.is_dir():
            continue
        mode = (info.external_attr >> 16) & 0o170000
        if mode and mode != 0o100000:
            raise _refuse(f"{info.filename!r} is a link or special file.")
        yield info.filename, info


def _unpack_zip(data: IO[bytes], into: Path, budget: _Budget) -> None:
    with zipfile.ZipFile(data) as archive:
        for raw, info in _members_zip(archive):
            name = _plain_name(raw)
            with archive.open(info) as src:
                _copy(src, into / name, budget)


def _unpack_tar(data: IO[bytes], into: Path, budget: _Budget) -> None:
    with tarfile.open(fileobj=data, mode="r:*") as archive:
        for member in archive:
            if member.isdir():
                continue
            if not member.isfile():
                raise _refuse(f"{member.name!r} is a link or special file.")
            name = _plain_name(member.name)
            src = archive.extractfile(member)
            if src is None:
                raise _refuse(f"{member.name!r} cannot be read.")
            _copy(src, into / name, budget)


def archive_unpack(data: IO[bytes], into: Path) -> None:
    """Unpack a zip or tar (optionally gzip/bz2/xz) of plain files into ``into``.

    :raises UnsupportedFormat: neither zip nor tar. :raises Invalid: unsafe or duplicate members.
    :raises TooLarge: more than the upload limit unpacked.
    """
    head = data.read(8)
    data.seek(0)
    budget = _Budget(settings.TRAINING_BASE_MAX_BYTES)
    try:
        if head.startswith(b"PK"):
            _unpack_zip(data, into, budget)
        else:
            try:
                _unpack_tar(data, into, budget)
            except tarfile.ReadError:
                raise UnsupportedFormat(
                    "Upload the model directory as a .zip or .tar(.gz) archive.", code="training.base_format"
                ) from None
    except FileExistsError as exc:
        raise _refuse(f"{Path(str(exc.filename)).name!r} appears twice in the archive.") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise _refuse(f"The archive is damaged ({type(exc).__name__}).") from None
    files = list(into.iterdir())
    if len(files) > MAX_FILES:
        raise _refuse(f"The archive holds {len(files)} files; at most {MAX_FILES}.")


def _files_listing(directory: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(directory.iterdir()):
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        out.append({"name": path.name, "size": path.stat().st_size, "sha256": digest.hexdigest()})
    return out


def _tar_of(directory: Path) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(directory.iterdir()):
            info = tarfile.TarInfo(name=path.name)
            info.size = path.stat().st_size
            info.mode = 0o644
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
    buffer.seek(0)
    return buffer


def base_blob_key(base: BaseModel) -> str:
    return f"training/bases/base-{base.pk}.tar"


@transaction.atomic
def base_upload(
    *, actor: User, organisation: Organisation, name: str, data: IO[bytes], size: int
) -> BaseModel:
    """Check and store an uploaded base model, and queue its validation in the sandbox.

    :raises NotPermitted: not a trainer. :raises TooLarge, UnsupportedFormat, Invalid: a bad archive.
    :raises Conflict: the organisation already has a base of that name.
    """
    from training.runner.bases import base_files_check, base_hash

    if not organisation.is_trainer:
        raise NotPermitted(f"{organisation.name} is not a trainer organisation.", code="training.not_trainer")
    if size > settings.TRAINING_BASE_MAX_BYTES:
        raise TooLarge(
            f"The archive is {size:,} bytes; at most {settings.TRAINING_BASE_MAX_BYTES:,}.",
            code="training.base_too_large",
        )
    if (
        BaseModel.objects.filter(owner=organisation, name=name).exists()
        or BaseModel.objects.filter(owner__isnull=True, name=name).exists()
    ):
        raise Conflict(f"A base model named {name!r} exists already.", code="training.base_name_taken")
    with tempfile.TemporaryDirectory(prefix="sealroom-base-") as tmp:
        directory = Path(tmp)
        archive_unpack(data, directory)
        problems = base_files_check(directory, max_bytes=settings.TRAINING_BASE_MAX_BYTES)
        if problems:
            raise _refuse("; ".join(problems)[:1000])
        files = _files_listing(directory)
        base = BaseModel.objects.create(
            name=name,
            kind=BaseKind.UPLOADED,
            task=BaseTask.CAUSAL_LM,
            owner=organisation,
            uploaded_by=actor,
            file_hash=base_hash(directory),
            files=files,
            size=sum(f["size"] for f in files),
            state=BaseState.PENDING,
        )
        base.blob_key = base_blob_key(base)
        blob_store().put(base.blob_key, _tar_of(directory))
    base.save(update_fields=["blob_key"])
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
    """Unpack a stored uploaded base (a tar this module wrote) into ``into``."""
    into.mkdir(mode=0o700)
    with blob_store().open(base.blob_key) as handle:
        archive_unpack(io.BytesIO(handle.read()), into)


def base_validate(*, base_id: int) -> BaseModel:
    """Load an uploaded base inside the sandbox and record what the runner found."""
    base = BaseModel.objects.get(pk=base_id)
    if base.state != BaseState.PENDING:
        return base
    events: list[dict[str, Any]] = []
    root = Path(settings.TRAINING_WORK_DIR)
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    workdir = Path(tempfile.mkdtemp(prefix=f"base-{base.pk}-", dir=root))
    try:
        base_unpack(base=base, into=workdir / "base")
        result = sandbox.run_runner(
            ["validate-base", "--dir", "base", "--max-bytes", str(settings.TRAINING_BASE_MAX_BYTES)],
            workdir=workdir,
            limits=sandbox.Limits(
                memory_bytes=settings.TRAINING_MEMORY_BYTES,
                wall_seconds=float(settings.TRAINING_BASE_VALIDATE_SECONDS),
            ),
            on_event=events.append,
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    found = next((e for e in events if e.get("event") == "base"), None)
    with transaction.atomic():
        base = BaseModel.objects.select_for_update().get(pk=base_id)
        if found is not None and found.get("ok") and result.exit_code == 0:
            base.state = BaseState.VALIDATED
            base.architecture = str(found.get("architecture") or "")[:120]
            base.parameters = int(found.get("parameters") or 0)
            base.task = BaseTask.CAUSAL_LM if found.get("causal") else BaseTask.CLASSIFICATION
            base.validated_at = timezone.now()
        else:
            base.state = BaseState.REJECTED
            detail = (found or {}).get("detail") or result.reason or f"exit code {result.exit_code}"
            base.failure_reason = f"The model could not be loaded safely: {detail}"[:500]
        base.save()
        audit_record(
            action=f"training.base_{base.state}",
            organisation=base.owner,
            object_type="base_model",
            object_id=base.pk,
            details={"architecture": base.architecture, "parameters": base.parameters},
        )
    return base


@work_handler(VALIDATE_KIND)
def _validate_handler(item: WorkItem) -> None:
    base_validate(base_id=int(item.ref))
