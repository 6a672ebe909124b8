"""Text as arrays of code points: classes, normal forms, shingles, tokens, MinHash.

Screening works on a batch of records at a time: their folded texts are joined with a
line break after each (a space to every rule here, so nothing spans two records), and
each position carries the row of its record. A batch then costs a handful of numpy
passes instead of a Python loop per character or per record.

Two normal forms:

- the *folded* text: NFKC, then case folding. Tokens and the garbage measures use it;
  format characters (zero-width space, joiners, soft hyphen...) stay in it as tokens of
  their own, because invisible characters are a known trigger for poisoned data.
- the *normalized* text, for duplicates: the folded text without format and control
  characters, every run of whitespace one space, trimmed at both ends.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

SPACE, LETTER, DIGIT, CJK, SYMBOL, FORMAT, CONTROL, OTHER = range(8)
N_CLASSES = 8
# Han (with radicals and extensions) and kana: one token per character, having no spaces.
_CJK_RANGES = (
    (0x2E80, 0x2FDF),
    (0x3005, 0x3007),
    (0x3021, 0x3029),
    (0x3038, 0x303B),
    (0x3040, 0x30FF),
    (0x31F0, 0x31FF),
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0xFF66, 0xFF9F),
    (0x20000, 0x323AF),
)
_TABLE_LIMIT = 0x30000
U64 = np.uint64
U32 = np.uint32
_POLY = U64(0x100000001B3)  # odd, so its powers are invertible modulo 2**64
_POLY_INVERSE = U64(pow(int(_POLY), -1, 1 << 64))
_MIX = U64(0x9E3779B97F4A7C15)
_NGRAM_MULTIPLIERS = tuple(U64((0x9E3779B97F4A7C15 * (2 * j + 1)) % (1 << 64) | 1) for j in range(16))
_BATCH_SHINGLES = 1 << 14  # shingles per permutation pass: 128 x 16k x 4 bytes = 8 MiB
SEPARATOR = "\n"


def _unicode_class(char: str) -> int:
    if char.isspace():
        return SPACE
    category = unicodedata.category(char)
    if category[0] in "LM":
        return LETTER
    if category[0] == "N":
        return DIGIT
    if category[0] in "PS":
        return SYMBOL
    if category == "Cf":
        return FORMAT
    if category in ("Cc", "Cs"):
        return CONTROL
    return OTHER


def _classify(code_point: int) -> int:
    if any(low <= code_point <= high for low, high in _CJK_RANGES):
        return CJK
    return _unicode_class(chr(code_point))


@functools.cache
def _class_table() -> NDArray[np.uint8]:
    table = np.fromiter(
        map(_unicode_class, map(chr, range(_TABLE_LIMIT))), dtype=np.uint8, count=_TABLE_LIMIT
    )
    for low, high in _CJK_RANGES:
        table[low : high + 1] = CJK
    return table


def classes(code_points: NDArray[np.uint32]) -> NDArray[np.uint8]:
    """The character class of each code point (SPACE, LETTER, ...)."""
    table = _class_table()
    high = code_points >= _TABLE_LIMIT
    if not high.any():
        return table[code_points]
    result = table[np.where(high, 0, code_points)]
    result[high] = [_classify(cp) for cp in code_points[high].tolist()]
    return result


def fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


@dataclass(frozen=True)
class Chars:
    """The folded texts of a batch, joined, with each position's class and row."""

    cps: NDArray[np.uint32]
    cls: NDArray[np.uint8]
    row: NDArray[np.int64]
    lengths: NDArray[np.int64]  # folded length of each record, without its separator

    @classmethod
    def build(cls, folded: list[str]) -> Chars:
        lengths = np.fromiter((len(text) for text in folded), dtype=np.int64, count=len(folded))
        joined = SEPARATOR.join(folded) + SEPARATOR
        cps = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype="<u4").astype(U32)
        rows = np.repeat(np.arange(len(folded), dtype=np.int64), lengths + 1)
        return cls(cps, classes(cps), rows, lengths)

    def class_counts(self) -> NDArray[np.int64]:
        """(records, N_CLASSES): how many characters of each class each record has."""
        records = self.lengths.size
        counts = np.bincount(self.row * N_CLASSES + self.cls, minlength=records * N_CLASSES)
        counts = counts.reshape(records, N_CLASSES)
        counts[:, SPACE] -= 1  # the separator
        return counts

    def normalized(self) -> tuple[NDArray[np.uint32], NDArray[np.int64]]:
        """The duplicate-detection form of every record, joined, and the row of each position."""
        keep = (self.cls != FORMAT) & (self.cls != CONTROL)
        cps, rows, space = self.cps[keep], self.row[keep], self.cls[keep] == SPACE
        # Drop a space that starts its record or follows another space.
        follows = np.ones_like(space)
        follows[1:] = space[:-1] | (rows[1:] != rows[:-1])
        keep = ~(space & follows)
        cps, rows, space = cps[keep], rows[keep], space[keep]
        # Then the one space left at the end of each record (its separator, at least).
        ends = np.ones_like(space)
        ends[:-1] = rows[1:] != rows[:-1]
        keep = ~(space & ends)
        return np.where(space[keep], U32(32), cps[keep]).astype(U32), rows[keep]


