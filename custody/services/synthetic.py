"""Model-generated dataset versions (issue 17 items 1-2): the leakage screen and the ingest.

A generation job's records reach custody only in the training worker's memory. Before anything
is stored they pass the **leakage screen** against the version the generating model was trained
on (its *source*), read here under the source's ``gate`` grant (audited like the release gate):

- exact: a generated record whose normalized text equals a source record's;
- near: keyed word 5-gram shingles (hashed under the source version's screening key, so the
  index is no word list) -- a generated record is too close when its Jaccard similarity with a
  source record reaches ``NEAR_JACCARD``, or when it contains ``NEAR_CONTAINMENT`` of a source
  record's shingles (a record copied whole into a longer one);
- canaries: a generated record that holds a secret code of the source model's canaries.

Records too close are dropped before the version exists; the rest are ingested exactly as an
upload is (quarantine part encrypted on arrival -> parse -> desensitize -> screen -> encrypt ->
review), into a new dataset of the requesting organisation whose version's ``provenance`` marks it
model-generated and carries the screen's counts. Its owner reviews and seals it like any version.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from django.db import transaction
from django.utils.text import slugify

from common.audit import audit_record
from common.models import Organisation, User
from custody.models import Dataset, DatasetVersion, GrantPurpose
from custody.screening.keys import Keyring
from custody.screening.text import fold
from custody.services._keys import system_grant, version_screening_key
from custody.services.datasets import contribution_part_put, contribution_start, version_create
from custody.services.grants import grant_stream_open
from custody.services.review import contribution_complete, version_process

NGRAM = 5
NEAR_JACCARD = 0.5
NEAR_CONTAINMENT = 0.8
# A source record shorter than this many shingles is matched by Jaccard and exactness only: a short
# phrase contained in a longer generated text is not a copy of a record.
MIN_CONTAINMENT_SHINGLES = 3
_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]|\w+")
_SPACE = re.compile(r"\s+")
_DIGITS = re.compile(r"\d")


@dataclass(frozen=True)
class LeakageReport:
    """What the screen did; counts only (never a text)."""

    generated: int
    kept: int
    dropped_exact: int
    dropped_near: int
    dropped_canary: int
    source_records: int
    ngram: int = NGRAM
    near_jaccard: float = NEAR_JACCARD
    near_containment: float = NEAR_CONTAINMENT

    @property
    def dropped(self) -> int:
        return self.dropped_exact + self.dropped_near + self.dropped_canary

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "dropped": self.dropped}


def _normalized(text: str) -> str:
    return _SPACE.sub(" ", fold(text)).strip()


class _Index:
    """Keyed shingles of the source version's records (hashes only, in this process's memory)."""

    def __init__(self, key: bytes) -> None:
        self.keyring = Keyring(key)
        self.exact: set[bytes] = set()
        self.postings: dict[int, list[int]] = {}
        self.sizes: list[int] = []

    def shingles(self, normalized: str) -> set[int]:
        tokens = _TOKEN.findall(normalized)
        if not tokens:
            return set()
        grams = (
            [tokens]
            if len(tokens) < NGRAM
            else [tokens[i : i + NGRAM] for i in range(len(tokens) - NGRAM + 1)]
        )
        return {
            int.from_bytes(self.keyring.exact(("ng|" + " ".join(gram)).encode())[:8], "little")
            for gram in grams
        }

    def exact_hash(self, normalized: str) -> bytes:
        return self.keyring.exact(("ex|" + normalized).encode())

    def add(self, text: str) -> None:
        normalized = _normalized(text)
        if not normalized:
            return
        self.exact.add(self.exact_hash(normalized))
        row = len(self.sizes)
        shingles = self.shingles(normalized)
        self.sizes.append(len(shingles))
        for value in shingles:
            self.postings.setdefault(value, []).append(row)

    def too_close(self, normalized: str) -> str | None:
        """``"exact"``, ``"near"`` or None for one generated record."""
        if self.exact_hash(normalized) in self.exact:
            return "exact"
        shingles = self.shingles(normalized)
        if not shingles:
            return None
        overlap: Counter[int] = Counter()
        for value in shingles:
            overlap.update(self.postings.get(value, ()))
        for row, shared in overlap.items():
            size = self.sizes[row]
            if shared / (len(shingles) + size - shared) >= NEAR_JACCARD:
                return "near"
            if size >= MIN_CONTAINMENT_SHINGLES and shared / size >= NEAR_CONTAINMENT:
                return "near"
        return None


def _canary_codes(canaries: Iterable[str]) -> list[str]:
    """The digits of each canary secret (its account and code), the part a leak would repeat."""
    codes = []
    for secret in canaries:
        digits = "".join(_DIGITS.findall(secret))
        if len(digits) >= 9:
            codes.append(digits[-9:])
    return codes


def _record_text(value: Any) -> str:
    if isinstance(value, dict):
        return "\n".join(str(v) for v in value.values() if v)
    return str(value)


def source_index(*, source: DatasetVersion, consumer_ref: str) -> _Index:
    """Read the source version once under its ``gate`` grant (audited) into a keyed shingle index."""
    index = _Index(version_screening_key(source))
    grant = system_grant(source, GrantPurpose.GATE)
    for batch in grant_stream_open(grant=grant, consumer_ref=consumer_ref, purpose=GrantPurpose.GATE):
        for record in batch:
            index.add(_record_text(record["text"]))
    return index


def leakage_screen(
    *, source: DatasetVersion, records: Sequence[str], canaries: Sequence[str], consumer_ref: str
) -> tuple[list[str], LeakageReport]:
    """The generated records that may enter custody as a new version, and the screen's counts."""
    index = source_index(source=source, consumer_ref=consumer_ref)
    codes = _canary_codes(canaries)
    kept: list[str] = []
    counts = Counter[str]()
    for text in records:
        normalized = _normalized(text)
        if not normalized:
            counts["empty"] += 1
            continue
        digits = "".join(_DIGITS.findall(normalized))
        if any(code in digits for code in codes):
            counts["canary"] += 1
            continue
        verdict = index.too_close(normalized)
        if verdict is not None:
            counts[verdict] += 1
            continue
        kept.append(text)
    report = LeakageReport(
        generated=len(records),
        kept=len(kept),
        dropped_exact=counts["exact"],
        dropped_near=counts["near"],
        dropped_canary=counts["canary"],
        source_records=len(index.sizes),
    )
    return kept, report


