"""Bridges to Presidio, both ways.

- ``StockPatterns`` runs one of Presidio's stock pattern recognizers (US SSN,
  IBAN, dates, IP addresses ...) the way Presidio would (same patterns,
  same validation and invalidation, same context words) but without its
  per-call overhead, with ASCII word boundaries so that identifiers written
  against Chinese text are found, and only on records that could match.
- ``StockCall`` runs any other Presidio recognizer through its own ``analyze``.
- ``as_presidio`` wraps a Sealroom recognizer as a Presidio ``EntityRecognizer``,
  so our recognizers also work inside a Presidio ``AnalyzerEngine``.

Imported only by the engine, after Presidio itself.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

from presidio_analyzer import EntityRecognizer, LocalRecognizer, PatternRecognizer, RecognizerResult

from custody.recognizers.base import Candidate, Context, Recognizer, TextView, boosted

if TYPE_CHECKING:
    from presidio_analyzer.nlp_engine import NlpArtifacts

# What a record must contain for a stock recognizer to have a chance: most
# need a digit; the rest need their separator. Recognizers not listed run on
# every record.
_NEEDS_DIGIT: Final = re.compile(r"\d")
TRIGGERS: Final[dict[str, re.Pattern[str]]] = {
    "CreditCardRecognizer": _NEEDS_DIGIT,
    "UsBankRecognizer": _NEEDS_DIGIT,
    # Every alternative of its patterns puts a letter against a digit, or is a long digit run.
    "UsLicenseRecognizer": re.compile(r"[A-Za-z\]]\d|\d[A-Za-z]|\d{6}"),
    "UsItinRecognizer": _NEEDS_DIGIT,
    "UsPassportRecognizer": _NEEDS_DIGIT,
    "UsSsnRecognizer": _NEEDS_DIGIT,
    "NhsRecognizer": _NEEDS_DIGIT,
    "CryptoRecognizer": _NEEDS_DIGIT,
    # Every date pattern has a separator (- / .) against a digit.
    "DateRecognizer": re.compile(r"\d[\-/.]|[\-/.]\d"),
    "IbanRecognizer": _NEEDS_DIGIT,
    "MedicalLicenseRecognizer": re.compile(r"[A-Za-z]\d{7}"),
    "IpRecognizer": re.compile(r"\d\.\d|[0-9A-Fa-f]:[0-9A-Fa-f:]|::"),
    "MacAddressRecognizer": re.compile(r"[0-9A-Fa-f]{2}[:\-.][0-9A-Fa-f]{2}"),
    "UuidRecognizer": re.compile(r"[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}"),
}


def _compile(pattern: str, flags: int) -> Any:
    """Compile with the standard library when it can (faster here), else with ``regex`` as Presidio does."""
    try:
        return re.compile(pattern, flags | re.ASCII)
    except re.error:
        import regex  # type: ignore[import-untyped]

        return regex.compile(pattern, flags | regex.ASCII)


def _overrides(recognizer: EntityRecognizer, method: str) -> bool:
    return getattr(type(recognizer), method) is not getattr(PatternRecognizer, method)


class StockPatterns(Recognizer):
    """One Presidio pattern recognizer, run directly."""

    def __init__(self, recognizer: PatternRecognizer, flags: int) -> None:
        self.recognizer = recognizer
        self.name = recognizer.name  # type: ignore[has-type]
        self.entities = (recognizer.supported_entities[0],)
        self.languages = frozenset({"en"})
        self.context = Context(en=recognizer.context or ())
        self._validates = _overrides(recognizer, "validate_result")
        self._invalidates = _overrides(recognizer, "invalidate_result")
        self._trigger = TRIGGERS.get(type(recognizer).__name__)
        patterns = recognizer.patterns  # type: ignore[has-type]
        self._patterns = [(_compile(p.regex, flags), p.score) for p in patterns]
        # The best a pattern can reach: validated (1.0) or boosted by context.
        best_pattern = max((p.score for p in patterns), default=0.0)
        self.max_score = 1.0 if self._validates else (boosted(best_pattern) if self.context else best_pattern)

    def applies(self, view: TextView) -> bool:
        return self._trigger is None or self._trigger.search(view.text) is not None

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        text = view.text
        found = []
        for compiled, base in self._patterns:
            if not self._validates and (boosted(base) if self.context else base) < min_score:
                continue
            for m in compiled.finditer(text):
                start, end = m.span()
                if start == end:
                    continue
                score = base
                matched = text[start:end]
                if self._validates:
                    verdict = self.recognizer.validate_result(matched)
                    if verdict is not None:
                        score = 1.0 if verdict else 0.0
                if self._invalidates and self.recognizer.invalidate_result(matched):
                    score = 0.0
                if score > 0.0:
                    found.append(self.scored(view, start, end, score))
        return found


class StockCall(Recognizer):
    """Any other Presidio recognizer, through its own ``analyze`` (slower; used for unknown ones)."""

    def __init__(self, recognizer: EntityRecognizer) -> None:
        self.recognizer = recognizer
        self.name = recognizer.name  # type: ignore[has-type]
        self.entities = tuple(recognizer.supported_entities)
        self.languages = frozenset({"en"})
        self.context = Context(en=recognizer.context or ())

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        results = self.recognizer.analyze(view.text, list(self.entities), None)  # type: ignore[arg-type]
        return [self.scored(view, r.start, r.end, r.score, r.entity_type) for r in results if r.score > 0]


class SealroomPresidioRecognizer(LocalRecognizer):
    """A Sealroom recognizer seen from Presidio: context is applied inside, like ``enhance_using_context``."""

    def __init__(self, recognizer: Recognizer, language: str) -> None:
        self.sealroom = recognizer
        super().__init__(
            supported_entities=list(recognizer.entities),
            supported_language=language,
            name=recognizer.name,
            context=[],
        )

    def load(self) -> None:
        """Nothing to load: the patterns are compiled at import."""

    def analyze(
        self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None
    ) -> list[RecognizerResult]:
        """Return Presidio results for the entities asked for."""
        view = TextView(text)
        if not self.sealroom.applies(view):
            return []
        return [
            RecognizerResult(
                entity_type=c.entity_type,
                start=c.start,
                end=c.end,
                score=c.score,
                recognition_metadata={
                    RecognizerResult.RECOGNIZER_NAME_KEY: self.sealroom.name,
                    RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
                },
            )
            for c in self.sealroom.find(view)
            if c.entity_type in entities
        ]


def as_presidio(recognizer: Recognizer, language: str) -> SealroomPresidioRecognizer:
    """Wrap a Sealroom recognizer for a Presidio ``RecognizerRegistry``."""
    return SealroomPresidioRecognizer(recognizer, language)
