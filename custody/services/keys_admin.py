"""Key management and takedown (DESIGN.md "Keys and takedown").

- Master-key rotation: a new master version wraps new KEKs at once; existing
  KEKs keep unwrapping under their old master until they are rewrapped.
- Data-key rotation: a sealed version's shards re-encrypted under a new data
  key (``key_version`` + 1), read under the platform's ``rekey`` grant.
  Withheld training artifacts have keys of their own, wrapped by the version's
  KEK (``custody.services.artifacts``): master rotation and the shred cover
  them as they cover the shards, and data-key rotation leaves them alone.
- The crypto-shred, in two steps: disabling a version's KEK makes the version
  unreadable at once and can be undone; destroying it, allowed only
  ``SHRED_DELAY_SECONDS`` after the disable and only for a version that is
  taken down, rejected or abandoned, cannot. The wrapped data key in the
  database, and in every backup of it, no longer opens.
- Takedown: the version is withdrawn, every active grant on it revoked (open
  streams stop at their next batch), its quarantine copies shredded, and
  ``version_taken_down`` rings after commit for marketplace and training.

Each step is audited. ``actor=None`` means the command line (someone with a
shell on a custody host), recorded by its operating-system user. Every change
to a version's keys happens under that version's row lock, with the key
provider called last inside the transaction: if the provider fails, nothing is
recorded; if the commit fails after it, repeating the step converges.
"""

from __future__ import annotations

import getpass
import io
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from common.audit import audit_reason, audit_record, chain_head_lock
from common.blobs import blob_store
from common.models import Role, User
from custody import signals
from custody.crypto import (
    ShardIdentity,
    blob_open,
    blob_seal,
    merkle_root,
    new_data_key,
    sha256_hex,
    shard_seal,
)
from custody.exceptions import Conflict, Invalid, KeyUnavailable, NotPermitted
from custody.keys import kek_provider
from custody.models import (
    Contribution,
    DatasetVersion,
    Grant,
    GrantPurpose,
    GrantState,
    Report,
    Shard,
    VersionState,
)
from custody.services._keys import audit_decrypt, system_grant, version_data_key
from custody.services.datasets import require_role
from custody.services.grants import grant_revoke
from custody.services.ingest import pack, samples_aad, shard_blob_key, shard_records
from custody.services.review import quarantine_shred

DEFAULT_SHRED_DELAY_SECONDS = 86400
# A version still in use must be taken down (or rejected) before its key can be destroyed.
SHREDDABLE_STATES = (
    VersionState.TAKEN_DOWN,
    VersionState.REJECTED,
    VersionState.ABANDONED,
    # A contribution was withdrawn: the successor holds the rest under its own key.
    VersionState.SUPERSEDED,
)
TAKEDOWN_FROM_STATES = (
    VersionState.UPLOADING,
    VersionState.PROCESSING,
    VersionState.REVIEW,
    VersionState.SEALED,
    VersionState.FAILED,
)


def shred_delay() -> timedelta:
    """How long a version's key stays disabled (and recoverable) before it may be destroyed."""
    return timedelta(seconds=int(getattr(settings, "SHRED_DELAY_SECONDS", DEFAULT_SHRED_DELAY_SECONDS)))


def version_label(version: DatasetVersion) -> str:
    """The name an operator types to confirm a destroy: ``<owner>/<dataset>/v<number>``."""
    return f"{version.dataset.owner.slug}/{version.dataset.slug}/v{version.number}"


# --- who may act ----------------------------------------------------------------------------


def _require_operator(actor: User | None) -> None:
    """:raises NotPermitted: a user who is not a platform operator (None is the command line)."""
    if actor is not None and not actor.is_operator:
        raise NotPermitted("Key operations are for platform operators.", code="custody.operator_only")


def _command_line_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


def _actor(actor: User | None) -> dict[str, Any]:
    if actor is None:
        return {"actor": None, "actor_name": f"command line ({_command_line_user()})"}
    return {"actor": actor}


