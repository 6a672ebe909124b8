"""The strict detector: a second, slower, higher-recall look at text already desensitized.

It estimates what desensitization left behind (the report's residual risk) and
checks a listing's preview records before they are approved. It errs towards
finding too much, and is never used to desensitize:

- Presidio's ``AnalyzerEngine`` with every stock recognizer, at a low score
  threshold (``STRICT_THRESHOLD``), on the Latin view of each text (CJK
  blanked, offsets kept);
- spaCy NER entities of every person, place and organisation label
  (``PERSON``, ``GPE``, ``LOC``, ``FAC``, ``ORG``), organisations included,
  which the desensitizer's Presidio configuration ignores;
- Sealroom's own recognizers (Chinese identifiers and names included) on the
  whole text, at the same low threshold;
- for Han text, jieba's part-of-speech tags ``nr``/``ns``/``nt`` (names,
  places, organisations) when jieba is installed.

What the operators wrote does not count: ``<TYPE>`` tags, ``<TYPE_xxxxxxxx>``
pseudonyms and runs of mask characters (with the characters a mask keeps
visible) are recognised by shape, and callers
pass the offsets of the replaced spans (surrogates are realistic fakes, so
only their offsets tell them apart) as ``ignore``. A hit that covers
placeholder text counts only if at least two letters or digits of it lie
outside every placeholder.

Everything heavy is built once per process, on first use.
"""

from __future__ import annotations

import importlib
import logging
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from custody.desensitize.core import Span
from custody.language import has_han, latin_view

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine

    from custody.recognizers import Recognizer

logger = logging.getLogger(__name__)

STRICT_THRESHOLD: Final = 0.3
NER_BATCH_SIZE: Final = 64
# What the strict detector leaves out: dates and nationalities alone identify
# nobody, and their false positives ("today", "English") would drown the estimate.
IGNORED_ENTITIES: Final = frozenset({"DATE_TIME", "NRP"})
# spaCy labels of people, places and organisations (every English model's scheme).
_NER_LABELS: Final = {
    "PERSON": "PERSON",
    "PER": "PERSON",
    "GPE": "LOCATION",
    "LOC": "LOCATION",
    "LOCATION": "LOCATION",
    "FAC": "LOCATION",
    "ORG": "ORGANIZATION",
    "ORGANIZATION": "ORGANIZATION",
}
# Every other label of the OntoNotes scheme (dates, numbers, nationalities ...).
_NER_IGNORED: Final = (
    *("CARDINAL", "DATE", "EVENT", "LANGUAGE", "LAW", "MONEY", "NORP"),
    *("ORDINAL", "PERCENT", "PRODUCT", "QUANTITY", "TIME", "WORK_OF_ART", "MISC"),
)
# jieba's tags: nr (and its variants) a person, ns a place, nt an organisation.
_HAN_TAGS: Final = {"nr": "PERSON", "nrfg": "PERSON", "nrt": "PERSON", "ns": "LOCATION", "nt": "ORGANIZATION"}
_HAN_SCORE: Final = 0.5
# Placeholders the operators write: tags and pseudonyms, and masks with the
# characters a policy keeps visible after them ("************4242").
_PLACEHOLDER: Final = re.compile(r"<[A-Z][A-Z0-9_]*>|([*#•xX])\1{2,}[0-9A-Za-z]{0,16}")
# A phone number someone can be reached on has six digits or more in every numbering plan;
# python-phonenumbers (Presidio's phone recognizer, 0.4) reads some four-digit numbers as short
# numbers of a region ("line 1640"), which made the residual-risk estimate of a corpus of
# numbered lines depend on which lines the sample drew (fifth round).
MIN_PHONE_DIGITS: Final = 6
_MEANINGFUL: Final = re.compile(r"\w")
_MIN_MEANINGFUL: Final = 2


