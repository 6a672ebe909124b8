"""What every Sealroom recognizer shares: candidates, the record view, context scoring.

Our recognizers run directly on the text, without Presidio's per-call
machinery (explanations, deep copies, a lemma lookup per result): on short
records that overhead costs more than the regular expressions themselves.
``custody.recognizers.presidio`` wraps them as Presidio recognizers too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cached_property, lru_cache
from typing import Final, NamedTuple

from custody.language import has_han

# Presidio's LemmaContextAwareEnhancer defaults: a supporting context word
# adds 0.35 and lifts the score to at least 0.4.
CONTEXT_BOOST: Final = 0.35
CONTEXT_FLOOR: Final = 0.4
MAX_SCORE: Final = 1.0
# How far context is looked for: Latin words before and after the match, and
# Han characters before and after it (Chinese has no spaces to count words).
WORDS_BEFORE: Final = 5
WORDS_AFTER: Final = 2
HAN_CHARS_BEFORE: Final = 12
HAN_CHARS_AFTER: Final = 6

_WORD = re.compile(r"[a-z][a-z0-9#'_-]*")
_DIGIT = re.compile(r"\d")


class Candidate(NamedTuple):
    """A detected span before policy filtering and overlap resolution."""

    start: int
    end: int
    entity_type: str
    score: float
    source: str


@lru_cache(maxsize=1)
def english_stop_words() -> frozenset[str]:
    """Return spaCy's English stop words (they do not count as context words, as in Presidio)."""
    from spacy.lang.en.stop_words import STOP_WORDS  # heavy, only inside the engine

    return frozenset(STOP_WORDS)


class TextView:
    """One record with the cheap facts recognizers test before running their patterns."""

    __slots__ = ("__dict__", "english", "has_digit", "has_han", "languages", "text")

    def __init__(
        self, text: str, languages: frozenset[str] = frozenset({"en", "zh"}), *, english: bool = True
    ) -> None:
        self.text = text
        # The policy's languages: which recognizer families are running on this record.
        self.languages = languages
        # Whether the record is treated as English text (not forced to Chinese):
        # the English name, place and organisation stages run only then.
        self.english = english and "en" in languages
        self.has_digit = _DIGIT.search(text) is not None
        self.has_han = has_han(text)

    @cached_property
    def lower(self) -> str:
        return self.text.lower()

    def words_around(self, start: int, end: int) -> list[str]:
        """Return the non-stop words just before and just after a span, lower-cased."""
        stop = english_stop_words()
        before = [w for w in _WORD.findall(self.lower, max(0, start - 80), start) if w not in stop]
        after = [w for w in _WORD.findall(self.lower, end, end + 40) if w not in stop]
        return before[-WORDS_BEFORE:] + after[:WORDS_AFTER]

    def han_window(self, start: int, end: int) -> str:
        """Return the characters just before and after a span (for Chinese context words)."""
        return (
            self.text[max(0, start - HAN_CHARS_BEFORE) : start] + " " + self.text[end : end + HAN_CHARS_AFTER]
        )

    def has_context(self, start: int, end: int, context: Context) -> bool:
        """Say whether a supporting context word surrounds the span."""
        if context.en:
            words = self.words_around(start, end)
            if words and any(c in w for c in context.en for w in words):
                return True
            if context.en_phrases:
                window = self.lower[max(0, start - 80) : end + 40]
                if any(p in window for p in context.en_phrases):
                    return True
        if context.zh and self.has_han:
            window = self.han_window(start, end)
            return any(c in window for c in context.zh)
        return False


class Context:
    """Context words of one recognizer: English words (substring match, as Presidio) and Chinese words."""

    __slots__ = ("en", "en_phrases", "zh")

    def __init__(self, en: Iterable[str] = (), zh: Iterable[str] = ()) -> None:
        words = [w.lower() for w in en]
        self.en: tuple[str, ...] = tuple(w for w in words if " " not in w)
        self.en_phrases: tuple[str, ...] = tuple(w for w in words if " " in w)
        self.zh: tuple[str, ...] = tuple(zh)

    def __bool__(self) -> bool:
        return bool(self.en or self.en_phrases or self.zh)


def boosted(score: float) -> float:
    """Return a score raised by a supporting context word."""
    return min(MAX_SCORE, max(score + CONTEXT_BOOST, CONTEXT_FLOOR))


class Recognizer:
    """A Sealroom recognizer: finds candidates of its entity types in one record.

    ``languages`` says which policy languages enable it (``"*"``: always).
    ``max_score`` is the best score it can give, so the engine skips it when
    that cannot reach the policy's threshold.
    """

    name: str = "Recognizer"
    entities: tuple[str, ...] = ()
    languages: frozenset[str] = frozenset({"*"})
    max_score: float = MAX_SCORE
    context: Context = Context()

    def applies(self, view: TextView) -> bool:
        """Say, cheaply, whether the record could hold a match at all."""
        return True

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        """Return the candidates in the record, context already applied.

        ``min_score`` lets a recognizer skip patterns that cannot reach it.
        """
        raise NotImplementedError

    def scored(
        self, view: TextView, start: int, end: int, score: float, entity: str | None = None
    ) -> Candidate:
        """Build a candidate, boosting its score when a context word supports it."""
        if score < MAX_SCORE and self.context and view.has_context(start, end, self.context):
            score = boosted(score)
        return Candidate(start, end, entity or self.entities[0], score, self.name)