def _lock(version_id: int) -> DatasetVersion:
    return (
        DatasetVersion.objects.select_for_update(of=("self",))
        .select_related("dataset__owner")
        .get(pk=version_id)
    )


def _audit_version(action: str, actor: User | None, version: DatasetVersion, **details: Any) -> None:
    audit_record(
        action=action,
        organisation=version.dataset.owner,
        object_type="dataset_version",
        object_id=version.pk,
        details=details,
        **_actor(actor),
    )


# --- what the keys look like ----------------------------------------------------------------


@dataclass(frozen=True)
class VersionKeyStatus:
    """A version's key as the key provider holds it (the provider's word is final)."""

    version_id: str  # the version's public id
    label: str
    state: str
    key_state: str
    key_master: int | None
    key_version: int
    key_disabled_at: datetime | None
    key_destroyed_at: datetime | None
    destroy_after: datetime | None


def master_key_version() -> int:
    """The current master key version (new KEKs are wrapped under it)."""
    return kek_provider().master_current()


def version_key_status(version: DatasetVersion) -> VersionKeyStatus:
    provider = kek_provider()
    key_state = provider.kek_state(name=version.key_name)
    destroy_after = None
    if key_state == "disabled" and version.key_disabled_at is not None:
        destroy_after = version.key_disabled_at + shred_delay()
    return VersionKeyStatus(
        version_id=version.public_id,
        label=version_label(version),
        state=version.state,
        key_state=key_state,
        key_master=provider.kek_master(name=version.key_name),
        key_version=version.key_version,
        key_disabled_at=version.key_disabled_at,
        key_destroyed_at=version.key_destroyed_at,
        destroy_after=destroy_after,
    )


# --- master key rotation and rewrap ----------------------------------------------------------


def master_key_rotate(*, actor: User | None) -> int:
    """Make a new master key version current; returns its number.

    KEKs created from now on are wrapped under it; existing KEKs keep working
    under their old master until ``version_rekey`` (or ``kek_rewrap_all``) moves them.
    :raises NotPermitted: not an operator.
    """
    _require_operator(actor)
    provider = kek_provider()
    with transaction.atomic():
        # The audit chain head is locked first, so two rotations never interleave.
        chain_head_lock()
        previous = provider.master_current()
        number = provider.master_rotate()
        audit_record(
            action="custody.master_rotate",
            object_type="master_key",
            object_id=number,
            details={"previous": previous, "current": number},
            **_actor(actor),
        )
    return number


def _rewrap_locked(actor: User | None, name: str, audit: dict[str, Any]) -> bool:
    """Rewrap one KEK under the current master (caller holds its row lock); False if it was current."""
    provider = kek_provider()
    before = provider.kek_master(name=name)
    if before is None:
        raise KeyUnavailable(f"The key {name} was destroyed.", code="custody.key_destroyed")
    current = provider.master_current()
    if before == current:
        return False
    audit_record(
        action="custody.key_rewrap",
        details={"key": name, "from_master": before, "to_master": current},
        **audit,
        **_actor(actor),
    )
    provider.kek_rewrap(name=name)
    return True


def version_rekey(*, actor: User | None, version: DatasetVersion) -> int:
    """Rewrap the version's KEK under the current master key; returns that master version.

    :raises NotPermitted: not an operator. :raises KeyUnavailable: the key was destroyed.
    """
    _require_operator(actor)
    with transaction.atomic():
        locked = _lock(version.pk)
        _rewrap_locked(
            actor,
            locked.key_name,
            {"organisation": locked.dataset.owner, "object_type": "dataset_version", "object_id": locked.pk},
        )
    return master_key_version()


@dataclass
class RewrapSummary:
    master: int
    versions: int = 0
    quarantine: int = 0
    current: int = 0
    destroyed: int = 0


