"""The ingest pipeline: parse -> batches -> desensitize, screen, encrypt -> finalize.

Three kinds of leased work (``common.work``), each safe to run twice:

- ``custody.parse`` (one per contribution): decrypts the quarantine parts in
  memory, parses and validates them, and stages the records in batches
  encrypted under the quarantine key. Record ids and shard indexes are
  allocated once, so a re-run writes the same batches.
- ``custody.batch`` (one per batch, in parallel on any number of workers):
  desensitizes, counts platform tokens, computes the screening state, and
  writes one shard encrypted under the version's data key. The shard row is
  unique per (version, index), so a re-run replaces, never duplicates.
- ``custody.finalize`` (one per version): merges the screening states into
  findings, aggregates the report, and moves the version to review.
"""

from __future__ import annotations

import base64
import io
import json
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from common.audit import audit_record
from common.blobs import blob_store
from common.exceptions import DomainError
from common.models import WorkItem
from common.work import PermanentWorkError, work_enqueue, work_handler
from custody.crypto import ShardIdentity, blob_open, blob_seal, sha256_hex, shard_open, shard_seal
from custody.models import (
    Contribution,
    ContributionState,
    DatasetVersion,
    Finding,
    GrantPurpose,
    Report,
    Shard,
    VersionState,
)
from custody.parsing import FieldSpec, Format, ParsedRecord, iter_records
from custody.services._keys import (
    audit_decrypt,
    quarantine_key,
    system_grant,
    version_data_key,
    version_pseudonym_key,
    version_screening_key,
)
from custody.services.datasets import raw_reader
from custody.services.residual import (
    REPORT_RESIDUAL_EXAMPLES,
    REPORT_SAMPLES,
    Cell,
    batch_review,
)
from custody.tokens import count_tokens

BATCH_RECORDS = 1000
LENGTH_BUCKETS = (0, 64, 256, 1024, 4096, 16384)


# --- serialization (compressed JSON lines; only ever stored encrypted) --------------


def pack(rows: Iterable[dict[str, Any]]) -> bytes:
    body = "\n".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) for r in rows)
    return zlib.compress(body.encode(), 1)


def unpack(data: bytes) -> list[dict[str, Any]]:
    text = zlib.decompress(data).decode()
    return [json.loads(line) for line in text.split("\n") if line]


def _batch_aad(contribution: Contribution, index: int) -> bytes:
    return f"sealroom/quarantine-batch/v1|contribution={contribution.pk}|batch={index}".encode()


def _batch_key(contribution: Contribution, index: int) -> str:
    return f"quarantine/{contribution.pk}/batch-{index:06d}"


def shard_blob_key(version: DatasetVersion, index: int, key_version: int) -> str:
    return f"shards/{version.pk}/{index:06d}-k{key_version}"


def samples_aad(version: DatasetVersion, index: int) -> bytes:
    return f"sealroom/samples/v1|version={version.pk}|shard={index}".encode()


# --- parse ------------------------------------------------------------------------------


def parse_records(contribution: Contribution) -> Iterator[ParsedRecord]:
    """Parse the decrypted upload, with every limit applied while streaming."""
    stream: BinaryIO = raw_reader(contribution)
    if contribution.format == Format.PARQUET:
        # Parquet needs random access: hold it in memory, never on disk.
        stream = io.BytesIO(stream.read())
    return iter_records(
        stream,
        Format(contribution.format),
        contribution.gzip,
        FieldSpec(tuple(contribution.text_fields), tuple(contribution.metadata_fields)),
        max_records=settings.UPLOAD_MAX_RECORDS,
        max_record_chars=settings.RECORD_MAX_CHARS,
        max_bytes=settings.UPLOAD_MAX_BYTES,
        max_gzip_ratio=settings.GZIP_MAX_RATIO,
    )


def validate_upload(contribution: Contribution) -> int:
    """Parse the whole upload without storing anything; returns the record count.

    :raises ParseFailure, TooLarge, UnsupportedFormat: what is wrong and where.
    """
    return sum(1 for _ in parse_records(contribution))