def shingle_hashes(
    norm: NDArray[np.uint32], rows: NDArray[np.int64], size: int
) -> tuple[NDArray[np.uint32], NDArray[np.int64]]:
    """32-bit hashes of every run of ``size`` characters within one record (of the whole
    record when it is shorter), and the row of each, in row order."""
    count = norm.size - size + 1
    hashes = np.empty(0, dtype=U32)
    hash_rows = np.empty(0, dtype=np.int64)
    if count > 0:
        wide = norm.astype(U64)
        hashed = np.zeros(count, dtype=U64)
        for offset in range(size):
            hashed *= _POLY
            hashed += wide[offset : offset + count]
        within = rows[:count] == rows[size - 1 :]
        hashes = ((hashed[within] * _MIX) >> U64(32)).astype(U32)
        hash_rows = rows[:count][within]
    lengths = np.bincount(rows, minlength=int(rows[-1]) + 1 if rows.size else 0)
    short = np.flatnonzero((lengths > 0) & (lengths < size))
    if short.size:
        starts = np.concatenate([[0], np.cumsum(lengths)])
        extra = [shingle_hash(norm[starts[row] : starts[row + 1]].tolist()) for row in short.tolist()]
        hashes = np.concatenate([hashes, np.array(extra, dtype=U32)])
        hash_rows = np.concatenate([hash_rows, short])
        order = np.argsort(hash_rows, kind="stable")
        hashes, hash_rows = hashes[order], hash_rows[order]
    return hashes, hash_rows


def shingle_hash(code_points: list[int]) -> int:
    """The hash of one shingle, as ``shingle_hashes`` computes it (also datasketch's ``hashfunc``
    in the compatibility test)."""
    hashed = 0
    for code_point in code_points:
        hashed = (hashed * int(_POLY) + code_point) % (1 << 64)
    return ((hashed * int(_MIX)) % (1 << 64)) >> 32


def _fmix32(values: NDArray[np.uint32]) -> NDArray[np.uint32]:
    # datasketch's "affine32" pre-mix (the MurmurHash3 finalizer); uint32 arithmetic wraps.
    values = values ^ (values >> U32(16))
    values = values * U32(0x85EBCA6B)
    values = values ^ (values >> U32(13))
    values = values * U32(0xC2B2AE35)
    return values ^ (values >> U32(16))


def fmix64(values: NDArray[np.uint64]) -> NDArray[np.uint64]:
    values = values ^ (values >> U64(33))
    values = values * U64(0xFF51AFD7ED558CCD)
    values = values ^ (values >> U64(33))
    values = values * U64(0xC4CEB9FE1A85EC53)
    return values ^ (values >> U64(33))


def minhashes(
    hashes: NDArray[np.uint32],
    hash_rows: NDArray[np.int64],
    records: int,
    permutations: tuple[NDArray[np.uint32], NDArray[np.uint32]],
) -> NDArray[np.uint32]:
    """(records, num_perm) signatures, each equal to datasketch ``MinHash(scheme="affine32")``
    fed that record's hashes; rows without hashes are all zero."""
    a, b = permutations
    signatures = np.zeros((records, a.size), dtype=U32)
    counts = np.bincount(hash_rows, minlength=records)
    starts = np.concatenate([[0], np.cumsum(counts)])
    mixed = _fmix32(hashes)
    rows = np.flatnonzero(counts).tolist()
    while rows:
        # As many whole records as fit one pass; a record bigger than a pass goes alone.
        first = rows[0]
        taken = 1
        while taken < len(rows) and starts[rows[taken] + 1] - starts[first] <= _BATCH_SHINGLES:
            taken += 1
        chunk, rows = rows[:taken], rows[taken:]
        begin, end = int(starts[first]), int(starts[chunk[-1] + 1])
        if len(chunk) == 1:
            signatures[first] = _minhash_blocked(mixed[begin:end], a, b)
            continue
        permuted = np.multiply.outer(a, mixed[begin:end])
        permuted += b[:, None]
        signatures[chunk] = np.minimum.reduceat(permuted, starts[chunk] - begin, axis=1).T
    return signatures