def kek_rewrap_all(*, actor: User | None) -> RewrapSummary:
    """Rewrap every live KEK (versions and unshredded quarantine copies) under the current master.

    Safe to repeat: a KEK already under the current master is left alone, a destroyed one counted.
    :raises NotPermitted: not an operator.
    """
    _require_operator(actor)
    summary = RewrapSummary(master=master_key_version())
    for version_id in DatasetVersion.objects.order_by("pk").values_list("pk", flat=True):
        with transaction.atomic():
            locked = _lock(version_id)
            audit = {"organisation": locked.dataset.owner, "object_type": "dataset_version"}
            _count(summary, "versions", actor, locked.key_name, {**audit, "object_id": locked.pk})
    live = Contribution.objects.filter(quarantine_shredded_at__isnull=True).order_by("pk")
    for contribution_id in live.values_list("pk", flat=True):
        with transaction.atomic():
            contribution = (
                Contribution.objects.select_for_update(of=("self",))
                .select_related("contributor")
                .get(pk=contribution_id)
            )
            if contribution.quarantine_shredded_at is not None:
                continue
            audit = {"organisation": contribution.contributor, "object_type": "contribution"}
            _count(
                summary,
                "quarantine",
                actor,
                contribution.quarantine_key_name,
                {**audit, "object_id": contribution.pk},
            )
    return summary


def _count(summary: RewrapSummary, kind: str, actor: User | None, name: str, audit: dict[str, Any]) -> None:
    if kek_provider().kek_state(name=name) == "destroyed":
        summary.destroyed += 1
    elif _rewrap_locked(actor, name, audit):
        setattr(summary, kind, getattr(summary, kind) + 1)
    else:
        summary.current += 1


# --- data key rotation ----------------------------------------------------------------------


def _reseal(blob: bytes | memoryview | None, old: bytes, new: bytes, aad: bytes, what: str) -> bytes | None:
    if blob is None:
        return None
    return blob_seal(key=new, aad=aad, plaintext=blob_open(key=old, aad=aad, blob=bytes(blob), what=what))


def _report_aad(version: DatasetVersion) -> bytes:
    # The same associated data the ingest's finalize step seals the report samples with.
    return f"sealroom/report/v1|version={version.pk}".encode()


def version_data_key_rotate(*, actor: User | None, version: DatasetVersion) -> DatasetVersion:
    """Re-encrypt a sealed version under a new data key (``key_version`` + 1), audited as ``rekey``.

    The shards' ciphertext changes, so the Merkle root is recomputed and both
    roots are audited. A stream open during the rotation fails (its job retries).
    :raises NotPermitted: not an operator. :raises Conflict: not sealed, or changed meanwhile.
    :raises KeyUnavailable: the version's key is disabled or destroyed.
    """
    _require_operator(actor)
    version = DatasetVersion.objects.select_related("dataset__owner").get(pk=version.pk)
    if version.state != VersionState.SEALED:
        raise Conflict(
            f"Version {version.pk} is {version.state}; only a sealed version's data key is rotated.",
            code="custody.version_not_sealed",
        )
    old_key = version_data_key(version)
    new_key = new_data_key()
    new_version = version.key_version + 1
    wrapped = kek_provider().wrap_data_key(name=version.key_name, data_key=new_key, key_version=new_version)
    audit_decrypt(
        grant=system_grant(version, GrantPurpose.REKEY),
        version=version,
        what="data_key_rotate",
        count=version.records,
    )
    # A random suffix keeps a concurrent rotation from overwriting these blobs.
    suffix = secrets.token_hex(4)
    written: list[str] = []
    try:
        updates = _reencrypt_shards(version, old_key, new_key, new_version, suffix, written)
        report = Report.objects.filter(version=version).first()
        report_samples = _reseal(
            report.samples_blob if report else None, old_key, new_key, _report_aad(version), "Report samples"
        )
        old_blobs = _swap_keys(actor, version, new_version, wrapped, updates, report_samples)
    except BaseException:
        for key in written:
            blob_store().delete(key)
        raise
    for key in old_blobs:
        blob_store().delete(key)
    return DatasetVersion.objects.select_related("dataset__owner").get(pk=version.pk)


