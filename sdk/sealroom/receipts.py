"""Offline verification of training receipts (docs/receipts.md).

A receipt is ``{"receipt": {...}, "algorithm": "Ed25519", "key_id", "public_key",
"signature"}``; the signature covers the canonical JSON of ``receipt`` (sorted keys,
no spaces, UTF-8, non-ASCII kept). Only keys the caller trusts count (those from
``GET /api/v1/audit/keys``, or a PEM it holds): the ``public_key`` inside the
document is never trusted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sealroom.errors import ReceiptInvalid
from sealroom.models import VerifiedReceipt

# The artifact's model card (Hugging Face README.md): outside the receipt's files, it names the receipt.
MODEL_CARD = "README.md"


def canonical(body: Any) -> bytes:
    """The bytes a receipt's signature covers."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id_for(public_pem: str) -> str:
    """A key's id: the first 16 hex digits of SHA-256 of its raw public bytes."""
    public = _load(public_pem)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _load(public_pem: str) -> Ed25519PublicKey:
    public = serialization.load_pem_public_key(public_pem.encode())
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return public


def signature_problems(document: Any, public_keys: Mapping[str, str]) -> list[str]:
    """What is wrong with the document's signature, against trusted ``public_keys`` (key id -> PEM)."""
    if not isinstance(document, dict) or not isinstance(document.get("receipt"), dict):
        return ["not a receipt document (no 'receipt' object)"]
    if document.get("algorithm") != "Ed25519":
        return [f"unknown algorithm {document.get('algorithm')!r}"]
    key_id = str(document.get("key_id", ""))
    pem = public_keys.get(key_id)
    if pem is None:
        return [f"signing key {key_id!r} is not one of the trusted keys"]
    try:
        _load(pem).verify(
            base64.b64decode(str(document.get("signature", "")), validate=True),
            canonical(document["receipt"]),
        )
    except (InvalidSignature, binascii.Error, ValueError):
        return ["the signature does not match the receipt: it was altered or signed by another key"]
    return []


def archive_problems(receipt: Mapping[str, Any], archive: Path) -> list[str]:
    """Files of the model archive that differ from the receipt's ``artifact_files`` (by sha256)."""
    expected = {str(f["name"]): f for f in receipt.get("artifact_files", [])}
    found: dict[str, str] = {}
    card = ""
    try:
        with tarfile.open(archive, mode="r:*") as tar:
            for member in tar:
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is None:
                    continue
                name = member.name.rsplit("/", 1)[-1]
                digest = hashlib.sha256()
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
                    if name == MODEL_CARD and len(card) < 1 << 20:
                        card += chunk.decode("utf-8", errors="replace")
                found[name] = digest.hexdigest()
    except (OSError, tarfile.TarError) as exc:
        return [f"cannot read the archive: {exc}"]
    problems = [f"{name}: missing from the archive" for name in sorted(set(expected) - set(found))]
    # The model card is written after the receipt is signed (it names the receipt's hash), so the
    # receipt cannot list it: it must name this receipt instead.
    if MODEL_CARD in found and MODEL_CARD not in expected:
        if hashlib.sha256(canonical(receipt)).hexdigest() not in card:
            problems.append(f"{MODEL_CARD}: the model card does not name this receipt's sha256")
        del found[MODEL_CARD]
    problems += [f"{name}: not in the receipt" for name in sorted(set(found) - set(expected))]
    problems += [
        f"{name}: sha256 differs from the receipt"
        for name in sorted(set(found) & set(expected))
        if found[name] != expected[name].get("sha256")
    ]
    return problems


def verify_receipt(
    document: Mapping[str, Any] | str | Path,
    public_keys: Mapping[str, str],
    *,
    artifact: str | Path | None = None,
) -> VerifiedReceipt:
    """Check a receipt (a dict, or a path to its JSON) against trusted keys, offline.

    :raises ReceiptInvalid: the signature does not match, the key is unknown, or a file
        of ``artifact`` (the downloaded tar.gz) differs from the receipt.
    """
    loaded: Any = document
    if isinstance(document, (str, Path)):
        try:
            loaded = json.loads(Path(document).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ReceiptInvalid([f"cannot read the receipt: {exc}"]) from None
    problems = signature_problems(loaded, public_keys)
    if not problems and artifact is not None:
        problems = archive_problems(loaded["receipt"], Path(artifact))
    if problems:
        raise ReceiptInvalid(problems)
    receipt = loaded["receipt"]
    return VerifiedReceipt(
        job_id=str(receipt.get("job", "")),
        dataset_version_id=str(receipt.get("dataset_version", "")),
        merkle_root=str(receipt.get("merkle_root", "")),
        key_id=str(loaded.get("key_id", "")),
        archive_checked=artifact is not None,
        receipt=dict(receipt),
    )


def keys_from_pem(*pems: str) -> dict[str, str]:
    """Trusted keys from PEM texts, by their key id (as the platform computes it)."""
    return {key_id_for(pem): pem for pem in pems}