def _chunks(records: Iterator[ParsedRecord], size: int) -> Iterator[list[ParsedRecord]]:
    batch: list[ParsedRecord] = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def contribution_parse(*, contribution_id: int) -> None:
    """Stage a contribution's records in encrypted batches and enqueue their processing.

    :raises PermanentWorkError: the upload is invalid (the contribution and version fail).
    """
    contribution = Contribution.objects.select_related("version").get(pk=contribution_id)
    if contribution.state not in (ContributionState.UPLOADED, ContributionState.PARSED):
        return
    key = quarantine_key(contribution)
    grant = system_grant(contribution.version, GrantPurpose.INGEST)
    count = 0
    batches = 0
    try:
        for index, batch in enumerate(_chunks(parse_records(contribution), BATCH_RECORDS)):
            rows = [{"t": r.text, "m": r.metadata, "loc": r.location} for r in batch]
            sealed = blob_seal(key=key, aad=_batch_aad(contribution, index), plaintext=pack(rows))
            blob_store().put(_batch_key(contribution, index), io.BytesIO(sealed))
            count += len(batch)
            batches = index + 1
    except DomainError as exc:
        # The batches staged before the bad record are never counted on the contribution,
        # so the shred at reject would not find them: delete them here.
        for index in range(batches):
            blob_store().delete(_batch_key(contribution, index))
        contribution_fail(contribution_id=contribution.pk, reason=exc.detail, code=exc.code)
        raise PermanentWorkError(exc.code) from exc
    audit_decrypt(grant=grant, version=contribution.version, what="quarantine", count=count)
    _allocate_and_enqueue(contribution.pk, count, batches)


@transaction.atomic
def _allocate_and_enqueue(contribution_id: int, records: int, batches: int) -> None:
    contribution = Contribution.objects.select_for_update().get(pk=contribution_id)
    version = DatasetVersion.objects.select_for_update().get(pk=contribution.version_id)
    if contribution.first_shard_index is None:
        contribution.first_shard_index = version.next_shard_index
        contribution.first_record_id = version.next_record_id
        version.next_shard_index += batches
        version.next_record_id += records
        version.save(update_fields=["next_shard_index", "next_record_id"])
    contribution.records = records
    contribution.batches = batches
    contribution.state = ContributionState.PARSED
    contribution.save(update_fields=["first_shard_index", "first_record_id", "records", "batches", "state"])
    _refresh_progress(version, stage="desensitize")
    for index in range(batches):
        work_enqueue(
            kind="custody.batch",
            ref=f"{contribution.pk}/g{contribution.generation}/b{index}",
            queue="custody",
        )
    if batches == 0:
        _contribution_done(contribution)


@transaction.atomic
def contribution_fail(*, contribution_id: int, reason: str, code: str) -> None:
    """Mark a contribution (and its version) failed.

    The reason is shown to the contributing provider only: a parse error may
    quote a header that was really a record, so the audit log gets the code.
    """
    contribution = (
        Contribution.objects.select_for_update(of=("self",))
        .select_related("contributor")
        .get(pk=contribution_id)
    )
    version = (
        DatasetVersion.objects.select_for_update(of=("self",))
        .select_related("dataset")
        .get(pk=contribution.version_id)
    )
    contribution.state = ContributionState.FAILED
    contribution.failure_reason = reason[:2000]
    contribution.save(update_fields=["state", "failure_reason"])
    if version.state in (VersionState.UPLOADING, VersionState.PROCESSING):
        version.state = VersionState.FAILED
        # The detail may quote the contributor's records: only the contributor
        # sees it; a pooled version's owner gets the file, organisation and code.
        if contribution.contributor_id == version.dataset.owner_id:
            version.failure_reason = f"{contribution.filename}: {reason}"[:2000]
        else:
            who = contribution.contributor.name
            version.failure_reason = f"{contribution.filename} from {who} could not be processed ({code})"[
                :2000
            ]
        version.save(update_fields=["state", "failure_reason"])
    audit_record(
        action="custody.ingest_failed",
        organisation=contribution.contributor,
        object_type="contribution",
        object_id=contribution.pk,
        details={"version": version.pk, "code": code},
    )


# --- batch --------------------------------------------------------------------------------


def length_bucket(n: int) -> str:
    bucket = max(b for b in LENGTH_BUCKETS if n >= b)
    return f">={bucket}"