def _reencrypt_shards(
    version: DatasetVersion, old: bytes, new: bytes, key_version: int, suffix: str, written: list[str]
) -> dict[int, dict[str, Any]]:
    updates: dict[int, dict[str, Any]] = {}
    for shard in version.shards.order_by("index"):
        identity = ShardIdentity(version_id=version.pk, index=shard.index, key_version=key_version)
        blob = shard_seal(data_key=new, identity=identity, plaintext=pack(shard_records(version, shard, old)))
        key = f"{shard_blob_key(version, shard.index, key_version)}-{suffix}"
        blob_store().put(key, io.BytesIO(blob))
        written.append(key)
        samples = _reseal(
            shard.samples_blob,
            old,
            new,
            samples_aad(version, shard.index),
            f"Samples of shard {shard.index}",
        )
        updates[shard.pk] = {
            "old_sha256": shard.sha256,
            "old_blob_key": shard.blob_key,
            "fields": {
                "blob_key": key,
                "size": len(blob),
                "sha256": sha256_hex(blob),
                "samples_blob": samples,
            },
        }
    return updates


@transaction.atomic
def _swap_keys(
    actor: User | None,
    version: DatasetVersion,
    key_version: int,
    wrapped: bytes,
    updates: dict[int, dict[str, Any]],
    report_samples: bytes | None,
) -> list[str]:
    """Point the version at its new data key and blobs in one commit; returns the old blob keys."""
    locked = _lock(version.pk)
    current = dict(Shard.objects.filter(version=locked).values_list("pk", "sha256"))
    expected = {pk: update["old_sha256"] for pk, update in updates.items()}
    if (
        locked.key_version != version.key_version
        or locked.state != VersionState.SEALED
        or current != expected
    ):
        raise Conflict(
            f"Version {locked.pk} changed while its data key was rotated; try again.",
            code="custody.rekey_raced",
        )
    for pk, update in updates.items():
        Shard.objects.filter(pk=pk).update(**update["fields"])
    if report_samples is not None:
        Report.objects.filter(version=locked).update(samples_blob=report_samples)
    old_root = locked.merkle_root
    locked.merkle_root = merkle_root(list(locked.shards.order_by("index").values_list("sha256", flat=True)))
    locked.key_version = key_version
    locked.wrapped_data_key = wrapped
    locked.save(update_fields=["merkle_root", "key_version", "wrapped_data_key"])
    _audit_version(
        "custody.data_key_rotate",
        actor,
        locked,
        from_key_version=version.key_version,
        to_key_version=key_version,
        shards=len(updates),
        old_merkle_root=old_root,
        merkle_root=locked.merkle_root,
    )
    return [update["old_blob_key"] for update in updates.values()]


# --- the two-step crypto-shred ---------------------------------------------------------------


def version_key_disable(*, actor: User | None, version: DatasetVersion, reason: str) -> DatasetVersion:
    """Disable the version's KEK: nothing of it decrypts until it is enabled again (idempotent).

    This starts the shred delay. :raises NotPermitted: not an operator.
    :raises Invalid: no reason. :raises KeyUnavailable: the key was destroyed.
    """
    _require_operator(actor)
    reason = audit_reason(reason, code="custody.reason_required")
    provider = kek_provider()
    with transaction.atomic():
        locked = _lock(version.pk)
        key_state = provider.kek_state(name=locked.key_name)
        if key_state == "destroyed":
            raise KeyUnavailable(
                f"The key of version {locked.pk} was destroyed.", code="custody.key_destroyed"
            )
        if key_state == "disabled" and locked.key_disabled_at is not None:
            return locked
        locked.key_disabled_at = timezone.now()
        locked.save(update_fields=["key_disabled_at"])
        _audit_version(
            "custody.key_disable",
            actor,
            locked,
            key=locked.key_name,
            reason=reason,
            destroy_after=(locked.key_disabled_at + shred_delay()).isoformat(),
        )
        provider.kek_disable(name=locked.key_name)
    return locked