@dataclass
class StrictDetector:
    """The heavy parts, loaded once per process."""

    analyzer: AnalyzerEngine
    batch: BatchAnalyzerEngine
    recognizers: list[Recognizer]
    entities: list[str]
    posseg: Any  # jieba.posseg, or None where jieba is not installed

    @classmethod
    def build(cls, model_name: str) -> StrictDetector:
        """Load spaCy, Presidio's recognizers, ours, and jieba if present (seconds)."""
        import spacy
        from presidio_analyzer import AnalyzerEngine, BatchAnalyzerEngine, RecognizerRegistry
        from presidio_analyzer.nlp_engine import NlpEngineProvider

        from custody.recognizers import sealroom_recognizers
        from custody.recognizers.offline import offline_extractor, patch_presidio_tldextract

        patch_presidio_tldextract()
        offline_extractor()
        # Presidio downloads a missing model; a custody worker must fail loudly instead.
        if not (spacy.util.is_package(model_name) or Path(model_name).exists()):
            raise ImproperlyConfigured(f"spaCy model {model_name!r} (settings.SPACY_MODEL) is not installed")
        provider = NlpEngineProvider(
            nlp_configuration={
                "nlp_engine_name": "spacy",
                "models": [{"lang_code": "en", "model_name": model_name}],
                "ner_model_configuration": {
                    "model_to_presidio_entity_mapping": dict(_NER_LABELS),
                    "low_confidence_score_multiplier": 1.0,
                    "low_score_entity_names": [],
                    "labels_to_ignore": list(_NER_IGNORED),
                },
            }
        )
        nlp_engine = provider.create_engine()
        presidio_logger = logging.getLogger("presidio-analyzer")
        level = presidio_logger.level
        presidio_logger.setLevel(logging.ERROR)
        try:
            registry = RecognizerRegistry()
            registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp_engine)
        finally:
            presidio_logger.setLevel(level)
        analyzer = AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])
        supported = set(analyzer.get_supported_entities(language="en"))
        return cls(
            analyzer=analyzer,
            batch=BatchAnalyzerEngine(analyzer_engine=analyzer),
            recognizers=sealroom_recognizers(),
            entities=sorted(supported - IGNORED_ENTITIES),
            posseg=_jieba_posseg(),
        )

    def scan(self, texts: Sequence[str]) -> list[list[tuple[int, int, str, float]]]:
        """Return every hit in each text (overlapping hits included)."""
        latin = [latin_view(t) for t in texts]
        found: list[list[tuple[int, int, str, float]]] = [[] for _ in texts]
        with_latin = [i for i, t in enumerate(latin) if any(c.isalnum() for c in t)]
        results = self.batch.analyze_iterator(
            [latin[i] for i in with_latin],
            language="en",
            batch_size=NER_BATCH_SIZE,
            score_threshold=STRICT_THRESHOLD,
            entities=self.entities,
        )
        for i, hits in zip(with_latin, results, strict=True):
            found[i].extend((h.start, h.end, h.entity_type, h.score) for h in hits)
        for i, text in enumerate(texts):
            found[i].extend(self._ours(text))
            if self.posseg is not None and has_han(text):
                found[i].extend(self._han(text))
        return found

    def _ours(self, text: str) -> Iterable[tuple[int, int, str, float]]:
        from custody.recognizers import TextView

        view = TextView(text)
        for recognizer in self.recognizers:
            if recognizer.applies(view):
                for c in recognizer.find(view, STRICT_THRESHOLD):
                    if c.score >= STRICT_THRESHOLD:
                        yield (c.start, c.end, c.entity_type, c.score)

    def _han(self, text: str) -> Iterable[tuple[int, int, str, float]]:
        offset = 0
        for pair in self.posseg.cut(text, HMM=True):
            word, flag = pair.word, pair.flag
            entity = _HAN_TAGS.get(flag)
            if entity is not None and len(word.strip()) >= 2 and has_han(word):
                yield (offset, offset + len(word), entity, _HAN_SCORE)
            offset += len(word)


def _jieba_posseg() -> Any:
    # Imported by name: jieba is optional, and ships no type hints.
    try:
        jieba = importlib.import_module("jieba")
        posseg = importlib.import_module("jieba.posseg")
    except ImportError:
        logger.info("jieba is not installed: the strict detector runs without Chinese segmentation")
        return None
    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return posseg


_DETECTOR: StrictDetector | None = None
_LOCK = threading.Lock()


def strict_detector() -> StrictDetector:
    """Return this process's strict detector, building it on first use."""
    global _DETECTOR
    if _DETECTOR is None:
        with _LOCK:
            if _DETECTOR is None:
                _DETECTOR = StrictDetector.build(settings.SPACY_MODEL)
    return _DETECTOR


def _placeholders(text: str, ignore: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    regions = [(m.start(), m.end()) for m in _PLACEHOLDER.finditer(text)]
    regions.extend((s, e) for s, e in ignore if 0 <= s < e <= len(text))
    return sorted(regions)


def _outside(text: str, start: int, end: int, regions: list[tuple[int, int]]) -> tuple[int, int] | None:
    """Return the longest piece of ``[start, end)`` outside every region, if it holds 2+ letters/digits."""
    pieces = []
    cursor = start
    for s, e in regions:
        if e <= cursor or s >= end:
            continue
        if s > cursor:
            pieces.append((cursor, s))
        cursor = max(cursor, e)
    if cursor < end:
        pieces.append((cursor, end))
    best: tuple[int, int] | None = None
    best_count = 0
    for s, e in pieces:
        count = len(_MEANINGFUL.findall(text, s, e))
        if count >= _MIN_MEANINGFUL and count > best_count:
            best, best_count = (s, e), count
    return best


def _disjoint(hits: list[Span]) -> list[Span]:
    """Keep the highest-scoring, then longest, of overlapping hits; sorted by start."""
    chosen: list[Span] = []
    for hit in sorted(hits, key=lambda h: (-h.score, h.start - h.end, h.start)):
        if all(hit.end <= c.start or c.end <= hit.start for c in chosen):
            chosen.append(hit)
    return sorted(chosen, key=lambda h: h.start)


def _digits(text: str, start: int, end: int) -> int:
    return sum(c.isdigit() for c in text[start:end])


def strict_scan(
    texts: Sequence[str],
    *,
    ignore: Sequence[Sequence[tuple[int, int]]] | None = None,
    entities: Iterable[str] | None = None,
) -> list[list[Span]]:
    """Return, for each text, the entities the strict detector finds (sorted, disjoint).

    ``ignore[i]`` lists ``(start, end)`` offsets in ``texts[i]`` that the
    operators wrote (their replacements): hits inside them do not count.
    ``entities`` limits the types reported (default: every type but ``IGNORED_ENTITIES``).
    """
    if ignore is not None and len(ignore) != len(texts):
        raise ValueError("ignore must hold one list of offsets per text")
    wanted = None if entities is None else frozenset(entities) - IGNORED_ENTITIES
    raw = strict_detector().scan(texts) if texts else []
    out: list[list[Span]] = []
    for i, (text, hits) in enumerate(zip(texts, raw, strict=True)):
        regions = _placeholders(text, ignore[i] if ignore is not None else ())
        kept = []
        for start, end, entity_type, score in hits:
            if entity_type in IGNORED_ENTITIES or (wanted is not None and entity_type not in wanted):
                continue
            if entity_type == "PHONE_NUMBER" and _digits(text, start, end) < MIN_PHONE_DIGITS:
                continue
            piece = _outside(text, start, end, regions)
            if piece is not None:
                kept.append(Span(piece[0], piece[1], entity_type, round(float(score), 4)))
        out.append(_disjoint(kept))
    return out