# A shard's stats key holding {record id: {field: {entity type: count}}}; kept out of the report.
RECORD_ENTITIES = "record_entities"


def _string_metadata(metadata: dict[str, Any]) -> list[str]:
    return [k for k, v in metadata.items() if isinstance(v, str) and v]


def process_batch(*, contribution_id: int, index: int) -> None:
    """Desensitize, count, screen and encrypt one staged batch into its shard."""
    from custody.desensitize import Policy, get_desensitizer
    from custody.desensitize.operators import Replacer
    from custody.screening import Screener

    contribution = Contribution.objects.select_related("version__dataset").get(pk=contribution_id)
    version = contribution.version
    if contribution.state != ContributionState.PARSED or contribution.first_shard_index is None:
        return
    shard_index = contribution.first_shard_index + index
    first_id = (contribution.first_record_id or 0) + index * BATCH_RECORDS
    sealed = blob_store().open(_batch_key(contribution, index)).read()
    rows = unpack(
        blob_open(
            key=quarantine_key(contribution),
            aad=_batch_aad(contribution, index),
            blob=sealed,
            what=f"Staged batch {index}",
        )
    )
    audit_decrypt(
        grant=system_grant(version, GrantPurpose.INGEST), version=version, what="batch", count=len(rows)
    )
    desensitizer = get_desensitizer(Policy.from_dict(version.dataset.policy), version_pseudonym_key(version))
    # Desensitize field by field across the batch, so NER runs batched.
    cells: list[tuple[int, str, str, str]] = []  # (row, kind, field, text)
    for r, row in enumerate(rows):
        cells += [(r, "t", f, t) for f, t in row["t"].items()]
        cells += [(r, "m", f, row["m"][f]) for f in _string_metadata(row["m"])]
    results = desensitizer.desensitize_batch([c[3] for c in cells]) if cells else []
    out: list[dict[str, Any]] = [
        {"id": first_id + r, "text": {}, "meta": dict(row["m"]), "lang": ""} for r, row in enumerate(rows)
    ]
    stats: dict[str, Any] = {
        "entities": Counter(),
        "by_field": defaultdict(Counter),
        "by_language": defaultdict(Counter),
        "languages": Counter(),
        "lengths": Counter(),
    }
    # What each record held, so sealing can take a dropped record's entities
    # out of the report (the listing's statistics count only what was sealed).
    record_entities: dict[str, dict[str, Counter[str]]] = {}
    text_cells: list[Cell] = []
    for (r, kind, field, before), result in zip(cells, results, strict=True):
        if kind == "t":
            out[r]["text"][field] = result.text
            if not out[r]["lang"]:
                out[r]["lang"] = result.language
            text_cells.append(Cell(first_id + r, field, before, result))
        else:
            out[r]["meta"][field] = result.text
        for span in result.spans:
            stats["entities"][span.entity_type] += 1
            stats["by_field"][field][span.entity_type] += 1
            stats["by_language"][result.language][span.entity_type] += 1
            per_record = record_entities.setdefault(str(first_id + r), {})
            per_record.setdefault(field, Counter())[span.entity_type] += 1
    samples, residual = batch_review(
        version_id=version.pk,
        shard_index=shard_index,
        cells=text_cells,
        replacer=Replacer(version_pseudonym_key(version)),
        policy=desensitizer.policy,
    )
    stats.update(residual)
    stats[RECORD_ENTITIES] = record_entities
    texts = ["\n".join(o["text"].values()) for o in out]
    tokens = count_tokens(texts)
    screener = Screener(key=version_screening_key(version))
    label_field = "label" if "label" in contribution.metadata_fields else None
    for o, text in zip(out, texts, strict=True):
        stats["languages"][o["lang"] or "other"] += 1
        stats["lengths"][length_bucket(len(text))] += 1
        label = o["meta"].get(label_field) if label_field else None
        screener.add(o["id"], text, str(label) if label is not None else None)
    _write_shard(
        contribution, version, shard_index, first_id, out, sum(tokens), stats, samples, screener.state()
    )