def _minhash_blocked(
    mixed: NDArray[np.uint32], a: NDArray[np.uint32], b: NDArray[np.uint32]
) -> NDArray[np.uint32]:
    signature = np.full(a.size, np.iinfo(U32).max, dtype=U32)
    for start in range(0, mixed.size, _BATCH_SHINGLES):
        permuted = np.multiply.outer(a, mixed[start : start + _BATCH_SHINGLES])
        permuted += b[:, None]
        np.minimum(signature, permuted.min(axis=1), out=signature)
    return signature


class _Powers:
    """Powers of the polynomial base and of its inverse modulo 2**64, grown on demand."""

    def __init__(self) -> None:
        self.forward = np.ones(1, dtype=U64)
        self.inverse = np.ones(1, dtype=U64)

    def upto(self, length: int) -> tuple[NDArray[np.uint64], NDArray[np.uint64]]:
        forward, inverse = self.forward, self.inverse
        if forward.size < length:
            size = max(length, 2 * forward.size, 1 << 16)
            forward = np.ones(size, dtype=U64)
            inverse = np.ones(size, dtype=U64)
            forward[1:] = np.cumprod(np.full(size - 1, _POLY, dtype=U64))
            inverse[1:] = np.cumprod(np.full(size - 1, _POLY_INVERSE, dtype=U64))
            self.forward, self.inverse = forward, inverse
        return forward, inverse


_POWERS = _Powers()


def token_spans(cls: NDArray[np.uint8]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """Start and end offsets of the tokens: runs of letters and digits; single CJK characters,
    symbols and format characters. Spaces and control characters separate tokens."""
    if cls.size == 0:
        return np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp)
    word = (cls == LETTER) | (cls == DIGIT)
    single = (cls == CJK) | (cls == SYMBOL) | (cls == FORMAT) | (cls == OTHER)
    # Tokens never nest, so the k-th start and the k-th end belong to the same token.
    first = single.copy()
    first[0] |= word[0]
    first[1:] |= word[1:] & ~word[:-1]
    last = single
    last[-1] |= word[-1]
    last[:-1] |= word[:-1] & ~word[1:]
    return np.flatnonzero(first), np.flatnonzero(last) + 1


def token_fingerprints(
    cps: NDArray[np.uint32], starts: NDArray[np.intp], ends: NDArray[np.intp]
) -> NDArray[np.uint64]:
    """A 64-bit fingerprint of each token's characters, whatever its position."""
    forward, inverse = _POWERS.upto(cps.size + 1)
    prefix = np.zeros(cps.size + 1, dtype=U64)
    np.cumsum(cps.astype(U64) * forward[: cps.size], out=prefix[1:])
    spans = (prefix[ends] - prefix[starts]) * inverse[starts]
    return fmix64(spans ^ ((ends - starts).astype(U64) * _MIX))


def ngram_hashes(
    ids: NDArray[np.uint64], rows: NDArray[np.int64], size: int
) -> tuple[NDArray[np.uint32], NDArray[np.int64]]:
    """32-bit hashes of every run of ``size`` consecutive token ids within one record, and
    the row of each."""
    count = ids.size - size + 1
    if count < 1:
        return np.empty(0, dtype=U32), np.empty(0, dtype=np.int64)
    combined = np.zeros(count, dtype=U64)
    for offset in range(size):
        combined += ids[offset : offset + count] * _NGRAM_MULTIPLIERS[offset]
    within = rows[:count] == rows[size - 1 :]
    return (fmix64(combined[within]) >> U64(32)).astype(U32), rows[:count][within]


def distinct_per_row(
    values: NDArray[np.uint32], rows: NDArray[np.int64], records: int, cap: int
) -> tuple[NDArray[np.int64], NDArray[np.uint32]]:
    """Each row's distinct values, ascending, at most ``cap`` (the smallest): lengths and values."""
    keys = np.unique((rows.astype(U64) << U64(32)) | values.astype(U64))
    key_rows = (keys >> U64(32)).astype(np.int64)
    first = np.searchsorted(key_rows, key_rows, side="left")
    kept = np.arange(keys.size) - first < cap
    lengths = np.bincount(key_rows[kept], minlength=records).astype(np.int64)
    return lengths, (keys[kept] & U64(0xFFFFFFFF)).astype(U32)


def longest_run(cps: NDArray[np.uint32]) -> int:
    """The longest run of one repeated code point."""
    if cps.size == 0:
        return 0
    edges = np.flatnonzero(cps[1:] != cps[:-1])
    bounds = np.concatenate([[-1], edges, [cps.size - 1]])
    return int(np.diff(bounds).max())


def estimated_distinct(signatures: NDArray[np.uint32]) -> NDArray[np.float64]:
    """Distinct elements behind each MinHash: the minimum of n uniform values averages 1/(n+1)."""
    totals = signatures.astype(np.float64).sum(axis=1) / 2.0**32
    return np.maximum(signatures.shape[1] / np.maximum(totals, 1e-12) - 1.0, 1.0)