def version_key_enable(*, actor: User | None, version: DatasetVersion, reason: str = "") -> DatasetVersion:
    """Enable a disabled KEK again, undoing the first shred step (idempotent).

    :raises NotPermitted: not an operator. :raises KeyUnavailable: the key was destroyed.
    """
    _require_operator(actor)
    provider = kek_provider()
    with transaction.atomic():
        locked = _lock(version.pk)
        key_state = provider.kek_state(name=locked.key_name)
        if key_state == "destroyed":
            raise KeyUnavailable(
                f"The key of version {locked.pk} was destroyed; it cannot come back.",
                code="custody.key_destroyed",
            )
        if key_state == "active" and locked.key_disabled_at is None:
            return locked
        disabled_at = locked.key_disabled_at
        locked.key_disabled_at = None
        locked.save(update_fields=["key_disabled_at"])
        _audit_version(
            "custody.key_enable",
            actor,
            locked,
            key=locked.key_name,
            reason=reason.strip()[:300],
            disabled_at=disabled_at.isoformat() if disabled_at else None,
        )
        provider.kek_enable(name=locked.key_name)
    return locked


def version_key_destroy(*, actor: User | None, version: DatasetVersion, confirm: str) -> DatasetVersion:
    """Destroy the version's KEK for good (the crypto-shred), then shred any quarantine copies.

    Allowed once the key has been disabled for ``SHRED_DELAY_SECONDS``, on a
    version taken down, rejected or abandoned, with ``confirm`` equal to the
    version's label (``version_label``). Repeating it after success is a no-op,
    except that a key brought back by restoring a key backup is destroyed
    again at once: the decision was made, and audited, before.
    :raises NotPermitted: not an operator. :raises Conflict: still in use, not
    disabled, or too early. :raises Invalid: the confirmation does not match.
    """
    _require_operator(actor)
    provider = kek_provider()
    with transaction.atomic():
        locked = _lock(version.pk)
        key_state = provider.kek_state(name=locked.key_name)
        if locked.key_destroyed_at is not None:
            if key_state != "destroyed":
                _audit_version("custody.key_destroy", actor, locked, key=locked.key_name, again=True)
                provider.kek_destroy(name=locked.key_name)
            return locked
        _check_destroyable(locked, key_state, confirm)
        now = timezone.now()
        # The provider may already have destroyed it (a lost commit, or a restored database).
        locked.key_disabled_at = locked.key_disabled_at or now
        locked.key_destroyed_at = now
        locked.save(update_fields=["key_disabled_at", "key_destroyed_at"])
        _audit_version(
            "custody.key_destroy",
            actor,
            locked,
            key=locked.key_name,
            disabled_at=locked.key_disabled_at.isoformat(),
            already_destroyed=key_state == "destroyed",
        )
        provider.kek_destroy(name=locked.key_name)
    quarantine_shred(version=locked)
    return locked


def _check_destroyable(version: DatasetVersion, key_state: str, confirm: str) -> None:
    if version.state not in SHREDDABLE_STATES:
        raise Conflict(
            f"Version {version.pk} is {version.state}: "
            "take it down (or reject it) before destroying its key.",
            code="custody.version_in_use",
        )
    if key_state != "destroyed":
        if key_state != "disabled" or version.key_disabled_at is None:
            raise Conflict(
                f"Disable the key of version {version.pk} first; it can be destroyed "
                f"{int(shred_delay().total_seconds())} seconds later.",
                code="custody.key_not_disabled",
            )
        due = version.key_disabled_at + shred_delay()
        if timezone.now() < due:
            raise Conflict(
                f"The key of version {version.pk} can be destroyed from {due.isoformat()}.",
                code="custody.shred_too_early",
            )
    if confirm.strip() != version_label(version):
        raise Invalid(
            "Type the version's label to confirm the destroy.",
            code="custody.confirmation_mismatch",
            errors=[
                {"pointer": "/confirm", "code": "mismatch", "detail": "Type the label: owner/dataset/vN."}
            ],
        )


# --- after a restore -----------------------------------------------------------------------


