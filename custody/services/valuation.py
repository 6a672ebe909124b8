"""A valuation's possible-poison flags as review findings (issue 15 item 3).

A valuation job (training/services/valuation.py) keeps the ids of the records it flags sealed in
custody, and the launcher hands them to :func:`valuation_flags_record`:

- **A version in review**: each flagged record becomes a finding of kind ``possible_poison``
  beside the screening findings (only the owner's members see the review; the record's text is
  decrypted for them by the review's own grant, as for every finding), droppable at sealing.
- **A sealed version** is never changed: each flag is kept as a :class:`ValuationFlag` (a record
  id and the job's id, no text). When a later version of the same dataset finishes processing
  (ingest's ``version_finalize``), :func:`carried_flags_match` finds the records it shares with a
  flagged record of an earlier version, by a keyed fingerprint computed inside custody, and
  :func:`carried_flags_record` makes each a ``possible_poison`` finding of the new version's
  review, droppable like any finding. A withdrawal's successor (sealed without review) takes over
  the flags of the records it carries (:func:`valuation_flags_carry_to_successor`).

The fingerprint is an HMAC of the record's desensitized text and metadata under a key derived from
the *new* version's pseudonym secret: both sides are hashed in the same process, nothing is stored,
and no plaintext leaves custody. A record counts as carried over when its text and metadata are
the same after desensitization; a record whose label was corrected in the new upload no longer
matches (its flag no longer applies).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from common.audit import audit_record
from custody.models import (
    DatasetVersion,
    Finding,
    GrantPurpose,
    Report,
    Shard,
    ValuationFlag,
    VersionState,
)
from custody.services._keys import audit_decrypt, system_grant, version_data_key, version_pseudonym_key

POSSIBLE_POISON = "possible_poison"


@transaction.atomic
def valuation_flags_record(*, version: DatasetVersion, record_ids: Iterable[int], source: str) -> int:
    """Record flagged records: findings of a version in review, or flags a sealed version keeps for
    its next versions. Idempotent per record (a rerun adds only new ones); a version in any other
    state is left alone. ``source`` names the valuation (its job's public id), never a text.
    Returns how many findings or flags were added.
    """
    locked = DatasetVersion.objects.select_for_update().select_related("dataset").get(pk=version.pk)
    ids = sorted(set(record_ids))
    if locked.state == VersionState.REVIEW:
        added = _findings_add(
            locked,
            [(i, f"its label disagrees with its nearest records' (valuation {source})") for i in ids],
            source,
        )
    elif locked.state == VersionState.SEALED:
        known = set(
            ValuationFlag.objects.filter(version=locked, record_id__in=ids).values_list(
                "record_id", flat=True
            )
        )
        new = [ValuationFlag(version=locked, record_id=i, source=source[:64]) for i in ids if i not in known]
        ValuationFlag.objects.bulk_create(new)
        added = len(new)
    else:
        return 0
    audit_record(
        action="custody.valuation_flags",
        organisation=locked.dataset.owner,
        object_type="dataset_version",
        object_id=locked.pk,
        details={"source": source, "flagged": len(ids), "added": added, "state": locked.state},
    )
    return added


def _findings_add(version: DatasetVersion, flagged: list[tuple[int, str]], group: str) -> int:
    """Add ``possible_poison`` findings (record id, detail) not there yet; count them in the
    report's summary so the review lists them beside the screening kinds."""
    known = set(
        Finding.objects.filter(
            version=version, kind=POSSIBLE_POISON, record_id__in=[i for i, _ in flagged]
        ).values_list("record_id", flat=True)
    )
    new = [
        Finding(version=version, record_id=i, kind=POSSIBLE_POISON, detail=detail[:300], group=group[:64])
        for i, detail in flagged
        if i not in known
    ]
    Finding.objects.bulk_create(new)
    report = Report.objects.select_for_update().filter(version=version).first()
    if report is not None and new:
        summary = dict(report.findings_summary or {})
        summary[POSSIBLE_POISON] = Finding.objects.filter(version=version, kind=POSSIBLE_POISON).count()
        report.findings_summary = summary
        report.save(update_fields=["findings_summary"])
    return len(new)


# --- carrying a sealed version's flags into its next versions ----------------------------------


@dataclass(frozen=True)
class CarriedFlag:
    """A record of the new version that is a flagged record of an earlier version."""

    record_id: int
    source: str  # the flagging valuation's job id
    flagged_in: str  # the earlier version's public id


def _carry_key(version: DatasetVersion) -> bytes:
    return hmac.new(version_pseudonym_key(version), b"sealroom/valuation-carry/v1", hashlib.sha256).digest()


def record_fingerprint(key: bytes, record: dict[str, Any]) -> bytes:
    """A keyed fingerprint of a record's desensitized text and metadata (never stored)."""
    canonical = json.dumps(
        {"text": record.get("text") or {}, "meta": record.get("meta") or {}},
        sort_keys=True,
        ensure_ascii=False,
    )
    return hmac.new(key, canonical.encode(), hashlib.sha256).digest()


def _shard_ranges(version: DatasetVersion) -> list[tuple[Shard, int, int | None]]:
    """Each shard with the id range it holds: from its first record up to the next shard's first
    (drops at sealing leave gaps, so a shard's record count does not give its last id)."""
    shards = list(version.shards.order_by("first_record", "index"))
    ends: list[int | None] = [s.first_record for s in shards[1:]]
    return list(zip(shards, [s.first_record for s in shards], [*ends, None], strict=True))


def _within(record_id: int, start: int, end: int | None) -> bool:
    return start <= record_id and (end is None or record_id < end)


def _shards_holding(version: DatasetVersion, ids: set[int]) -> list[Shard]:
    """The shards whose id range holds one of ``ids``."""
    return [
        shard
        for shard, start, end in _shard_ranges(version)
        if shard.records and any(_within(i, start, end) for i in ids)
    ]


def _read(version: DatasetVersion, shards: list[Shard], what: str) -> Iterable[dict[str, Any]]:
    """Each record of ``shards``, decrypted under the version's valuation grant and audited."""
    from custody.services.ingest import shard_records  # ingest calls this module back at finalize

    data_key = version_data_key(version)
    grant = system_grant(version, GrantPurpose.VALUATION)
    for shard in shards:
        records = shard_records(version, shard, data_key)
        audit_decrypt(grant=grant, version=version, what=f"{what}_{shard.index}", count=len(records))
        yield from records


def carried_flags_match(*, version: DatasetVersion) -> list[CarriedFlag]:
    """The records of ``version`` (being finalized) that are flagged records of an earlier version
    of its dataset, sealed or superseded, whose key is still usable. Reads inside custody only.

    :raises IntegrityFailure: a shard was tampered with.
    """
    earlier = (
        DatasetVersion.objects.filter(
            dataset_id=version.dataset_id,
            number__lt=version.number,
            state__in=(VersionState.SEALED, VersionState.SUPERSEDED),
            key_disabled_at__isnull=True,
            valuation_flags__isnull=False,
        )
        .distinct()
        .order_by("number")
    )
    key = _carry_key(version)
    wanted: dict[bytes, tuple[str, str]] = {}
    for old in earlier:
        flags = dict(ValuationFlag.objects.filter(version=old).values_list("record_id", "source"))
        for record in _read(old, _shards_holding(old, set(flags)), "valuation_carry_shard"):
            if record["id"] in flags:
                # A later version's flag on the same record wins (it is the newer valuation).
                wanted[record_fingerprint(key, record)] = (flags[record["id"]], old.public_id)
    if not wanted:
        return []
    matches: list[CarriedFlag] = []
    shards = list(version.shards.filter(records__gt=0).order_by("index"))
    for record in _read(version, shards, "valuation_carry_match_shard"):
        found = wanted.get(record_fingerprint(key, record))
        if found is not None:
            matches.append(CarriedFlag(record_id=record["id"], source=found[0], flagged_in=found[1]))
    return matches


def carried_flags_record(*, version: DatasetVersion, matches: list[CarriedFlag]) -> int:
    """Make each carried record a ``possible_poison`` finding of ``version`` (in review); call it in
    the transaction that opens the review. Returns how many findings were added."""
    if not matches or version.state != VersionState.REVIEW:
        return 0
    added = _findings_add(
        version,
        [
            (m.record_id, f"flagged as possible poison in version {m.flagged_in} (valuation {m.source})")
            for m in matches
        ],
        matches[0].source,
    )
    audit_record(
        action="custody.valuation_flags_carried",
        organisation=version.dataset.owner,
        object_type="dataset_version",
        object_id=version.pk,
        details={
            "carried": len(matches),
            "added": added,
            "from": sorted({m.flagged_in for m in matches}),
            "sources": sorted({m.source for m in matches}),
        },
    )
    return added


def valuation_flags_carry_to_successor(*, old: DatasetVersion, new: DatasetVersion, withdrawn: int) -> int:
    """A withdrawal's successor keeps the record ids it carries: it takes over their flags (not
    those of the withdrawn contribution's records), so they reach its own next versions even once
    the old version's key is shredded. Idempotent. Returns how many flags were copied."""
    ranges = [(start, end) for shard, start, end in _shard_ranges(old) if shard.contribution_id != withdrawn]
    flags = [
        ValuationFlag(version=new, record_id=record_id, source=source)
        for record_id, source in ValuationFlag.objects.filter(version=old).values_list("record_id", "source")
        if any(_within(record_id, start, end) for start, end in ranges)
    ]
    before = ValuationFlag.objects.filter(version=new).count()
    ValuationFlag.objects.bulk_create(flags, ignore_conflicts=True)
    return ValuationFlag.objects.filter(version=new).count() - before