def _write_shard(
    contribution: Contribution,
    version: DatasetVersion,
    index: int,
    first_id: int,
    records: list[dict[str, Any]],
    tokens: int,
    stats: dict[str, Any],
    samples: list[dict[str, Any]],
    screening_state: bytes,
) -> None:
    data_key = version_data_key(version)
    identity = ShardIdentity(version_id=version.pk, index=index, key_version=version.key_version)
    blob = shard_seal(data_key=data_key, identity=identity, plaintext=pack(records))
    blob_key = shard_blob_key(version, index, version.key_version)
    blob_store().put(blob_key, io.BytesIO(blob))
    samples_blob = blob_seal(key=data_key, aad=samples_aad(version, index), plaintext=pack(samples))
    with transaction.atomic():
        Shard.objects.update_or_create(
            version=version,
            index=index,
            defaults={
                "contribution": contribution,
                "first_record": first_id,
                "records": len(records),
                "tokens": tokens,
                "size": len(blob),
                "sha256": sha256_hex(blob),
                "blob_key": blob_key,
                "stats": json.loads(json.dumps(stats)),
                "screening_state": base64.b64encode(screening_state).decode(),
                "samples_blob": samples_blob,
            },
        )
        locked = Contribution.objects.select_for_update().get(pk=contribution.pk)
        done = Shard.objects.filter(contribution=locked).count()
        if done >= locked.batches and locked.state == ContributionState.PARSED:
            _contribution_done(locked)
        _refresh_progress(DatasetVersion.objects.get(pk=version.pk), stage="desensitize")


def _contribution_done(contribution: Contribution) -> None:
    totals = Shard.objects.filter(contribution=contribution).aggregate(r=Sum("records"), t=Sum("tokens"))
    contribution.state = ContributionState.DONE
    contribution.records = totals["r"] or 0
    contribution.tokens = totals["t"] or 0
    contribution.save(update_fields=["state", "records", "tokens"])
    finalize_if_ready(version_id=contribution.version_id)


def _refresh_progress(version: DatasetVersion, stage: str) -> None:
    expected = version.contributions.exclude(state=ContributionState.FAILED).aggregate(r=Sum("records"))["r"]
    done = version.shards.aggregate(r=Sum("records"))["r"]
    DatasetVersion.objects.filter(pk=version.pk).update(
        records_expected=expected or 0, records_done=done or 0, stage=stage
    )


# --- finalize -----------------------------------------------------------------------------


def finalize_if_ready(*, version_id: int) -> None:
    """Enqueue the finalize step once the version is closed and every contribution is done."""
    with transaction.atomic():
        version = DatasetVersion.objects.select_for_update().get(pk=version_id)
        if version.state != VersionState.PROCESSING:
            return
        pending = version.contributions.exclude(state=ContributionState.DONE).exists()
        if pending or not version.contributions.exists():
            return
        generation = sum(version.contributions.values_list("generation", flat=True))
        work_enqueue(kind="custody.finalize", ref=f"{version.pk}/g{generation}", queue="custody")


