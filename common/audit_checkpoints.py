"""Signed checkpoints of the audit chain, and their copy outside the database.

A checkpoint is an Ed25519 signature (``common.signing``) over the canonical
bytes of (seq, hash, key id, signed_at) of the chain at one point. One is
signed inside the sequencer's batch transaction every ``AUDIT_CHECKPOINT_EVERY``
events or ``AUDIT_CHECKPOINT_SECONDS`` (``checkpoint_if_due``), and by the
periodic ``checkpoint_tick`` whenever events were integrated since the last one.

After commit, each checkpoint is appended to a JSON Lines file under
``AUDIT_EXPORT_DIR`` with the public keys beside it, so that anyone can check
the chain without the database, and so that deleting the tail of the log
(with its checkpoint rows) is caught by the copy that the database does not
hold. Layout and the exact signed bytes: ``docs/audit.md``.

With blobs in S3 (``SEALROOM_BLOB_URL``), the export goes to the bucket
instead, where every web and worker machine sees the same copy: one object
per checkpoint, ``audit-export/checkpoints/<seq, 20 digits>.json`` holding its
line, and ``audit-export/public-keys.json``. An object per seq is S3's append:
written once, never rewritten (a seq already there is skipped, as a line
already in the file is), and two exporters at once write the same bytes, so no
lock is needed. ``export_path`` is then the ``s3://`` URL of that folder, and
``export_read`` and ``public_keys_read`` read the bucket.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from common.audit import audit_integrate, format_instant
from common.blobs import blob_store
from common.models import AuditChainHead, AuditCheckpoint
from common.signing import signing_key_provider

logger = logging.getLogger(__name__)

# Domain separation: the same keys sign job receipts, so a checkpoint's bytes
# say what they are and a receipt's signature can never pass for one.
CHECKPOINT_PURPOSE = "sealroom.audit.checkpoint.v1"
EXPORT_FILE = "checkpoints.jsonl"
PUBLIC_KEYS_FILE = "public-keys.json"
_LOCK_FILE = ".export.lock"
_LINE_FIELDS = ("seq", "hash", "key_id", "signed_at", "signature")


def checkpoint_message(*, seq: int, hash: str, key_id: str, signed_at: str) -> bytes:
    """The exact bytes a checkpoint signature covers: canonical JSON (sorted keys, no spaces)."""
    body = {
        "purpose": CHECKPOINT_PURPOSE,
        "seq": seq,
        "hash": hash,
        "key_id": key_id,
        "signed_at": signed_at,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class ExportedCheckpoint:
    """One line of the export file."""

    seq: int
    hash: str
    key_id: str
    signed_at: str
    signature: str

    @classmethod
    def from_model(cls, checkpoint: AuditCheckpoint) -> ExportedCheckpoint:
        return cls(
            seq=checkpoint.seq,
            hash=checkpoint.hash,
            key_id=checkpoint.key_id,
            signed_at=format_instant(checkpoint.signed_at),
            signature=checkpoint.signature,
        )

    def message(self) -> bytes:
        """The bytes the signature covers."""
        return checkpoint_message(seq=self.seq, hash=self.hash, key_id=self.key_id, signed_at=self.signed_at)

    def to_line(self) -> bytes:
        body = {name: getattr(self, name) for name in _LINE_FIELDS}
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode() + b"\n"


# Where an export lives: the local file, or the s3:// URL of its folder in the bucket.
ExportLocation = Path | str
BUCKET_FOLDER = "audit-export"
_BUCKET_CHECKPOINTS = f"{BUCKET_FOLDER}/checkpoints"


@dataclass
class ExportRead:
    """What the export holds: its checkpoints in file (seq) order, and unreadable line numbers (seqs)."""

    path: ExportLocation
    exists: bool = False
    checkpoints: list[ExportedCheckpoint] = field(default_factory=list)
    malformed_lines: list[int] = field(default_factory=list)


def export_dir() -> Path:
    return Path(settings.AUDIT_EXPORT_DIR)


def exports_to_bucket() -> bool:
    """Whether the export goes to the S3 bucket (blobs in S3) rather than ``AUDIT_EXPORT_DIR``."""
    return str(settings.BLOB_BACKEND) == "s3"


def _bucket_url(key: str) -> str:
    from common.s3 import S3Location

    return f"{S3Location.parse(settings.BLOB_URL)}{key}"


def export_path() -> ExportLocation:
    """The JSON Lines file of exported checkpoints (the bucket folder's URL when blobs are in S3)."""
    if exports_to_bucket():
        return _bucket_url(f"{_BUCKET_CHECKPOINTS}/")
    return export_dir() / EXPORT_FILE


def public_keys_path() -> ExportLocation:
    """The JSON file of public keys (key id -> PEM) beside the export."""
    if exports_to_bucket():
        return _bucket_url(f"{BUCKET_FOLDER}/{PUBLIC_KEYS_FILE}")
    return export_dir() / PUBLIC_KEYS_FILE


def public_keys_beside(export: ExportLocation) -> ExportLocation:
    """The public keys file published beside the export ``export``."""
    return export.parent / PUBLIC_KEYS_FILE if isinstance(export, Path) else public_keys_path()


def export_exists(export: ExportLocation) -> bool:
    """Whether anything was exported there yet."""
    return export.exists() if isinstance(export, Path) else bool(_bucket_checkpoint_keys())


def _bucket_checkpoint_key(seq: int) -> str:
    return f"{_BUCKET_CHECKPOINTS}/{seq:020d}.json"


def _bucket_checkpoint_keys() -> list[str]:
    store: Any = blob_store()
    return list(store.keys(_BUCKET_CHECKPOINTS))


# --- Signing ---------------------------------------------------------------


def checkpoint_if_due(head: AuditChainHead) -> AuditCheckpoint | None:
    """Sign a checkpoint at ``head`` if enough events or time passed since the last one.

    Called by the sequencer (``common.audit.audit_integrate``) with the head
    locked, inside the batch's transaction, so the checkpoint commits with the
    events it covers.
    """
    pending = head.seq - head.last_checkpoint_seq
    if pending <= 0:
        return None
    elapsed = (timezone.now() - head.last_checkpoint_at).total_seconds()
    if pending < settings.AUDIT_CHECKPOINT_EVERY and elapsed < settings.AUDIT_CHECKPOINT_SECONDS:
        return None
    return checkpoint_sign(head)


def checkpoint_sign(head: AuditChainHead) -> AuditCheckpoint | None:
    """Sign (head.seq, head.hash) now; the export follows after commit.

    The caller holds the head's lock. Returns None, and logs, when the key
    provider fails: a missing checkpoint is retried by the next tick, while
    failing the append would stop every audited action with it.
    """
    signed_at = timezone.now()
    try:
        key = signing_key_provider().current()
        message = checkpoint_message(
            seq=head.seq, hash=head.hash, key_id=key.key_id, signed_at=format_instant(signed_at)
        )
        signature = key.sign(message)
    except (OSError, ValueError, KeyError):
        logger.exception("audit checkpoint at seq %s not signed; the next tick retries", head.seq)
        return None
    checkpoint = AuditCheckpoint.objects.create(
        seq=head.seq, hash=head.hash, signed_at=signed_at, key_id=key.key_id, signature=signature
    )
    head.last_checkpoint_seq = head.seq
    head.last_checkpoint_at = signed_at
    head.save(update_fields=["last_checkpoint_seq", "last_checkpoint_at"])
    # Only a committed checkpoint may leave the database: exporting one that
    # later rolls back would make an intact log look truncated.
    transaction.on_commit(_export_after_commit, robust=True)
    return checkpoint


def checkpoint_tick() -> AuditCheckpoint | None:
    """Integrate what is pending, sign a checkpoint if events arrived since the last one, then export.

    Celery beat calls this every ``AUDIT_CHECKPOINT_SECONDS``; so does
    ``manage.py audit_checkpoint``. The export also repairs a lost one: a
    checkpoint whose after-commit export never ran, or a lost export file.
    Returns the new checkpoint, if one was signed.
    """
    # The checkpoint covers every event committed so far, not only those the
    # sequencer happened to reach (a busy sequencer integrates them itself).
    before = AuditCheckpoint.objects.order_by("-seq").values_list("seq", flat=True).first()
    audit_integrate(wait=True)
    with transaction.atomic():
        head = AuditChainHead.objects.select_for_update().filter(pk=1).first()
        checkpoint = None
        if head is not None and head.seq > head.last_checkpoint_seq:
            checkpoint = checkpoint_sign(head)
        if checkpoint is None:
            transaction.on_commit(_export_after_commit, robust=True)
            # The integration may have signed one itself (a checkpoint was due by time).
            latest = AuditCheckpoint.objects.order_by("-seq").first()
            if latest is not None and (before is None or latest.seq > before):
                checkpoint = latest
    return checkpoint


# --- Export ----------------------------------------------------------------


def _export_after_commit() -> None:
    written = checkpoint_export()
    if written:
        logger.info("audit checkpoints exported: seq %s", ", ".join(map(str, written)))


def checkpoint_export() -> list[int]:
    """Append each checkpoint missing from the export file, fsync, and mark it exported.

    Idempotent, and safe to run from several processes at once (an exclusive
    file lock): a seq is never written twice. Returns the seqs appended.

    :raises OSError: the export directory cannot be written.
    """
    if exports_to_bucket():
        return _bucket_export()
    directory = export_dir()
    directory.mkdir(parents=True, exist_ok=True)
    public_keys_export()
    with _export_lock(directory):
        present = {checkpoint.seq for checkpoint in export_read().checkpoints}
        missing = [
            ExportedCheckpoint.from_model(checkpoint)
            for checkpoint in AuditCheckpoint.objects.order_by("seq").iterator(chunk_size=2000)
            if checkpoint.seq not in present
        ]
        if missing:
            _append_lines(directory / EXPORT_FILE, [checkpoint.to_line() for checkpoint in missing])
    written = [checkpoint.seq for checkpoint in missing]
    _mark_exported(present | set(written))
    return written


def _bucket_export() -> list[int]:
    """``checkpoint_export`` into the bucket: an object per checkpoint missing there."""
    public_keys_export()
    present = {seq for key in _bucket_checkpoint_keys() if (seq := _seq_of(key)) is not None}
    store = blob_store()
    written = []
    for checkpoint in AuditCheckpoint.objects.order_by("seq").iterator(chunk_size=2000):
        if checkpoint.seq not in present:
            line = ExportedCheckpoint.from_model(checkpoint).to_line()
            store.put(_bucket_checkpoint_key(checkpoint.seq), io.BytesIO(line))
            written.append(checkpoint.seq)
    _mark_exported(present | set(written))
    return written


def _seq_of(key: str) -> int | None:
    name = key.rsplit("/", 1)[-1].removesuffix(".json")
    return int(name) if name.isdigit() else None


def _mark_exported(seqs: set[int]) -> None:
    # Also marks lines written by an export that crashed before this update.
    pending = AuditCheckpoint.objects.filter(exported_at__isnull=True).values_list("seq", flat=True)
    done = [seq for seq in pending if seq in seqs]
    if done:
        AuditCheckpoint.objects.filter(seq__in=done).update(exported_at=timezone.now())


def _append_lines(path: Path, lines: list[bytes]) -> None:
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        payload = b"".join(lines)
        if not created and not _ends_with_newline(path):
            # A write torn by a crash left half a line: end it, so it stays one
            # unreadable line rather than corrupting the next checkpoint.
            payload = b"\n" + payload
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        _fsync_dir(path.parent)


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as existing:
        existing.seek(0, os.SEEK_END)
        if existing.tell() == 0:
            return True
        existing.seek(-1, os.SEEK_END)
        return existing.read(1) == b"\n"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def _export_lock(directory: Path) -> Iterator[None]:
    fd = os.open(directory / _LOCK_FILE, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def public_keys_export() -> dict[str, str]:
    """Write every public signing key (key id -> PEM) beside the export; returns them.

    Keys already in the file stay there, so checkpoints signed before a key
    left the key provider remain checkable.
    """
    path = public_keys_path()
    existing = public_keys_read(path)
    keys = existing | signing_key_provider().public_keys()
    if not keys or keys == existing:
        return keys
    body = json.dumps({"keys": keys}, sort_keys=True, indent=2).encode() + b"\n"
    if not isinstance(path, Path):
        blob_store().put(f"{BUCKET_FOLDER}/{PUBLIC_KEYS_FILE}", io.BytesIO(body))
        return keys
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return keys


def public_keys_read(path: ExportLocation | None = None) -> dict[str, str]:
    """The exported public keys (key id -> PEM); empty when there is no readable file."""
    path = path or public_keys_path()
    try:
        if isinstance(path, Path):
            body = json.loads(path.read_text())
        else:
            with blob_store().open(f"{BUCKET_FOLDER}/{PUBLIC_KEYS_FILE}") as handle:
                body = json.loads(handle.read())
    except (OSError, ValueError):
        return {}
    keys = body.get("keys") if isinstance(body, dict) else None
    if not isinstance(keys, dict):
        return {}
    return {str(key_id): pem for key_id, pem in keys.items() if isinstance(pem, str)}


def export_read(path: ExportLocation | None = None) -> ExportRead:
    """Parse the export file; unreadable lines are listed, not raised."""
    path = path or export_path()
    if not isinstance(path, Path):
        return _bucket_read(path)
    result = ExportRead(path=path)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return result
    result.exists = True
    with handle:
        for number, raw in enumerate(handle, start=1):
            checkpoint = _parse_line(raw)
            if checkpoint is None:
                result.malformed_lines.append(number)
            else:
                result.checkpoints.append(checkpoint)
    return result


def _bucket_read(url: str) -> ExportRead:
    """The bucket's checkpoint objects in seq order; one that does not parse, or whose line names
    another seq than its key (moved or rewritten), is listed by the seq of its key."""
    store = blob_store()
    result = ExportRead(path=url)
    for key in _bucket_checkpoint_keys():
        result.exists = True
        with store.open(key) as handle:
            raw = handle.read()
        checkpoint = _parse_line(raw) if raw.count(b"\n") == 1 else None
        seq = _seq_of(key)
        if checkpoint is None or checkpoint.seq != seq:
            result.malformed_lines.append(seq if seq is not None else -1)
        else:
            result.checkpoints.append(checkpoint)
    return result


def _parse_line(raw: bytes) -> ExportedCheckpoint | None:
    try:
        body: Any = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    seq, texts = body.get("seq"), [body.get(name) for name in _LINE_FIELDS[1:]]
    if not isinstance(seq, int) or isinstance(seq, bool):
        return None
    hash_, key_id, signed_at, signature = texts
    if not all(isinstance(text, str) for text in texts):
        return None
    return ExportedCheckpoint(
        seq=seq, hash=str(hash_), key_id=str(key_id), signed_at=str(signed_at), signature=str(signature)
    )


def checkpoint_latest() -> AuditCheckpoint | None:
    """The most recent signed checkpoint, if any."""
    return AuditCheckpoint.objects.order_by("-seq").first()