def synthetic_version_get(*, job_ref: str) -> DatasetVersion | None:
    """The version a generation job already made (a retried job makes none twice)."""
    return DatasetVersion.objects.filter(provenance__job=job_ref).select_related("dataset").first()


@transaction.atomic
def synthetic_version_create(
    *,
    actor: User,
    organisation: Organisation,
    source: DatasetVersion,
    records: Sequence[str],
    report: LeakageReport,
    provenance: Mapping[str, Any],
) -> DatasetVersion:
    """Ingest screened generated ``records`` as a new version of a new dataset of ``organisation``,
    marked model-generated; it goes to review like an upload. Idempotent per ``provenance["job"]``.

    :raises NotPermitted: the actor is not a member of the organisation.
    :raises Invalid: no record left to ingest.
    """
    job_ref = str(provenance["job"])
    existing = synthetic_version_get(job_ref=job_ref)
    if existing is not None:
        return existing
    name = f"Synthetic {source.dataset.name} ({job_ref})"[:120]
    dataset = Dataset.objects.create(
        owner=organisation,
        name=name,
        slug=slugify(f"synthetic-{job_ref}")[:64],
        description=f"Generated by {job_ref} from a model trained on {source.public_id}; leakage-screened.",
        policy=dict(source.dataset.policy),
        created_by=actor,
    )
    version = version_create(actor=actor, dataset=dataset)
    version.provenance = {
        **dict(provenance),
        "model_generated": True,
        "source_version": source.public_id,
        "source_merkle_root": source.merkle_root,
        "leakage": report.as_dict(),
    }
    version.save(update_fields=["provenance"])
    contribution = contribution_start(
        actor=actor, organisation=organisation, version=version, filename="generated.jsonl", format="jsonl"
    )
    body = "".join(json.dumps({"text": text}, ensure_ascii=False) + "\n" for text in records).encode()
    contribution_part_put(contribution=contribution, number=1, data=body)
    contribution_complete(actor=actor, contribution=contribution)
    version_process(actor=actor, version=version)
    audit_record(
        action="custody.synthetic_version_create",
        actor=actor,
        organisation=organisation,
        object_type="dataset_version",
        object_id=version.pk,
        details={
            "job": job_ref,
            "source_version": source.pk,
            "records": len(records),
            "sha256": hashlib.sha256(body).hexdigest(),
            **{k: v for k, v in report.as_dict().items() if k.startswith("dropped")},
        },
    )
    return version