@dataclass(frozen=True)
class KeyMismatch:
    """A key whose state in the key provider differs from what the database recorded."""

    key: str
    recorded: str
    actual: str
    fixed: bool = False

    def __str__(self) -> str:
        done = " (destroyed again)" if self.fixed else ""
        return f"{self.key}: the database says {self.recorded}, the key provider {self.actual}{done}"


def keys_reconcile(*, actor: User | None, fix: bool = False) -> list[KeyMismatch]:
    """Compare every version and quarantine key with the database, after restoring either.

    With ``fix``, a key the database records as destroyed but a restored key
    backup brought back is destroyed again (audited). Other mismatches are only
    reported: they need a person (a lost key cannot be recreated).
    :raises NotPermitted: not an operator.
    """
    _require_operator(actor)
    provider = kek_provider()
    found: list[KeyMismatch] = []
    for version in DatasetVersion.objects.select_related("dataset__owner").order_by("pk"):
        recorded = (
            "destroyed" if version.key_destroyed_at else "disabled" if version.key_disabled_at else "active"
        )
        actual = provider.kek_state(name=version.key_name)
        if recorded == actual:
            continue
        redo = fix and recorded == "destroyed"
        if redo:
            version_key_destroy(actor=actor, version=version, confirm="")
        found.append(KeyMismatch(version.key_name, recorded, actual, fixed=redo))
    for contribution in Contribution.objects.select_related("contributor").order_by("pk"):
        recorded = "destroyed" if contribution.quarantine_shredded_at else "active"
        actual = provider.kek_state(name=contribution.quarantine_key_name)
        if recorded == actual:
            continue
        redo = fix and recorded == "destroyed"
        if redo:
            with transaction.atomic():
                audit_record(
                    action="custody.quarantine_shred",
                    organisation=contribution.contributor,
                    object_type="contribution",
                    object_id=contribution.pk,
                    details={"version": contribution.version_id, "again": True},
                    **_actor(actor),
                )
                provider.kek_destroy(name=contribution.quarantine_key_name)
        found.append(KeyMismatch(contribution.quarantine_key_name, recorded, actual, fixed=redo))
    return found


# --- takedown -------------------------------------------------------------------------------


def version_takedown(*, actor: User | None, version: DatasetVersion, reason: str) -> DatasetVersion:
    """Take a version down: withdraw it, revoke its grants, shred its quarantine, ring the doorbell.

    For an admin of the owning organisation (the provider's request) or an
    operator. Open streams stop at their next batch; marketplace and training
    react to ``version_taken_down`` (listings, refunds, jobs, notices).
    Repeating it is a no-op. The key is not touched: shredding is a separate,
    deliberate step (``version_key_disable``, then ``version_key_destroy``).
    :raises NotFound: not a member. :raises NotPermitted: role below admin.
    :raises Invalid: no reason. :raises Conflict: a rejected or abandoned version.
    """
    if actor is not None and not actor.is_operator:
        require_role(actor, version.dataset.owner, Role.ADMIN)
    reason = audit_reason(reason, code="custody.reason_required")
    with transaction.atomic():
        locked = _lock(version.pk)
        if locked.state == VersionState.TAKEN_DOWN:
            return locked
        if locked.state not in TAKEDOWN_FROM_STATES:
            raise Conflict(
                f"Version {locked.pk} is {locked.state}; there is nothing to take down.",
                code="custody.cannot_take_down",
            )
        previous = locked.state
        locked.state = VersionState.TAKEN_DOWN
        locked.failure_reason = reason
        locked.save(update_fields=["state", "failure_reason"])
        grants = list(Grant.objects.filter(version=locked, state=GrantState.ACTIVE).order_by("pk"))
        _audit_version(
            "custody.version_takedown",
            actor,
            locked,
            reason=reason,
            previous_state=previous,
            requested_by="provider" if actor is not None and not actor.is_operator else "operator",
            grants=[g.pk for g in grants],
        )
        for grant in grants:
            grant_revoke(grant=grant, reason=f"Version taken down: {reason}")
        signals.send_after_commit(signals.version_taken_down, version_id=locked.pk, reason=reason)
    quarantine_shred(version=locked)
    return locked
