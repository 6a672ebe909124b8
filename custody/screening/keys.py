"""Keyed hashing for screening states.

A state holds hashes of normalized texts, of tokens and token n-grams, and MinHash
signatures. Unkeyed, a hash of a token is as good as the token to anyone with a word
list, so everything that goes into a state is derived under a key: pass the version's
screening secret (custody derives it per dataset version) and a leaked state tells
nothing a dictionary can undo. Without a key the built-in public one is used, which is
fine for tests and tools and nothing else.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np
from numpy.typing import NDArray

PUBLIC_KEY = b"sealroom/screening/public-key/v1"
_MAX_BLAKE2_KEY = 64
_CACHE_LIMIT = 1 << 21


def _subkey(key: bytes, purpose: bytes) -> bytes:
    return hashlib.blake2b(purpose, key=key, digest_size=32, person=b"sealroom-subkey").digest()


class Keyring:
    """The keyed functions one screening run uses; equal keys give equal hashes everywhere."""

    def __init__(self, key: bytes | None) -> None:
        key = PUBLIC_KEY if key is None else key
        if not isinstance(key, bytes) or not key:
            raise ValueError("the screening key must be non-empty bytes")
        if len(key) > _MAX_BLAKE2_KEY:
            key = hashlib.blake2b(key, digest_size=_MAX_BLAKE2_KEY).digest()
        self._exact_key = _subkey(key, b"exact")
        self._label_key = _subkey(key, b"label")
        self._perm_key = _subkey(key, b"minhash-permutations")
        self.fingerprint = hashlib.blake2b(b"fingerprint", key=key, digest_size=8).hexdigest()
        self._tokens = _TokenCache(_subkey(key, b"token"))

    def exact(self, normalized_utf32: bytes) -> bytes:
        """16 bytes identifying a normalized text."""
        return hashlib.blake2b(normalized_utf32, key=self._exact_key, digest_size=16).digest()

    def label(self, label: str | None) -> int:
        """A nonzero 64-bit value per label value; 0 stands for no label."""
        if label is None:
            return 0
        digest = hashlib.blake2b(label.encode("utf-8", "surrogatepass"), key=self._label_key, digest_size=8)
        return int.from_bytes(digest.digest(), "little") or 1

    def permutations(self, num_perm: int, seed: int) -> tuple[NDArray[np.uint32], NDArray[np.uint32]]:
        """Affine permutations ``a * h + b mod 2**32`` (``a`` odd) in datasketch's "affine32" scheme."""
        a = np.empty(num_perm, dtype=np.uint32)
        b = np.empty(num_perm, dtype=np.uint32)
        for i in range(num_perm):
            digest = hashlib.blake2b(struct.pack("<qI", seed, i), key=self._perm_key, digest_size=8).digest()
            a[i] = int.from_bytes(digest[:4], "little") | 1
            b[i] = int.from_bytes(digest[4:], "little")
        return a, b

    def tokens(self, fingerprints: NDArray[np.uint64]) -> tuple[NDArray[np.uint64], NDArray[np.uint32]]:
        """Per token fingerprint: a 64-bit id to build n-grams from, and the 32-bit hash that is
        stored. Independent parts of one keyed digest, so stored token hashes reveal nothing
        about the n-gram hashes."""
        return self._tokens.lookup(fingerprints)


class _TokenCache:
    """Memoizes the keyed token digest, which costs a Python call per token.

    A sorted array of known fingerprints answers most tokens of a corpus in one
    ``searchsorted`` (vocabularies are Zipfian); new ones go to a dict and are merged in
    when it grows to a quarter of the array. It holds 64-bit fingerprints, never token
    text, and starts over past ``_CACHE_LIMIT`` entries. Results never depend on it.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._known = np.empty(0, dtype=np.uint64)
        self._ids = np.empty(0, dtype=np.uint64)
        self._stored = np.empty(0, dtype=np.uint32)
        self._recent: dict[int, tuple[int, int]] = {}

    def lookup(self, fingerprints: NDArray[np.uint64]) -> tuple[NDArray[np.uint64], NDArray[np.uint32]]:
        where = np.searchsorted(self._known, fingerprints)
        np.minimum(where, max(self._known.size - 1, 0), out=where)
        if self._known.size:
            hit = self._known[where] == fingerprints
            ids, stored = self._ids[where], self._stored[where]
        else:
            hit = np.zeros(fingerprints.size, dtype=bool)
            ids = np.empty(fingerprints.size, dtype=np.uint64)
            stored = np.empty(fingerprints.size, dtype=np.uint32)
        misses = np.flatnonzero(~hit)
        if misses.size:
            values = [self._digest(fp) for fp in fingerprints[misses].tolist()]
            ids[misses] = [value[0] for value in values]
            stored[misses] = [value[1] for value in values]
            if len(self._recent) > max(4096, self._known.size // 4):
                self._merge()
        return ids, stored

    def _digest(self, fingerprint: int) -> tuple[int, int]:
        value = self._recent.get(fingerprint)
        if value is None:
            digest = hashlib.blake2b(
                fingerprint.to_bytes(8, "little"), key=self._key, digest_size=12
            ).digest()
            value = (int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little"))
            self._recent[fingerprint] = value
        return value

    def _merge(self) -> None:
        if self._known.size > _CACHE_LIMIT:
            self._known = self._known[:0]
            self._ids, self._stored = self._ids[:0], self._stored[:0]
        recent = self._recent
        known = np.concatenate([self._known, np.fromiter(recent, dtype=np.uint64, count=len(recent))])
        ids = np.concatenate(
            [self._ids, np.fromiter((v[0] for v in recent.values()), np.uint64, len(recent))]
        )
        stored = np.concatenate(
            [self._stored, np.fromiter((v[1] for v in recent.values()), np.uint32, len(recent))]
        )
        order = np.argsort(known, kind="stable")
        self._known, self._ids, self._stored = known[order], ids[order], stored[order]
        self._recent = {}
