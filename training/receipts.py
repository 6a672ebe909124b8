"""Signed job receipts: what was trained on what, under which license, with what came out.

A receipt is a JSON document ``{"receipt": {...}, "algorithm": "Ed25519", "key_id",
"public_key", "signature"}``; the signature (base64) covers the canonical JSON of
``receipt`` (sorted keys, no spaces, UTF-8). Anyone holding the platform's public
key (``/api/v1/audit/keys``) verifies it offline: docs/receipts.md.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from django.utils import timezone

from common.signing import PublicKeyRing, signing_key_provider
from custody.models import Contribution, DatasetVersion
from training.models import TrainingJob

RECEIPT_TYPE = "sealroom.training-receipt/v1"


def canonical(body: Any) -> bytes:
    """The bytes a receipt's signature covers."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def receipt_sha256(document: dict[str, Any]) -> str:
    """The receipt's hash: sha256 (hex) of the canonical JSON of ``receipt``, the bytes its signature
    covers. The artifact's model card names it (training/model_card.py)."""
    return hashlib.sha256(canonical(document["receipt"])).hexdigest()


def receipt_body(
    job: TrainingJob,
    *,
    version: DatasetVersion,
    reads: Mapping[int, int] | None = None,
    components: Sequence[tuple[Any, Mapping[int, int]]] = (),
) -> dict[str, Any]:
    """The receipt's fields. A classifier's labels appear only as ids (``LABEL_<i>``, in the spec)
    with the hash of the sorted label vocabulary: the values are custody data.

    ``reads`` ({contribution id: platform tokens}, adding up to ``tokens_trained``) lists what the
    job read from each contribution, by the contribution's public id.
    """
    spec = {k: v for k, v in job.spec.items() if k != "base"}
    body = {
        "type": RECEIPT_TYPE,
        "job": job.public_id,
        "organisation": job.organisation.public_id,
        "template": job.template,
        "spec": spec,
        "grant": job.grant.public_id,
        # What the weights were licensed under, checkable by a third party holding the license:
        # its reference, the hash of the terms snapshot the grant carries, and the hash of the
        # rights allocation in force when it was issued (None when the license names none).
        "license": {
            "ref": job.grant.external_ref,
            "terms_sha256": hashlib.sha256(canonical(job.grant.terms)).hexdigest(),
            "allocation_sha256": _allocation_hash(job.grant.terms),
        },
        "dataset_version": version.public_id,
        "merkle_root": version.merkle_root,
        "base_model": {"name": job.base.name, "kind": job.base.kind, "sha256": job.base.file_hash},
        "artifact_files": job.artifact_files,
        "weights_left_custody": not job.artifact_encrypted,
        "epsilon_spent": float(job.epsilon_spent) if job.epsilon_spent is not None else None,
        "platform_tokens_trained": job.tokens_trained,
        # Training processes (DDP ranks) the runner reported it ran, else the ones the job asked for.
        "world_size": _world_size(job),
        "gate": {
            "passed": job.gate.get("passed"),
            "max_exposure": job.gate.get("max_exposure"),
            "checks": job.gate_public.get("checks", {}),
        },
        "dp_delta": (job.spec.get("dp") or {}).get("delta"),
        "issued_at": timezone.now().isoformat(),
    }
    if reads is not None:
        public = dict(Contribution.objects.filter(pk__in=list(reads)).values_list("pk", "public_id"))
        body["platform_tokens_by_contribution"] = [
            {"contribution": public[pk], "platform_tokens": tokens}
            for pk, tokens in sorted(reads.items(), key=lambda item: public[item[0]])
        ]
    if components:
        # A mixed job (issue 17 item 3): every license and Merkle root it read, with its weight and
        # the platform tokens read from its version (what that license is billed).
        mix = job.request.get("mix") or {}
        body["licenses"] = [
            {
                "ref": component.grant.external_ref,
                "grant": component.grant.public_id,
                "dataset_version": component.grant.version.public_id,
                "merkle_root": component.grant.version.merkle_root,
                "weight_bps": component.weight_bps,
                "platform_tokens": sum(its_reads.values()),
                "terms_sha256": hashlib.sha256(canonical(component.grant.terms)).hexdigest(),
                "allocation_sha256": _allocation_hash(component.grant.terms),
            }
            for component, its_reads in components
        ]
        body["attribution"] = list(mix.get("attribution") or [])
    lineage = job.metrics.get("lineage")
    if isinstance(lineage, list) and lineage:
        # The model held in custody the job started from, with its own chain (issue 16 item 4).
        body["lineage"] = lineage
    teacher = job.metrics.get("teacher")
    if isinstance(teacher, dict) and teacher:
        # Distillation (issue 16 item 3): the teacher's artifact hash and license beside the student's.
        body["teacher"] = teacher
    labels = job.metrics.get("labels")
    if isinstance(labels, dict) and labels.get("vocabulary_sha256"):
        body["label_vocabulary_sha256"] = labels["vocabulary_sha256"]
    return body


def _world_size(job: TrainingJob) -> int:
    final = (job.metrics or {}).get("final")
    reported = final.get("world_size") if isinstance(final, dict) else None
    if isinstance(reported, int) and not isinstance(reported, bool) and reported >= 1:
        return reported
    asked = (job.spec or {}).get("devices")
    return asked if isinstance(asked, int) and not isinstance(asked, bool) and asked >= 1 else 1


def _allocation_hash(terms: dict[str, Any]) -> str | None:
    """The allocation's hash from the terms snapshot: given there, or of the allocation given there."""
    given = terms.get("allocation_sha256")
    if isinstance(given, str) and given:
        return given
    allocation = terms.get("allocation")
    if allocation is None:
        return None
    return hashlib.sha256(canonical(allocation)).hexdigest()


def receipt_sign(body: dict[str, Any]) -> dict[str, Any]:
    """Sign a receipt body with the platform's current signing key."""
    key = signing_key_provider().current()
    return {
        "receipt": body,
        "algorithm": "Ed25519",
        "key_id": key.key_id,
        "public_key": key.public_pem(),
        "signature": key.sign(canonical(body)),
    }


def receipt_problems(document: Any, *, public_keys: dict[str, str]) -> list[str]:
    """What is wrong with a receipt document, checked against trusted ``public_keys`` (by key id).

    The public key embedded in the document is not trusted: only ``public_keys`` are.
    """
    if not isinstance(document, dict) or not isinstance(document.get("receipt"), dict):
        return ["not a receipt document (no 'receipt' object)"]
    if document.get("algorithm") != "Ed25519":
        return [f"unknown algorithm {document.get('algorithm')!r}"]
    key_id = str(document.get("key_id", ""))
    ring = PublicKeyRing(public_keys)
    if key_id not in ring:
        return [f"signing key {key_id!r} is not one of the trusted keys"]
    if not ring.verifies(key_id, canonical(document["receipt"]), str(document.get("signature", ""))):
        return ["the signature does not match the receipt: it was altered or signed by another key"]
    return []
