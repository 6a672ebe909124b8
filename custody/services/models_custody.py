"""Models held in custody (issue 16): the facts a listing shows, and the weights opened for serving.

A job whose license keeps the weights in custody seals its artifact here
(``artifacts.artifact_seal``); training then calls ``custody_model_record`` in the
transaction that finishes the job, so marketplace can list the model (receipt hash,
metrics, lineage, trainer) without importing training. ``custody_model_open`` is the one
path that decrypts a model's weights for serving: audited with the call it serves.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from common.audit import audit_record
from common.models import Organisation
from custody.desensitize import Policy, get_desensitizer
from custody.exceptions import NotFound
from custody.models import (
    CustodyModel,
    DatasetVersion,
    Grant,
    GrantPurpose,
    GrantState,
    UsageKind,
    UsageRecord,
)
from custody.services._keys import system_grant, version_pseudonym_key, version_screening_key
from custody.services.artifacts import artifact_open
from custody.services.grants import grant_stream_open, usage_record

__all__ = [
    "MODEL_USES",
    "custody_model_get",
    "custody_model_open",
    "custody_model_record",
    "model_license_find",
    "model_license_tokens_left",
    "model_license_use_record",
    "model_use_allowed",
    "model_use_pointer",
]

# A model license's grant terms (marketplace/model_terms.py writes them): the word of each use.
MODEL_USES = {
    "inference": "inference",
    "distill": "distillation_allowed",
    "generate": "generation_allowed",
    "fine_tune": "fine_tune_allowed",
}


def custody_model_record(
    *,
    job_ref: str,
    version: DatasetVersion,
    trainer: Organisation,
    artifact_name: str,
    artifact_sha256: str,
    receipt_sha256: str,
    task: str,
    template: str,
    base_name: str,
    metrics: Mapping[str, Any],
    lineage: Sequence[Mapping[str, Any]],
) -> CustodyModel:
    """Keep a succeeded job's custody model (idempotent per job)."""
    model, created = CustodyModel.objects.get_or_create(
        job_ref=job_ref,
        defaults={
            "version": version,
            "trainer": trainer,
            "artifact_name": artifact_name,
            "artifact_sha256": artifact_sha256,
            "receipt_sha256": receipt_sha256,
            "task": task,
            "template": template,
            "base_name": base_name,
            "metrics": dict(metrics),
            "lineage": [dict(item) for item in lineage],
        },
    )
    if created:
        audit_record(
            action="custody.model_record",
            organisation=trainer,
            object_type="dataset_version",
            object_id=version.pk,
            details={"job": job_ref, "artifact_sha256": artifact_sha256, "receipt_sha256": receipt_sha256},
        )
    return model


def custody_model_get(*, job_ref: str) -> CustodyModel:
    """The custody model named by its job's public id. :raises NotFound:"""
    model = CustodyModel.objects.select_related("version", "trainer").filter(job_ref=job_ref).first()
    if model is None:
        raise NotFound(f"No model in custody is named {job_ref}.", code="custody.model_not_found")
    return model


def custody_model_open(*, model: CustodyModel, consumer_ref: str, organisation: Organisation) -> bytes:
    """Decrypt a custody model's archive for serving (the caller keeps it in memory or the sandbox).

    :raises KeyUnavailable: the version's key is disabled or destroyed (a takedown).
    :raises IntegrityFailure: the blob was altered.
    """
    audit_record(
        action="custody.model_open",
        organisation=organisation,
        object_type="dataset_version",
        object_id=model.version_id,
        details={"job": model.job_ref, "purpose": "serving", "consumer_ref": consumer_ref},
    )
    return artifact_open(version=model.version, name=model.artifact_name)


def model_use_allowed(terms: Mapping[str, Any], use: str) -> bool:
    """Whether a model license's grant terms allow ``use`` (a key of ``MODEL_USES``): one check per
    use, read from the grant snapshot, so training never asks marketplace."""
    if terms.get("kind") != "model" or use not in MODEL_USES:
        return False
    if use == "inference":
        inference = terms.get("inference")
        return isinstance(inference, Mapping) and inference.get("allowed") is True
    return terms.get(MODEL_USES[use]) is True


def model_use_pointer(use: str) -> str:
    """The JSON pointer of the term that governs ``use`` (a key of ``MODEL_USES``)."""
    return "/terms/inference/allowed" if use == "inference" else f"/terms/{MODEL_USES[use]}"


# --- a licensee's use of a licensed model beyond inference (issue 16: distil, generate, fine-tune) --


def model_license_find(*, organisation: Organisation, model_ref: str) -> Grant | None:
    """The model license ``organisation`` holds on ``model_ref`` (``job_...``): the newest usable
    one (active, unexpired), else the newest of any state (so a caller can say it lapsed), else None."""
    grants = list(
        Grant.objects.filter(licensee=organisation, terms__kind="model", terms__model=str(model_ref))
        .select_related("version")
        .order_by("-pk")
    )
    now = timezone.now()
    for grant in grants:
        if grant.state == GrantState.ACTIVE and (grant.expires_at is None or grant.expires_at > now):
            return grant
    return grants[0] if grants else None


def model_license_tokens_left(grant: Grant) -> int | None:
    """Platform tokens a model license has left under its cap (None: no cap)."""
    cap = (grant.terms.get("inference") or {}).get("cap_tokens")
    if cap is None:
        return None
    used = UsageRecord.objects.filter(grant=grant, kind=UsageKind.TOKENS_INFERRED).aggregate(
        t=Sum("quantity")
    )
    return max(0, int(cap) - int(used["t"] or 0))


