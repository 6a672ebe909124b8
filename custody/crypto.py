"""Shard encryption: AES-256-GCM with the shard's identity bound as associated data.

A shard blob is ``MAGIC || nonce(12) || ciphertext+tag``. The associated data
names the dataset version, the shard index and the data-key version, so a
shard swapped with another, moved to another version, or replayed under an old
key fails authentication instead of decrypting to the wrong records.
Only this module and ``custody/keys.py`` (and ``common/signing.py``) touch
``cryptography``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from custody.exceptions import IntegrityFailure

MAGIC = b"SRS1"
NONCE_BYTES = 12
KEY_BYTES = 32


@dataclass(frozen=True)
class ShardIdentity:
    version_id: int
    index: int
    key_version: int

    def associated_data(self) -> bytes:
        return (
            f"sealroom/shard/v1|version={self.version_id}|index={self.index}|key_version={self.key_version}"
        ).encode()


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def blob_seal(*, key: bytes, aad: bytes, plaintext: bytes) -> bytes:
    """Encrypt bytes for the blob store, binding ``aad`` (what and where they are)."""
    nonce = os.urandom(NONCE_BYTES)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def blob_open(*, key: bytes, aad: bytes, blob: bytes, what: str) -> bytes:
    """:raises IntegrityFailure: altered, truncated, or not the blob ``aad`` names."""
    if len(blob) < len(MAGIC) + NONCE_BYTES + 16 or not blob.startswith(MAGIC):
        raise IntegrityFailure(f"{what} is truncated or not a Sealroom blob.", code="custody.shard_corrupt")
    nonce = blob[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(MAGIC) + NONCE_BYTES :], aad)
    except InvalidTag:
        raise IntegrityFailure(
            f"{what} failed authentication: it was altered, swapped, or belongs elsewhere.",
            code="custody.shard_tampered",
        ) from None


def shard_seal(*, data_key: bytes, identity: ShardIdentity, plaintext: bytes) -> bytes:
    """Encrypt one shard's bytes under the version's data key."""
    return blob_seal(key=data_key, aad=identity.associated_data(), plaintext=plaintext)


def shard_open(*, data_key: bytes, identity: ShardIdentity, blob: bytes) -> bytes:
    """Decrypt one shard.

    :raises IntegrityFailure: the blob was altered, truncated, or belongs elsewhere.
    """
    return blob_open(
        key=data_key,
        aad=identity.associated_data(),
        blob=blob,
        what=f"Shard {identity.index} of version {identity.version_id}",
    )


def wrap_key(*, wrapping_key: bytes, key: bytes, context: bytes) -> bytes:
    """Wrap a key under another with AES-GCM, binding ``context`` (what the key is for)."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(wrapping_key).encrypt(nonce, key, context)


def unwrap_key(*, wrapping_key: bytes, wrapped: bytes, context: bytes) -> bytes:
    """:raises IntegrityFailure: wrong wrapping key or context, or altered bytes."""
    try:
        return AESGCM(wrapping_key).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], context)
    except InvalidTag:
        raise IntegrityFailure(
            "A wrapped key failed to unwrap: wrong key, wrong owner, or altered.",
            code="custody.key_unwrap_failed",
        ) from None


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def merkle_root(leaf_hashes: list[str]) -> str:
    """Root of a binary Merkle tree over hex SHA-256 leaves (RFC 6962 style prefixes).

    Leaves are hashed with a 0x00 prefix and inner nodes with 0x01, so a leaf
    can never be passed off as an inner node; an odd node is promoted as is.
    """
    if not leaf_hashes:
        return hashlib.sha256(b"").hexdigest()
    level = [hashlib.sha256(b"\x00" + bytes.fromhex(h)).digest() for h in leaf_hashes]
    while len(level) > 1:
        nxt = [
            hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()
