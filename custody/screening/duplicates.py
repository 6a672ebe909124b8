"""Exact and near duplicates over a table sorted by record id.

Exact duplicates share the keyed hash of their normalized text; the lowest id of each
group is kept. Near duplicates are looked for among those kept records only: MinHash LSH
(datasketch's MinHashLSH banding, see ``lsh_buckets``) proposes candidates, records that
share a band bucket; each candidate pair is verified by the estimated Jaccard similarity
of the signatures; the clusters are the connected components of the verified pairs (so
A~B and B~C puts A, B and C together even when A and C differ more). The lowest id of a
cluster is kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from custody.screening.text import fmix64


def exact_representatives(exact: NDArray[np.uint64], content: NDArray[np.bool_]) -> NDArray[np.int64]:
    """For each row, the row of its exact-duplicate group that is kept (itself when kept);
    -1 for rows without content."""
    result = np.full(content.size, -1, dtype=np.int64)
    rows = np.flatnonzero(content)
    if rows.size == 0:
        return result
    high, low = exact[rows, 0], exact[rows, 1]
    order = np.lexsort((rows, low, high))
    rows, high, low = rows[order], high[order], low[order]
    first = np.ones(rows.size, dtype=bool)
    first[1:] = (high[1:] != high[:-1]) | (low[1:] != low[:-1])
    group = np.cumsum(first) - 1
    result[rows] = rows[first][group]
    return result


@dataclass(frozen=True)
class NearDuplicates:
    """Per row: the kept row of its cluster (-1 when not screened), and for rows in a cluster
    of two or more, the best verified similarity and the row it was measured against."""

    root: NDArray[np.int64]
    similarity: NDArray[np.float64]
    partner: NDArray[np.int64]


class _Clusters:
    """Union-find whose roots are the lowest row of each component."""

    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, row: int) -> int:
        parent = self.parent
        root = row
        while parent[root] != root:
            root = parent[root]
        while parent[row] != root:
            parent[row], row = root, parent[row]
        return root

    def union(self, first: int, second: int) -> int:
        a, b = self.find(first), self.find(second)
        if a != b:
            a, b = min(a, b), max(a, b)
            self.parent[b] = a
        return a


class _Verifier:
    def __init__(self, signatures: NDArray[np.uint32], threshold: float, size: int) -> None:
        self.signatures = signatures
        self.threshold = threshold
        self.similarity = np.zeros(size, dtype=np.float64)
        self.partner = np.full(size, -1, dtype=np.int64)

    def matches(self, row: int, others: list[int]) -> list[int]:
        """The rows among ``others`` similar enough to ``row``, noting the best similarities."""
        sims = (self.signatures[others] == self.signatures[row]).mean(axis=1)
        found = []
        for other, sim in zip(others, sims.tolist(), strict=True):
            if sim >= self.threshold:
                found.append(other)
                for a, b in ((row, other), (other, row)):
                    if sim > self.similarity[a]:
                        self.similarity[a], self.partner[a] = sim, b
        return found


def near_duplicate_clusters(
    signatures: NDArray[np.uint32],
    rows: NDArray[np.int64],
    *,
    threshold: float,
    weights: tuple[float, float],
) -> NearDuplicates:
    """Cluster ``rows`` (ascending) of ``signatures`` into near-duplicate groups."""
    size = signatures.shape[0]
    root = np.full(size, -1, dtype=np.int64)
    root[rows] = rows
    verifier = _Verifier(signatures, threshold, size)
    clusters = _Clusters(size)
    seen: set[tuple[int, ...]] = set()
    for members in lsh_buckets(signatures, rows, threshold=threshold, weights=weights):
        if members not in seen:
            seen.add(members)
            _join_bucket(list(members), clusters, verifier)
    for row in rows.tolist():
        root[row] = clusters.find(row)
    return NearDuplicates(root, verifier.similarity, verifier.partner)


def lsh_buckets(
    signatures: NDArray[np.uint32], rows: NDArray[np.int64], *, threshold: float, weights: tuple[float, float]
) -> Iterator[tuple[int, ...]]:
    """The buckets of two or more ``rows`` that datasketch's MinHashLSH would hold.

    MinHashLSH chooses the bands (b bands of r rows minimizing the weighted false positive
    and negative probabilities at the threshold) and its hash tables put rows with equal
    band values in one bucket. Inserting 100,000 signatures into it one by one costs
    seconds and a few hundred MB of Python objects, so the same buckets are formed here
    by sorting a 64-bit hash of each band; a hash collision can only add a candidate,
    which verification then rejects.
    """
    # datasketch pulls in scipy: imported here, so that importing screening stays light.
    from datasketch import MinHashLSH  # type: ignore[import-untyped]

    if rows.size < 2:
        return
    lsh = MinHashLSH(threshold=threshold, num_perm=signatures.shape[1], weights=weights)
    selected = signatures[rows]
    for start, end in lsh.hashranges:
        keys = np.zeros(rows.size, dtype=np.uint64)
        for column in range(start, end):
            keys = fmix64(keys ^ selected[:, column].astype(np.uint64))
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        first = np.ones(keys.size, dtype=bool)
        first[1:] = keys[1:] != keys[:-1]
        bounds = np.append(np.flatnonzero(first), keys.size)
        for begin, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            if stop - begin > 1:
                yield tuple(rows[order[begin:stop]].tolist())


def _join_bucket(members: list[int], clusters: _Clusters, verifier: _Verifier) -> None:
    # Every candidate pair of the bucket is either verified or already connected, so the
    # components are exact; comparing with one member per component first keeps a bucket
    # full of one big cluster linear instead of quadratic.
    groups: dict[int, list[int]] = {}
    for row in members:
        own = clusters.find(row)
        others = [root for root in groups if root != own]
        matched: set[int] = set()
        if others:
            firsts = [groups[root][0] for root in others]
            matched = {clusters.find(hit) for hit in verifier.matches(row, firsts)}
            rest = [member for root in others if root not in matched for member in groups[root][1:]]
            if rest:
                matched |= {clusters.find(hit) for hit in verifier.matches(row, rest)}
        merged = groups.pop(own, [])
        for root in sorted(matched):
            merged += groups.pop(root)
            clusters.union(row, root)
        merged.append(row)
        groups[clusters.find(row)] = merged
