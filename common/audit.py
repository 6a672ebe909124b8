"""Append to the hash-chained audit log (DESIGN.md "Audit log", docs/audit.md "Sequencer").

Like a transparency log (Certificate Transparency, Trillian), appending and
sequencing are two steps:

- ``audit_record`` inserts the event *pending* (no ``seq``, ``prev_hash`` or
  ``hash``) in the caller's transaction, without any shared lock: the audited
  action and its event commit together, or neither does, and audited writes
  run side by side like any insert.
- ``audit_integrate``, the sequencer, takes committed pending events in id
  order and gives them consecutive sequence numbers and chain hashes, a batch
  per transaction, with the chain head and any checkpoint due: a batch is
  integrated whole or not at all, so a killed sequencer leaves no gap and no
  event twice. One runs at a time (the head row's lock; another one skips).
  It runs in a daemon thread of each process, poked by every writer's
  commit (``audit_integrate_soon``: the writer never waits for it); in
  Celery workers the same thread also sweeps every ``AUDIT_MERGE_DELAY_MS``
  (``audit_sequencer_sweep``), the maximum merge delay.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from common.exceptions import Invalid
from common.models import AuditChainHead, AuditEvent, Organisation, User

GENESIS_HASH = "0" * 64

logger = logging.getLogger(__name__)


def audit_reason(reason: str, *, code: str) -> str:
    """The reason an operator gives for an action, stripped and cut to 300 characters.

    :raises Invalid: it is blank (field error at ``/reason``, problem code ``code``).
    """
    cleaned = reason.strip()
    if not cleaned:
        raise Invalid(
            "Give a reason: it goes into the audit log.",
            code=code,
            errors=[{"pointer": "/reason", "code": "required", "detail": "Give a reason."}],
        )
    return cleaned[:300]


def format_instant(at: datetime) -> str:
    """An instant as the hashed and signed bytes spell it: UTC, microseconds, ``Z``."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_event(
    *,
    seq: int,
    at: datetime,
    actor_id: int | None,
    actor_name: str,
    organisation_id: int | None,
    organisation_name: str,
    action: str,
    object_type: str,
    object_id: str,
    details: dict[str, Any],
    prev_hash: str,
) -> bytes:
    """The exact bytes an event's hash covers (sorted keys, no whitespace, UTC microseconds)."""
    body = {
        "seq": seq,
        "at": format_instant(at),
        "actor_id": actor_id,
        "actor_name": actor_name,
        "organisation_id": organisation_id,
        "organisation_name": organisation_name,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "details": details,
        "prev_hash": prev_hash,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def event_hash(event: AuditEvent) -> str:
    """The SHA-256 (hex) of the event's canonical bytes, as stored in ``AuditEvent.hash``.

    :raises ValueError: the event is pending (no seq yet): it has no hash until integrated.
    """
    if event.seq is None:
        raise ValueError("a pending audit event has no hash until the sequencer integrates it")
    return hashlib.sha256(
        canonical_event(
            seq=event.seq,
            at=event.at,
            actor_id=event.actor_id,
            actor_name=event.actor_name,
            organisation_id=event.organisation_id,
            organisation_name=event.organisation_name,
            action=event.action,
            object_type=event.object_type,
            object_id=event.object_id,
            details=event.details,
            prev_hash=event.prev_hash,
        )
    ).hexdigest()


def chain_head_lock() -> AuditChainHead:
    """The chain head, created if missing and locked until the caller's transaction ends."""
    head = AuditChainHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        AuditChainHead.objects.get_or_create(pk=1, defaults={"hash": GENESIS_HASH})
        head = AuditChainHead.objects.select_for_update().get(pk=1)
    return head


def audit_record(
    *,
    action: str,
    actor: User | None = None,
    actor_name: str = "",
    organisation: Organisation | None = None,
    object_type: str = "",
    object_id: object = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one pending event, in the caller's transaction, without any shared lock.

    The event commits with the caller's transaction or not at all; its
    ``seq``, ``prev_hash`` and ``hash`` are None/empty until the sequencer
    integrates it, right after the commit or within ``AUDIT_MERGE_DELAY_MS``.
    A caller that needs the sequence number calls ``audit_integrate()`` after
    its commit and reads the event again; the event's ``pk`` is known at once.
    ``details`` must be JSON-serialisable and must never hold custody records.
    """
    # Round-trip the details through JSON now, so the hash covers exactly what
    # the database will return later (tuples become lists, and so on).
    clean_details = json.loads(json.dumps(details or {}, sort_keys=True, default=str))
    event = AuditEvent(
        seq=None,
        # Microsecond precision: what every backend stores without rounding.
        at=timezone.now(),
        actor_id=actor.pk if actor is not None else None,
        actor_name=actor_name or (actor.get_username() if actor is not None else "system"),
        organisation_id=organisation.pk if organisation is not None else None,
        organisation_name=organisation.name if organisation is not None else "",
        action=action,
        object_type=object_type,
        object_id=str(object_id) if object_id != "" else "",
        details=clean_details,
        prev_hash="",
        hash="",
    )
    # No savepoint of its own: if the insert fails, the caller's whole
    # transaction rolls back, so an action can never commit without its event.
    event.save(force_insert=True)
    _integrate_after_commit()
    return event


# --- The sequencer -----------------------------------------------------------------


@dataclass(frozen=True)
class IntegrateResult:
    """What one ``audit_integrate`` call did."""

    integrated: int = 0
    batches: int = 0
    # Another sequencer held the head when this one looked: it integrates what is pending.
    busy: bool = False
    head_seq: int | None = None


@dataclass(frozen=True)
class PendingSummary:
    """Events committed but not integrated yet: the sequencer's lag."""

    count: int
    oldest_at: datetime | None

    def oldest_age_seconds(self, now: datetime | None = None) -> float | None:
        if self.oldest_at is None:
            return None
        return max(0.0, ((now or timezone.now()) - self.oldest_at).total_seconds())


def audit_pending() -> PendingSummary:
    """How many events await the sequencer, and when the oldest was appended (two indexed queries)."""
    pending = AuditEvent.objects.filter(seq__isnull=True)
    oldest = pending.order_by("id").values_list("at", flat=True).first()
    return PendingSummary(count=pending.count() if oldest is not None else 0, oldest_at=oldest)


def audit_integrate(
    *, batch_size: int | None = None, max_batches: int | None = None, wait: bool = True
) -> IntegrateResult:
    """Integrate committed pending events, a batch per transaction, until none is left.

    Each batch takes up to ``batch_size`` (default ``AUDIT_SEQUENCER_BATCH``)
    pending events in id order, gives them the next sequence numbers and
    chain hashes, moves the head and signs a checkpoint if one is due, all in
    one transaction. By default (``wait``) it waits for another sequencer
    holding the head and then integrates what is left: what a caller that
    needs every committed event integrated wants. The background sequencers
    pass ``wait=False``: when another holds the head they return at once
    (``busy``). Stops after
    ``max_batches`` if given. Call it outside any transaction of one's own:
    inside one, the head stays locked until it ends.
    """
    size = batch_size or settings.AUDIT_SEQUENCER_BATCH
    integrated = batches = 0
    head_seq = None
    while max_batches is None or batches < max_batches:
        outcome = _integrate_batch(size, wait=wait)
        if outcome is None:
            return IntegrateResult(integrated, batches, busy=True, head_seq=head_seq)
        count, head_seq = outcome
        if count == 0:
            break
        integrated += count
        batches += 1
        if count < size:
            break
    return IntegrateResult(integrated, batches, busy=False, head_seq=head_seq)


# The columns an event's hash covers besides seq and prev_hash (see canonical_event).
_CONTENT_FIELDS = (
    "at",
    "actor_id",
    "actor_name",
    "organisation_id",
    "organisation_name",
    "action",
    "object_type",
    "object_id",
    "details",
)


def _head_lock_or_skip(*, wait: bool) -> AuditChainHead | None:
    """The head, locked for this transaction; None when another sequencer holds it (unless ``wait``).

    Postgres: ``FOR UPDATE SKIP LOCKED`` (``FOR UPDATE`` with ``wait``). SQLite
    takes no row locks: its IMMEDIATE transactions let one writer in at a time.
    """
    head = AuditChainHead.objects.select_for_update(skip_locked=not wait).filter(pk=1).first()
    if head is not None:
        return head
    if AuditChainHead.objects.filter(pk=1).exists():
        return None
    return chain_head_lock()


def _integrate_batch(size: int, *, wait: bool) -> tuple[int, int] | None:
    """One batch in one transaction: (events integrated, head seq), or None if the head was busy."""
    with transaction.atomic():
        head = _head_lock_or_skip(wait=wait)
        if head is None:
            return None
        # Plain tuples, not model instances: the sequencer's cost per event is what bounds it.
        batch = list(
            AuditEvent.objects.filter(seq__isnull=True)
            .order_by("id")
            .values_list("id", *_CONTENT_FIELDS)[:size]
        )
        if not batch:
            return 0, head.seq
        seq, prev_hash = head.seq, head.hash
        rows: list[tuple[int, int, str, str]] = []
        for event_id, *content in batch:
            seq += 1
            body = canonical_event(
                seq=seq, prev_hash=prev_hash, **dict(zip(_CONTENT_FIELDS, content, strict=True))
            )
            event_hash_hex = hashlib.sha256(body).hexdigest()
            rows.append((event_id, seq, prev_hash, event_hash_hex))
            prev_hash = event_hash_hex
        _write_sequenced(rows)
        moved = AuditChainHead.objects.filter(pk=1, seq=head.seq, hash=head.hash).update(
            seq=seq, hash=prev_hash
        )
        if moved != 1:
            raise IntegrityError("the audit chain head moved under the sequencer; batch rolled back")
        head.seq, head.hash = seq, prev_hash
        _after_integrate(head)
    return len(batch), seq


def _write_sequenced(rows: list[tuple[int, int, str, str]]) -> None:
    """Set (seq, prev_hash, hash) of each pending event id in one statement; all or the batch fails."""
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    # Postgres and SQLite (3.33+) both take UPDATE ... FROM over a VALUES list;
    # only the way the list's columns are named differs.
    values = ", ".join(["(CAST(%s AS bigint), CAST(%s AS bigint), %s, %s)"] * len(rows))
    if connection.vendor == "postgresql":
        source = f"(VALUES {values}) AS v(id, seq, prev_hash, hash)"
    else:
        source = (
            "(SELECT column1 AS id, column2 AS seq, column3 AS prev_hash, column4 AS hash "  # noqa: S608
            f"FROM (VALUES {values})) AS v"
        )
    sql = (
        f"UPDATE {table} SET seq = v.seq, prev_hash = v.prev_hash, hash = v.hash "  # noqa: S608 - placeholders only
        f"FROM {source} WHERE {table}.id = v.id AND {table}.seq IS NULL"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [value for row in rows for value in row])
        if cursor.rowcount != len(rows):
            raise IntegrityError(
                f"the sequencer set {cursor.rowcount} of {len(rows)} pending audit events; batch rolled back"
            )


def _after_integrate(head: AuditChainHead) -> None:
    """Checkpointing: every AUDIT_CHECKPOINT_EVERY events (or seconds) a checkpoint is signed."""
    from common.audit_checkpoints import checkpoint_if_due

    checkpoint_if_due(head)


# --- The sequencer thread: integration right after writers' commits ---------------------

# After a round, the thread waits this long before the next one, so that under
# load each round integrates what many commits appended (group commit).
_GATHER_SECONDS = 0.01
# Idle this long, the thread lets its database connection go.
_IDLE_CLOSE_SECONDS = 0.5
# How long stopping the thread waits for a round in flight to end.
_STOP_TIMEOUT_SECONDS = 30.0


class _SequencerThread:
    """One daemon thread per process: after a writer's commit pokes it, it integrates what is pending.

    Writers never run the sequencer themselves, so an audited request pays
    only for its insert; rounds follow each other at least ``_GATHER_SECONDS``
    apart, so batches grow with the load instead of rounds multiplying. When
    another process's sequencer holds the head, the thread waits for it once
    and integrates what it left (waiting costs nothing; polling with many
    processes cost more than the work). Started on first use in each process
    (after a fork, anew); ``stop`` ends it and ``paused`` keeps it from starting.
    """

    def __init__(self) -> None:
        self._start_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._paused = False
        # Set in worker processes: a round at least this often, poked or not (the sweep).
        self.sweep_seconds: float | None = None

    def poke(self) -> None:
        if self._paused:
            return
        if not self._running_here():
            with self._start_lock:
                if self._paused:
                    return
                if not self._running_here():
                    self._wake, self._stop = threading.Event(), threading.Event()
                    self._pid = os.getpid()
                    self._thread = threading.Thread(
                        target=self._run, args=(self._wake, self._stop), name="audit-sequencer", daemon=True
                    )
                    self._thread.start()
        self._wake.set()

    def stop(self, *, pause: bool = False) -> None:
        """End the thread after its round in flight; with ``pause``, pokes start none until ``resume``."""
        with self._start_lock:
            self._paused = self._paused or pause
            thread = self._thread if self._running_here() else None
            self._stop.set()
            self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(_STOP_TIMEOUT_SECONDS)
            if thread.is_alive():
                logger.warning("audit sequencer thread still in a round after %ss", _STOP_TIMEOUT_SECONDS)

    def resume(self) -> None:
        self._paused = False

    def _running_here(self) -> bool:
        return self._thread is not None and self._pid == os.getpid() and self._thread.is_alive()

    def _run(self, wake: threading.Event, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                sweep = self.sweep_seconds
                if not wake.wait(timeout=sweep or _IDLE_CLOSE_SECONDS) and not sweep:
                    connection.close()
                    wake.wait()
                if stop.is_set():
                    return
                wake.clear()
                self._round()
                stop.wait(_GATHER_SECONDS)
        finally:
            connection.close()

    @staticmethod
    def _round() -> None:
        try:
            # Another sequencer holds the head: wait for it once, then integrate what it left.
            if audit_integrate(wait=False).busy:
                audit_integrate(wait=True)
        except Exception:  # the thread must live on; the next round or the beat sweep covers the gap
            logger.warning(
                "audit sequencer round failed; the next round or the sweep integrates", exc_info=True
            )
            connection.close()


_sequencer = _SequencerThread()


def _integrate_after_commit() -> None:
    """Poke the sequencer thread when this transaction commits (in autocommit: now), once per transaction."""
    conn = transaction.get_connection()
    if conn.in_atomic_block and any(entry[1] is audit_integrate_soon for entry in conn.run_on_commit):
        return
    transaction.on_commit(audit_integrate_soon)


def audit_integrate_soon() -> None:
    """Ask this process's sequencer thread to integrate what is pending; returns at once, never raises."""
    _sequencer.poke()


def audit_sequencer_stop(*, pause: bool = False) -> None:
    """End this process's sequencer thread once its round in flight (if any) is over.

    The next writer's commit starts a new one, unless ``pause``: then none
    starts until ``audit_sequencer_resume()``. Tests stop it between tests, so
    that no round of one test commits a chain head into the next.
    """
    _sequencer.stop(pause=pause)


def audit_sequencer_resume() -> None:
    """Let writers' commits start the sequencer thread again after ``audit_sequencer_stop(pause=True)``."""
    _sequencer.resume()


def audit_sequencer_sweep(seconds: float | None = None) -> None:
    """Make this process's sequencer thread also run every ``seconds`` (default: the maximum merge delay).

    Celery workers call it when ready (``common.tasks``): whatever a writer's
    poke did not integrate (its process died, its round failed, another
    sequencer was busy) is integrated within ``AUDIT_MERGE_DELAY_MS``.
    ``None`` after a call stops nothing: pass ``0`` to stop sweeping.
    """
    _sequencer.sweep_seconds = (
        (settings.AUDIT_MERGE_DELAY_MS / 1000) if seconds is None else (seconds or None)
    )
    _sequencer.poke()
