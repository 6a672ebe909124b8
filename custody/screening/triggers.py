"""Possible poisoning triggers: a rare token sequence repeated across unrelated records.

A backdoor is planted by inserting the same short sequence (``cf mn bb``, an odd phrase,
invisible characters) into a small share of otherwise unrelated records, usually all
carrying the label the attacker wants. So a token n-gram is suspicious when

1. it sits in the frequency band: in at least max(min_records, min_fraction * N) unique
   records and at most max_fraction * N (common phrases are not triggers). Duplicates
   count once, so templated or copied records do not make a sequence "repeated";
2. and either its records share rare tokens (at least ``trigger_min_rare_tokens`` tokens,
   present in 90% of them, that occur in at most ``rare_token_ratio`` times as many records
   overall: words that hardly exist outside this sequence), or one label value covers at
   least ``label_purity`` of its labelled records, ``label_min_lift`` above that value's
   share of the corpus, with a binomial tail below ``alpha`` over the number of sequences
   tested (so chance agreement on small counts is not reported).

The n-grams of one trigger (a six-token trigger has four 3-grams) are merged into one group
when their sets of records overlap by 80% or more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from custody.screening.types import ScreeningConfig

_PRESENCE = 0.9
_SAME_TRIGGER = 0.8


@dataclass(frozen=True)
class TriggerGroup:
    reference: str
    ngrams: frozenset[int]
    rows: NDArray[np.int64]  # every row containing one of its n-grams, duplicates included
    unique_records: int
    tokens: int
    rare_tokens: int
    label_purity: float | None
    label_base_rate: float | None
    score: float


@dataclass(frozen=True)
class Postings:
    """Sorted distinct values, each with the rows (ascending) that hold it."""

    values: NDArray[np.uint32]
    starts: NDArray[np.int64]
    ends: NDArray[np.int64]
    rows: NDArray[np.int64]

    @classmethod
    def build(cls, lengths: NDArray[np.int64], values: NDArray[np.uint32]) -> Postings:
        rows = np.repeat(np.arange(lengths.size, dtype=np.uint64), lengths)
        keys = (values.astype(np.uint64) << np.uint64(32)) | rows
        keys.sort()
        sorted_values = (keys >> np.uint64(32)).astype(np.uint32)
        first = np.ones(keys.size, dtype=bool)
        first[1:] = sorted_values[1:] != sorted_values[:-1]
        starts = np.flatnonzero(first)
        ends = np.append(starts[1:], keys.size)
        row_mask = np.uint64(0xFFFFFFFF)
        return cls(sorted_values[starts], starts, ends, (keys & row_mask).astype(np.int64))

    def counts(self, mask: NDArray[np.bool_]) -> NDArray[np.int64]:
        """Per value, how many of its rows are in ``mask``."""
        if self.starts.size == 0:
            return np.empty(0, dtype=np.int64)
        return np.add.reduceat(mask[self.rows].astype(np.int64), self.starts)


@dataclass(frozen=True)
class _Flagged:
    value: int
    unique_rows: NDArray[np.int64]
    rows: NDArray[np.int64]
    rare_tokens: int
    concentration: float
    label: tuple[float, float] | None


class TriggerSearch:
    """Finds the trigger groups of a table, given which rows are unique records."""

    def __init__(
        self,
        config: ScreeningConfig,
        *,
        ngram_lengths: NDArray[np.int64],
        ngrams: NDArray[np.uint32],
        token_offsets: NDArray[np.int64],
        tokens: NDArray[np.uint32],
        labels: NDArray[np.uint64],
        unique: NDArray[np.bool_],
    ) -> None:
        self.config = config
        self.ngrams = Postings.build(ngram_lengths, ngrams)
        self.token_offsets = token_offsets
        self.tokens = tokens
        self.token_postings = Postings.build(np.diff(token_offsets), tokens)
        self.token_counts = self.token_postings.counts(unique)
        self.labels = labels
        self.unique = unique
        self.total = int(unique.sum())
        labelled = labels[unique & (labels != 0)]
        self.labelled_total = labelled.size
        self.label_values, self.label_counts = np.unique(labelled, return_counts=True)

    def groups(self) -> list[TriggerGroup]:
        config = self.config
        low = max(config.trigger_min_records, math.ceil(config.trigger_min_fraction * self.total))
        high = max(low, math.floor(config.trigger_max_fraction * self.total))
        counts = self.ngrams.counts(self.unique)
        candidates = np.flatnonzero((counts >= low) & (counts <= high))
        flagged = []
        for index in candidates.tolist():
            rows = self.ngrams.rows[self.ngrams.starts[index] : self.ngrams.ends[index]]
            unique_rows = rows[self.unique[rows]]
            rare, concentration = self._rare_tokens(unique_rows)
            label = self._label(unique_rows, low, candidates.size)
            if rare >= config.trigger_min_rare_tokens or label is not None:
                value = int(self.ngrams.values[index])
                flagged.append(_Flagged(value, unique_rows, rows, rare, concentration, label))
        return [self._group(members) for members in _merge(flagged)]

    def _rare_tokens(self, rows: NDArray[np.int64]) -> tuple[int, float]:
        """Tokens shared by ~all ``rows`` that hardly occur elsewhere, and their mean share."""
        offsets, postings = self.token_offsets, self.token_postings
        first, second = (self.tokens[offsets[row] : offsets[row + 1]] for row in rows[:2].tolist())
        shared = np.intersect1d(first, second, assume_unique=True)
        where = np.searchsorted(postings.values, shared)
        size = rows.size
        rare = where[self.token_counts[where] <= self.config.trigger_rare_token_ratio * size]
        shares = []
        for index in rare.tolist():
            holders = postings.rows[postings.starts[index] : postings.ends[index]]
            if np.intersect1d(rows, holders, assume_unique=True).size >= _PRESENCE * size:
                shares.append(size / self.token_counts[index])
        return len(shares), float(np.mean(shares)) if shares else 0.0

    def _label(self, rows: NDArray[np.int64], low: int, tests: int) -> tuple[float, float] | None:
        """(purity, base rate) when one label value dominates the rows beyond chance."""
        labels = self.labels[rows]
        labels = labels[labels != 0]
        if labels.size < low:
            return None
        values, counts = np.unique(labels, return_counts=True)
        top = int(np.argmax(counts))
        purity = counts[top] / labels.size
        base = self.label_counts[np.searchsorted(self.label_values, values[top])] / self.labelled_total
        config = self.config
        if purity < config.trigger_label_purity or purity - base < config.trigger_label_min_lift:
            return None
        if binomial_tail(labels.size, int(counts[top]), base) > config.trigger_label_alpha / tests:
            return None
        return float(purity), float(base)

    def _group(self, members: list[_Flagged]) -> TriggerGroup:
        ngrams = frozenset(member.value for member in members)
        labelled = [member.label for member in members if member.label is not None]
        purity, base = max(labelled) if labelled else (None, None)
        rare = max(member.rare_tokens for member in members)
        concentration = max(member.concentration for member in members)
        rare_score = concentration if rare >= self.config.trigger_min_rare_tokens else 0.0
        return TriggerGroup(
            reference=f"trigger-{min(ngrams):08x}",
            ngrams=ngrams,
            rows=np.unique(np.concatenate([member.rows for member in members])),
            unique_records=int(np.unique(np.concatenate([member.unique_rows for member in members])).size),
            tokens=len(ngrams) + self.config.trigger_tokens - 1,
            rare_tokens=rare,
            label_purity=purity,
            label_base_rate=base,
            score=round(max(purity or 0.0, rare_score), 4),
        )


def _merge(flagged: list[_Flagged]) -> list[list[_Flagged]]:
    """Groups of flagged n-grams whose unique rows overlap by at least 80% (Jaccard)."""
    parent = list(range(len(flagged)))

    def find(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    holders: dict[int, list[int]] = {}
    for index, item in enumerate(flagged):
        for row in item.unique_rows.tolist():
            holders.setdefault(row, []).append(index)
    tested: set[tuple[int, int]] = set()
    for indices in holders.values():
        for position, first in enumerate(indices):
            for second in indices[position + 1 :]:
                if (first, second) in tested or find(first) == find(second):
                    continue
                tested.add((first, second))
                a, b = flagged[first].unique_rows, flagged[second].unique_rows
                common = np.intersect1d(a, b, assume_unique=True).size
                if common >= _SAME_TRIGGER * (a.size + b.size - common):
                    low, high = sorted((find(first), find(second)))
                    parent[high] = low
    groups: dict[int, list[_Flagged]] = {}
    for index, item in enumerate(flagged):
        groups.setdefault(find(index), []).append(item)
    return sorted(groups.values(), key=lambda members: min(member.value for member in members))


def binomial_tail(trials: int, successes: int, probability: float) -> float:
    """P[X >= successes] for X ~ Binomial(trials, probability)."""
    if successes <= 0:
        return 1.0
    if probability <= 0.0:
        return 0.0
    if probability >= 1.0:
        return 1.0
    counts = np.arange(successes, trials + 1, dtype=np.float64)
    log_first = math.lgamma(trials + 1) - math.lgamma(successes + 1) - math.lgamma(trials - successes + 1)
    steps = np.log((trials - counts[:-1]) / (counts[:-1] + 1))
    log_comb = log_first + np.concatenate([[0.0], np.cumsum(steps)])
    terms = log_comb + counts * math.log(probability) + (trials - counts) * math.log1p(-probability)
    peak = float(terms.max())
    return min(1.0, math.exp(peak) * float(np.exp(terms - peak).sum()))