def _merge(counters: Iterable[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for stats in counters:
        for key, value in stats.items():
            if key == RECORD_ENTITIES:
                continue
            if isinstance(value, dict) and value and isinstance(next(iter(value.values())), dict):
                bucket = merged.setdefault(key, {})
                for sub, counts in value.items():
                    inner = bucket.setdefault(sub, {})
                    for k, v in counts.items():
                        inner[k] = inner.get(k, 0) + v
            else:
                bucket = merged.setdefault(key, {})
                for k, v in value.items():
                    bucket[k] = bucket.get(k, 0) + v
    return merged


def version_finalize(*, version_id: int) -> None:
    """Merge screening into findings, write the report, and open the version for review."""
    from custody.screening import Screener
    from custody.services.valuation import carried_flags_match, carried_flags_record

    version = DatasetVersion.objects.get(pk=version_id)
    if version.state != VersionState.PROCESSING:
        return
    # Records flagged as possible poison in an earlier, sealed version (issue 15 item 3).
    carried = carried_flags_match(version=version)
    shards = list(version.shards.order_by("index"))
    screener = Screener.from_states(
        Screener().config,
        (base64.b64decode(s.screening_state) for s in shards),
        key=version_screening_key(version),
    )
    findings = screener.findings()
    data_key = version_data_key(version)
    samples: list[dict[str, Any]] = []
    residual: list[dict[str, Any]] = []
    for shard in shards:
        if len(samples) >= REPORT_SAMPLES and len(residual) >= REPORT_RESIDUAL_EXAMPLES:
            break
        if shard.samples_blob is None:
            continue
        for entry in unpack(
            blob_open(
                key=data_key,
                aad=samples_aad(version, shard.index),
                blob=bytes(shard.samples_blob),
                what="samples",
            )
        ):
            # Entries written before residual scans had no kind: they are review samples.
            if entry.get("kind") == "residual":
                residual.append(entry)
            else:
                samples.append(entry)
    with transaction.atomic():
        locked = DatasetVersion.objects.select_for_update().get(pk=version_id)
        if locked.state != VersionState.PROCESSING:
            return
        Finding.objects.filter(version=locked).delete()
        # One row per (record, kind): a record can sit in two trigger groups, and
        # the provider decides per record; keep the first group (findings are sorted).
        unique: dict[tuple[int, str], Any] = {}
        for f in findings:
            unique.setdefault((f.record_id, str(f.kind)), f)
        findings = list(unique.values())
        Finding.objects.bulk_create(
            [
                Finding(
                    version=locked,
                    record_id=f.record_id,
                    kind=str(f.kind),
                    detail=f.detail[:300],
                    group=f.group or "",
                    score=f.score,
                )
                for f in findings
            ],
            batch_size=1000,
        )
        counts = _merge(s.stats for s in shards)
        summary = Counter(str(f.kind) for f in findings)
        Report.objects.update_or_create(
            version=locked,
            defaults={
                "counts": counts,
                "findings_summary": dict(summary),
                "samples_blob": blob_seal(
                    key=data_key,
                    aad=f"sealroom/report/v1|version={locked.pk}".encode(),
                    plaintext=pack(samples[:REPORT_SAMPLES] + residual[:REPORT_RESIDUAL_EXAMPLES]),
                ),
            },
        )
        totals = locked.shards.aggregate(r=Sum("records"), t=Sum("tokens"))
        locked.records = totals["r"] or 0
        locked.tokens = totals["t"] or 0
        locked.state = VersionState.REVIEW
        locked.stage = "review"
        locked.processed_at = timezone.now()
        locked.save(update_fields=["records", "tokens", "state", "stage", "processed_at"])
        carried_flags_record(version=locked, matches=carried)
        audit_record(
            action="custody.version_processed",
            organisation=locked.dataset.owner,
            object_type="dataset_version",
            object_id=locked.pk,
            details={"records": locked.records, "tokens": locked.tokens, "findings": dict(summary)},
        )


def shard_records(version: DatasetVersion, shard: Shard, data_key: bytes) -> list[dict[str, Any]]:
    """Decrypt one shard after checking its recorded hash. The caller audits the decrypt.

    :raises IntegrityFailure: the blob differs from what was recorded, or fails authentication.
    """
    from custody.exceptions import IntegrityFailure

    with blob_store().open(shard.blob_key) as handle:
        blob = handle.read()
    if sha256_hex(blob) != shard.sha256:
        raise IntegrityFailure(
            f"Shard {shard.index} of version {version.public_id} does not match its recorded hash.",
            code="custody.shard_hash_mismatch",
        )
    identity = ShardIdentity(version_id=version.pk, index=shard.index, key_version=version.key_version)
    return unpack(shard_open(data_key=data_key, identity=identity, blob=blob))


# --- work handlers -------------------------------------------------------------------------


@work_handler("custody.parse")
def _parse_handler(item: WorkItem) -> None:
    contribution_parse(contribution_id=int(item.ref.split("/")[0]))


@work_handler("custody.batch")
def _batch_handler(item: WorkItem) -> None:
    contribution_id, _generation, batch = item.ref.split("/")
    process_batch(contribution_id=int(contribution_id), index=int(batch.removeprefix("b")))


@work_handler("custody.finalize")
def _finalize_handler(item: WorkItem) -> None:
    version_finalize(version_id=int(item.ref.split("/")[0]))
