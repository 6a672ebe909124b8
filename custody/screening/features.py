"""From a batch of texts to what screening keeps of them: keyed hashes, MinHash signatures,
and the per-record findings (empty, garbage, over-long), whose details are numbers only."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from custody.screening.keys import Keyring
from custody.screening.text import (
    CJK,
    CONTROL,
    DIGIT,
    LETTER,
    OTHER,
    SEPARATOR,
    SPACE,
    SYMBOL,
    Chars,
    distinct_per_row,
    estimated_distinct,
    fold,
    longest_run,
    minhashes,
    ngram_hashes,
    shingle_hashes,
    token_fingerprints,
    token_spans,
)
from custody.screening.types import FindingKind, ScreeningConfig

_MIN_SHINGLES_FOR_REPETITION = 100
_MIN_MOJIBAKE_MARKERS = 2

# UTF-8 read as Latin-1 or CP1252: a lead byte followed by continuation bytes (0x80-0xBF,
# and what CP1252 shows for 0x80-0x9F), or the replacement character.
_CONTINUATION = (
    "\u0080-\u00bf\u20ac\u201a\u0192\u201e\u2026\u2020\u2021\u02c6\u2030\u0160\u2039\u0152"
    "\u017d\u2018\u2019\u201c\u201d\u2022\u2013\u2014\u02dc\u2122\u0161\u203a\u0153\u017e\u0178"
)
_MOJIBAKE = re.compile(
    f"\ufffd|[\u00c2-\u00df][{_CONTINUATION}]|[\u00e0-\u00ef][{_CONTINUATION}]{{2}}"
    f"|[\u00f0-\u00f4][{_CONTINUATION}]{{3}}"
)

Flag = tuple[int, FindingKind, str, float | None]  # (row in the batch, kind, detail, score)


@dataclass(frozen=True)
class Batch:
    """What is kept of a batch of records, row by row. Records without content (empty
    after normalization) have zero hashes and take part in nothing but their own finding."""

    exact: NDArray[np.uint64]  # (records, 2)
    signatures: NDArray[np.uint32]  # (records, num_perm)
    content: NDArray[np.bool_]
    ngram_lengths: NDArray[np.int64]
    ngrams: NDArray[np.uint32]
    token_lengths: NDArray[np.int64]
    tokens: NDArray[np.uint32]
    flags: list[Flag]


class Extractor:
    """Turns texts into ``Batch`` columns under one configuration and key."""

    def __init__(self, config: ScreeningConfig, keyring: Keyring) -> None:
        self.config = config
        self.keyring = keyring
        self.permutations = keyring.permutations(config.num_perm, config.seed)

    def extract(self, texts: Sequence[str]) -> Batch:
        config = self.config
        records = len(texts)
        chars = Chars.build([fold(text) for text in texts])
        norm, norm_rows = chars.normalized()
        norm_lengths = np.bincount(norm_rows, minlength=records)
        content = norm_lengths >= max(config.min_chars, 1)
        hashes, hash_rows = shingle_hashes(norm, norm_rows, config.shingle)
        kept = content[hash_rows]
        hashes, hash_rows = hashes[kept], hash_rows[kept]
        signatures = minhashes(hashes, hash_rows, records, self.permutations)
        exact = np.zeros((records, 2), dtype=np.uint64)
        starts = np.concatenate([[0], np.cumsum(norm_lengths)])
        for row in np.flatnonzero(content).tolist():
            digest = self.keyring.exact(norm[starts[row] : starts[row + 1]].astype("<u4").tobytes())
            exact[row] = np.frombuffer(digest, dtype="<u8")
        ngram_lengths, ngrams, token_lengths, tokens = self._sequences(chars, content)
        shingle_counts = np.bincount(hash_rows, minlength=records)
        flags = _Flagger(config, texts, chars, content, norm_lengths).flags(signatures, shingle_counts)
        return Batch(exact, signatures, content, ngram_lengths, ngrams, token_lengths, tokens, flags)

    def _sequences(
        self, chars: Chars, content: NDArray[np.bool_]
    ) -> tuple[NDArray[np.int64], NDArray[np.uint32], NDArray[np.int64], NDArray[np.uint32]]:
        records, cap = content.size, self.config.trigger_max_hashes_per_record
        starts, ends = token_spans(chars.cls)
        rows = chars.row[starts]
        kept = content[rows]
        starts, ends, rows = starts[kept], ends[kept], rows[kept]
        ids, stored = self.keyring.tokens(token_fingerprints(chars.cps, starts, ends))
        ngrams, ngram_rows = ngram_hashes(ids, rows, self.config.trigger_tokens)
        ngram_lengths, ngrams = distinct_per_row(ngrams, ngram_rows, records, cap)
        token_lengths, tokens = distinct_per_row(stored, rows, records, cap)
        return ngram_lengths, ngrams, token_lengths, tokens

    def sequence_hashes(
        self, text: str
    ) -> tuple[str, NDArray[np.intp], NDArray[np.intp], NDArray[np.uint32]]:
        """For excerpts: the folded text, its token spans, and the n-gram hash starting at each token."""
        folded = fold(text)
        chars = Chars.build([folded])
        starts, ends = token_spans(chars.cls)
        ids, _ = self.keyring.tokens(token_fingerprints(chars.cps, starts, ends))
        ngrams, _ = ngram_hashes(ids, chars.row[starts], self.config.trigger_tokens)
        return folded, starts, ends, ngrams


class _Flagger:
    """The per-record rules: over-long, empty, garbage."""

    def __init__(
        self,
        config: ScreeningConfig,
        texts: Sequence[str],
        chars: Chars,
        content: NDArray[np.bool_],
        norm_lengths: NDArray[np.int64],
    ) -> None:
        self.config = config
        self.texts = texts
        self.chars = chars
        self.content = content
        self.norm_lengths = norm_lengths
        self.counts = chars.class_counts()

    def flags(self, signatures: NDArray[np.uint32], shingle_counts: NDArray[np.int64]) -> list[Flag]:
        config = self.config
        flags: list[Flag] = []
        for row, text in enumerate(self.texts):
            if len(text) > config.max_chars:
                detail = f"{len(text):,} characters (maximum {config.max_chars:,})"
                flags.append((row, FindingKind.OVER_LONG, detail, len(text) / config.max_chars))
        for row in np.flatnonzero(~self.content).tolist():
            detail = (
                f"empty: {self.norm_lengths[row]} characters after normalization (minimum {config.min_chars})"
            )
            flags.append((row, FindingKind.EMPTY, detail, None))
        reasons = self._ratio_reasons()
        for row, reason in self._mojibake_reasons():
            reasons.setdefault(row, []).append(reason)
        for row, reason in self._run_reasons():
            reasons.setdefault(row, []).append(reason)
        for row, reason in self._repetition_reasons(signatures, shingle_counts):
            reasons.setdefault(row, []).append(reason)
        for row in sorted(reasons):
            if self.content[row]:
                flags.append((row, FindingKind.GARBAGE, "garbage: " + "; ".join(reasons[row]), None))
        return flags

    def _ratio_reasons(self) -> dict[int, list[str]]:
        config, counts = self.config, self.counts
        total = self.chars.lengths
        visible = total - counts[:, SPACE]
        letters = counts[:, LETTER] + counts[:, CJK]
        controls = counts[:, CONTROL]
        few_letters = (visible >= max(config.garbage_ratio_min_chars, 1)) & (
            letters < config.garbage_min_letter_ratio * visible
        )
        many_controls = (controls > 0) & (controls > config.garbage_max_control_ratio * total)
        reasons: dict[int, list[str]] = {}
        for row in np.flatnonzero(many_controls).tolist():
            share, limit = controls[row] / total[row], config.garbage_max_control_ratio
            reasons.setdefault(row, []).append(
                f"{_count(controls[row], 'control character')} ({share:.1%}, maximum {limit:.1%})"
            )
        for row in np.flatnonzero(few_letters).tolist():
            most = "digits" if counts[row, DIGIT] > counts[row, SYMBOL] + counts[row, OTHER] else "symbols"
            reasons.setdefault(row, []).append(
                f"{letters[row] / visible[row]:.0%} letters among {visible[row]:,} visible characters "
                f"(minimum {config.garbage_min_letter_ratio:.0%}), mostly {most}"
            )
        return reasons

    def _mojibake_reasons(self) -> list[tuple[int, str]]:
        joined = SEPARATOR.join(self.texts)
        positions = [match.start() for match in _MOJIBAKE.finditer(joined)]
        if len(positions) < _MIN_MOJIBAKE_MARKERS:
            return []
        ends = np.cumsum([len(text) + 1 for text in self.texts])
        markers = np.bincount(np.searchsorted(ends, positions, side="right"), minlength=len(self.texts))
        visible = np.maximum(self.chars.lengths - self.counts[:, SPACE], 1)
        limit = self.config.garbage_max_mojibake_ratio
        flagged = (markers >= _MIN_MOJIBAKE_MARKERS) & (markers > limit * visible)
        found = []
        for row in np.flatnonzero(flagged).tolist():
            count, share = _count(markers[row], "mojibake marker"), markers[row] / visible[row]
            found.append((row, f"{count} ({share:.1%}, maximum {limit:.1%}): an encoding error"))
        return found

    def _run_reasons(self) -> list[tuple[int, str]]:
        chars, limit = self.chars, self.config.garbage_max_char_run
        eligible = (chars.cls == LETTER) | (chars.cls == DIGIT) | (chars.cls == CJK)
        same = (chars.cps[1:] == chars.cps[:-1]) & eligible[1:] & eligible[:-1]
        # A run longer than the limit needs at least ``limit`` repeats in its record.
        candidates = np.bincount(chars.row[1:][same], minlength=chars.lengths.size) >= limit
        starts = np.concatenate([[0], np.cumsum(chars.lengths + 1)])
        found = []
        for row in np.flatnonzero(candidates).tolist():
            cps = chars.cps[starts[row] : starts[row + 1] - 1]
            letters = eligible[starts[row] : starts[row + 1] - 1]
            run = longest_run(
                np.where(letters, cps, np.arange(cps.size, dtype=np.uint32) | np.uint32(1 << 31))
            )
            if run > limit:
                found.append((row, f"one character repeated {run:,} times in a row (maximum {limit})"))
        return found

    def _repetition_reasons(
        self, signatures: NDArray[np.uint32], shingle_counts: NDArray[np.int64]
    ) -> list[tuple[int, str]]:
        config = self.config
        large = np.flatnonzero(shingle_counts >= _MIN_SHINGLES_FOR_REPETITION)
        if large.size == 0:
            return []
        distinct = np.minimum(estimated_distinct(signatures[large]) / shingle_counts[large], 1.0)
        minimum = config.garbage_min_distinct_ratio
        return [
            (
                row,
                f"about {share:.0%} of its {config.shingle}-character pieces are distinct "
                f"(minimum {minimum:.0%}): it mostly repeats itself",
            )
            for row, share in zip(large.tolist(), distinct.tolist(), strict=True)
            if share < minimum
        ]


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}" + ("" if number == 1 else "s")