@transaction.atomic
def model_license_use_record(*, grant: Grant, consumer_ref: str, use: str, tokens: int) -> UsageRecord:
    """Meter a licensee job's use of a licensed model on its model license, once per job.

    ``distill`` and ``generate`` are the model's own forward passes (the teacher's logits over
    the student's tokens, the generated tokens): ``tokens_inferred`` of ``tokens``, settled like
    a plug-in call, so the model's holders are paid by the license's price. ``fine_tune`` reads
    no tokens through the model's license (the trainer's data license meters them): a
    ``job_started`` row of 1 ties the job to the license. Audited as ``custody.model_license_use``.
    """
    if use not in ("distill", "generate", "fine_tune"):
        raise ValueError(f"unknown model use {use!r}")
    kind, quantity = (UsageKind.JOB_STARTED, 1) if use == "fine_tune" else (UsageKind.TOKENS_INFERRED, tokens)
    existing = UsageRecord.objects.filter(grant=grant, consumer_ref=consumer_ref, kind=kind).first()
    if existing is not None:
        return existing
    usage = usage_record(grant=grant, consumer_ref=consumer_ref, kind=kind, quantity=max(0, int(quantity)))
    audit_record(
        action="custody.model_license_use",
        organisation=grant.licensee,
        object_type="grant",
        object_id=grant.pk,
        details={
            "model": grant.terms.get("model"),
            "license": grant.external_ref,
            "grant": grant.public_id,
            "use": use,
            "consumer_ref": consumer_ref,
            "usage_kind": str(kind),
            "quantity": usage.quantity,
        },
    )
    return usage


# --- the extraction guard (issue 16): verbatim overlap with the version's records -------------

# A window of this many words of (prompt + output) found verbatim in a record is a reproduction;
# an output is withheld when reproduced windows cover this many of its words (all, if fewer).
NGRAM_WORDS = 8
MIN_COVERED_WORDS = 4
_WORD = re.compile(r"\w+", re.UNICODE)


def _words(text: str) -> list[str]:
    return [w.casefold() for w in _WORD.findall(text)]


class ExtractionIndex:
    """Keyed hashes of every ``NGRAM_WORDS``-word window of a version's records (and extra secrets).

    A record shorter than that (of at least ``MIN_COVERED_WORDS`` words) is kept whole. Keyed by
    the version's screening secret, so the index (held only in the serving worker's memory) gives
    nothing a word list can undo. ``covered`` says how many output words a reproduction covers.
    """

    def __init__(self, key: bytes) -> None:
        self._key = hashlib.blake2b(b"extraction-guard", key=key[:64], digest_size=32).digest()
        self._digests: set[bytes] = set()
        self._lengths: set[int] = {NGRAM_WORDS}

    def _digest(self, words: Sequence[str]) -> bytes:
        return hashlib.blake2b("\x1f".join(words).encode(), key=self._key, digest_size=16).digest()

    def add(self, texts: Iterable[str]) -> None:
        for text in texts:
            words = _words(text)
            for start in range(max(0, len(words) - NGRAM_WORDS + 1)):
                self._digests.add(self._digest(words[start : start + NGRAM_WORDS]))
            if MIN_COVERED_WORDS <= len(words) < NGRAM_WORDS:
                self._digests.add(self._digest(words))
                self._lengths.add(len(words))

    def __len__(self) -> int:
        return len(self._digests)

    def covered(self, prompt: str, output: str) -> int:
        """How many of the output's words lie in a window (reaching into the output) seen verbatim."""
        before, after = _words(prompt), _words(output)
        words = before + after
        hit: set[int] = set()
        for size in sorted(self._lengths):
            for start in range(max(0, len(words) - size + 1)):
                end = start + size
                if end <= len(before):
                    continue
                if self._digest(words[start:end]) in self._digests:
                    hit.update(range(max(start, len(before)), end))
        return len(hit)

    def reproduces(self, prompt: str, output: str) -> bool:
        """Whether the output continues a record (or a secret) verbatim."""
        count = len(_words(output))
        return count > 0 and self.covered(prompt, output) >= min(MIN_COVERED_WORDS, count)


def _record_text(value: Any) -> str:
    if isinstance(value, Mapping):
        return "\n".join(str(v) for v in value.values())
    return str(value)


def model_extraction_index(
    *, model: CustodyModel, consumer_ref: str, secrets: Iterable[str] = ()
) -> ExtractionIndex:
    """Build the guard's index from the model's version (read under the platform's gate grant,
    audited) plus ``secrets`` (the training job's canaries)."""
    version = model.version
    index = ExtractionIndex(version_screening_key(version))
    stream = grant_stream_open(
        grant=system_grant(version, GrantPurpose.GATE), consumer_ref=consumer_ref, purpose=GrantPurpose.GATE
    )
    for batch in stream:
        index.add(_record_text(record["text"]) for record in batch)
    index.add(secrets)
    return index


def model_output_desensitize(*, model: CustodyModel, texts: Sequence[str]) -> list[str]:
    """The outputs through the version's desensitizer (its policy and pseudonym key)."""
    if not texts:
        return []
    version = model.version
    desensitizer = get_desensitizer(Policy.from_dict(version.dataset.policy), version_pseudonym_key(version))
    return [result.text for result in desensitizer.desensitize_batch(list(texts))]
