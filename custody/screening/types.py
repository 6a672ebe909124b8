"""What screening is configured with and what it reports."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum


class FindingKind(StrEnum):
    EXACT_DUPLICATE = "exact_duplicate"
    NEAR_DUPLICATE = "near_duplicate"
    EMPTY = "empty"
    GARBAGE = "garbage"
    OVER_LONG = "over_long"
    TRIGGER_NGRAM = "trigger_ngram"


# The order findings of one record are listed in, and their code in a state.
KIND_ORDER: tuple[FindingKind, ...] = tuple(FindingKind)


@dataclass(frozen=True)
class Finding:
    """One flagged record. ``detail`` never quotes the record's text (unless asked to, see
    ``Screener.findings``); ``group`` links the records of one duplicate cluster (the id of
    the record kept) or of one trigger sequence (an opaque ``trigger-…`` reference)."""

    record_id: int
    kind: FindingKind
    detail: str
    group: str | None = None
    score: float | None = None


@dataclass(frozen=True)
class ScreeningConfig:
    """Thresholds of the screen. Every field is part of a state's fingerprint: states made
    under different configurations do not merge."""

    # Near duplicates: MinHash over character shingles of the normalized text, MinHashLSH
    # for candidates, each candidate pair verified by estimated Jaccard >= the threshold.
    near_duplicate_threshold: float = 0.8
    num_perm: int = 128
    # Characters, not words: Chinese and Japanese have no spaces to split words on, and
    # character shingles also tolerate typos and changed punctuation in alphabetic text.
    shingle: int = 5
    # (false positive, false negative) weights for choosing LSH bands. Candidates are
    # verified, so a false positive costs one comparison; a false negative is a missed
    # duplicate. With 128 permutations and 0.8 this gives 16 bands of 8 rows.
    lsh_weights: tuple[float, float] = (0.05, 0.95)
    seed: int = 1

    # Length, in characters (code points) of the record as given.
    max_chars: int = 20_000
    # Characters left after normalization; fewer makes the record empty.
    min_chars: int = 1

    # Garbage. The ratio rules apply to records with at least this many visible characters.
    garbage_ratio_min_chars: int = 20
    # Letters (any script, CJK included, with their combining marks) among visible characters.
    garbage_min_letter_ratio: float = 0.25
    # Control characters (not tab or line breaks) among all characters.
    garbage_max_control_ratio: float = 0.01
    # Mojibake markers (U+FFFD, UTF-8 bytes read as Latin-1/CP1252) among visible characters;
    # at least two markers are needed.
    garbage_max_mojibake_ratio: float = 0.01
    # Longest run of one repeated letter, digit or CJK character.
    garbage_max_char_run: int = 40
    # Distinct shingles among all shingles (estimated from the MinHash), for records of at
    # least 100 shingles: below this the record mostly repeats itself.
    garbage_min_distinct_ratio: float = 0.2

    # Trigger sequences: token n-grams of this length (tokens are words, single CJK
    # characters and single symbols); longer triggers are found through their n-grams.
    trigger_tokens: int = 3
    # Frequency band, in unique records (duplicates count once): at least
    # max(trigger_min_records, trigger_min_fraction * N), at most trigger_max_fraction * N.
    trigger_min_records: int = 5
    trigger_min_fraction: float = 0.001
    trigger_max_fraction: float = 0.05
    # Rare-token rule: the sequence's records share at least this many tokens that occur
    # in at most trigger_rare_token_ratio times as many records as the sequence does.
    trigger_min_rare_tokens: int = 2
    trigger_rare_token_ratio: float = 2.0
    # Label rule: this share of the sequence's labelled records carry one label value,
    # at least trigger_label_min_lift above that value's share in the corpus, and the
    # binomial tail is below trigger_label_alpha / number of sequences tested.
    trigger_label_purity: float = 0.9
    trigger_label_min_lift: float = 0.25
    trigger_label_alpha: float = 0.01
    # Per record, at most this many distinct n-gram and token hashes are kept (the smallest
    # hashes, so the choice is deterministic); only records over ~6,000 characters hit it.
    trigger_max_hashes_per_record: int = 2048

    def __post_init__(self) -> None:
        checks = {
            "near_duplicate_threshold": 0.0 < self.near_duplicate_threshold <= 1.0,
            "num_perm": 16 <= self.num_perm <= 1024,
            "shingle": 1 <= self.shingle <= 32,
            "lsh_weights": len(self.lsh_weights) == 2 and all(0.0 <= w <= 1.0 for w in self.lsh_weights),
            "max_chars": self.max_chars >= max(self.min_chars, 1),
            "min_chars": self.min_chars >= 0,
            "garbage_ratio_min_chars": self.garbage_ratio_min_chars >= 0,
            "garbage_min_letter_ratio": 0.0 <= self.garbage_min_letter_ratio <= 1.0,
            "garbage_max_control_ratio": 0.0 <= self.garbage_max_control_ratio <= 1.0,
            "garbage_max_mojibake_ratio": 0.0 <= self.garbage_max_mojibake_ratio <= 1.0,
            "garbage_max_char_run": self.garbage_max_char_run >= 2,
            "garbage_min_distinct_ratio": 0.0 <= self.garbage_min_distinct_ratio <= 1.0,
            "trigger_tokens": 1 <= self.trigger_tokens <= 16,
            "trigger_min_records": self.trigger_min_records >= 2,
            "trigger_min_fraction": 0.0 <= self.trigger_min_fraction <= 1.0,
            "trigger_max_fraction": self.trigger_min_fraction <= self.trigger_max_fraction <= 1.0,
            "trigger_min_rare_tokens": self.trigger_min_rare_tokens >= 1,
            "trigger_rare_token_ratio": self.trigger_rare_token_ratio >= 1.0,
            "trigger_label_purity": 0.5 < self.trigger_label_purity <= 1.0,
            "trigger_label_min_lift": 0.0 <= self.trigger_label_min_lift <= 1.0,
            "trigger_label_alpha": 0.0 < self.trigger_label_alpha <= 1.0,
            "trigger_max_hashes_per_record": self.trigger_max_hashes_per_record >= 16,
        }
        wrong = [name for name, ok in checks.items() if not ok]
        if wrong:
            raise ValueError(f"ScreeningConfig: out of range: {', '.join(wrong)}")

    def fingerprint(self) -> str:
        """A stable text naming every setting, stored in states to refuse mixing configurations."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


DEFAULT_CONFIG = ScreeningConfig()
