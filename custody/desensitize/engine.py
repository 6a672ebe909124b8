"""The detection engine: Presidio and spaCy, built once per process, run fast.

Presidio provides the model loading (``NlpEngineProvider`` with the model
named in ``settings.SPACY_MODEL``), the stock recognizers and their
entity mapping; the engine then runs them its own way:

- spaCy runs only the components NER needs (for the small English model,
  ``ner`` alone: it has its own token-to-vector layer), batched through
  ``nlp.pipe``, and only on records with Latin text, with every CJK
  character blanked so the English model never sees Chinese;
- the lemmatizer is not run, so context words are matched against the
  lower-cased surface words (Presidio matches context words as substrings of
  lemmas; a substring of the surface word finds the same words and their
  inflections);
- every pattern recognizer runs directly on the text, once, and only on
  records that could hold a match (digits for numbers, "@" for e-mail ...),
  instead of through Presidio's per-call machinery;
- overlapping candidates resolve to the highest score, then the longest span.
"""

from __future__ import annotations

import bisect
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from django.core.exceptions import ImproperlyConfigured

from custody.desensitize.policy import SUPPORTED_ENTITIES, Policy
from custody.language import cjk_free_segments, latin_view
from custody.recognizers import Candidate, Context, Recognizer, TextView, sealroom_recognizers

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from spacy.language import Language
    from spacy.tokens import Doc

logger = logging.getLogger(__name__)

NER_BATCH_SIZE: Final = 256
PRESIDIO_REGEX_FLAGS: Final = re.DOTALL | re.MULTILINE | re.IGNORECASE
NER_ENTITIES: Final = frozenset({"PERSON", "LOCATION", "NRP", "DATE_TIME"})
# Presidio's spaCy configuration (conf/spacy.yaml): which model labels map to
# which entity, which are dropped, and the score NER results get.
NER_MODEL_CONFIGURATION: Final[dict[str, Any]] = {
    "model_to_presidio_entity_mapping": {
        "PER": "PERSON",
        "PERSON": "PERSON",
        "NORP": "NRP",
        "FAC": "LOCATION",
        "LOC": "LOCATION",
        "LOCATION": "LOCATION",
        "GPE": "LOCATION",
        "ORG": "ORGANIZATION",
        "ORGANIZATION": "ORGANIZATION",
        "DATE": "DATE_TIME",
        "TIME": "DATE_TIME",
    },
    "low_confidence_score_multiplier": 0.4,
    "low_score_entity_names": [],
    "labels_to_ignore": [
        "ORG",
        "ORGANIZATION",
        "CARDINAL",
        "EVENT",
        "LANGUAGE",
        "LAW",
        "MONEY",
        "ORDINAL",
        "PERCENT",
        "PRODUCT",
        "QUANTITY",
        "WORK_OF_ART",
    ],
}
# Presidio's stock recognizers that ours replace (see custody/recognizers).
REPLACED_STOCK: Final = frozenset({"EmailRecognizer", "UrlRecognizer", "PhoneRecognizer", "SpacyRecognizer"})
# When scores and lengths tie, the more specific type wins.
_PRIORITY: Final = {
    "CN_RESIDENT_ID": 0,
    "CN_USCC": 1,
    "CREDIT_CARD": 2,
    "BANK_CARD": 3,
    "EMAIL_ADDRESS": 4,
    "IBAN_CODE": 5,
    "IP_ADDRESS": 6,
    "PHONE_NUMBER": 7,
    "US_SSN": 8,
}
_NHS_CONTEXT: Final = Context(en=("nhs", "national health", "health service", "health authority"))


def _required_pipes(nlp: Language) -> list[str]:
    """Return the pipeline components NER needs: ``ner`` and any embedding layer it listens to."""
    needed = ["ner"]
    for name, component in nlp.pipeline:
        listeners = getattr(component, "listening_components", None) or []
        if "ner" in listeners:
            needed.append(name)
    return needed


def load_spacy_engine(model_name: str) -> SpacyNlpEngine:
    """Load the spaCy model through Presidio's ``NlpEngineProvider``, never downloading it.

    :raises ImproperlyConfigured: when the model is not installed.
    """
    from pathlib import Path

    import spacy  # heavy, loaded here only
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    # Presidio downloads a missing model; on a custody worker that must fail loudly instead.
    if not (spacy.util.is_package(model_name) or Path(model_name).exists()):
        raise ImproperlyConfigured(
            f"spaCy model {model_name!r} (settings.SPACY_MODEL) is not installed; "
            "install its package (see DESIGN.md, Environment notes)"
        )
    provider = NlpEngineProvider(
        nlp_configuration={
            "nlp_engine_name": "spacy",
            "models": [{"lang_code": "en", "model_name": model_name}],
            "ner_model_configuration": NER_MODEL_CONFIGURATION,
        }
    )
    return provider.create_engine()  # type: ignore[return-value]


@contextmanager
def _presidio_quiet() -> Iterator[None]:
    """Silence Presidio's warning for each Spanish, Italian and Polish recognizer it leaves out."""
    presidio_logger = logging.getLogger("presidio-analyzer")
    level = presidio_logger.level
    presidio_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        presidio_logger.setLevel(level)


def _stock_recognizers(nlp_engine: SpacyNlpEngine) -> tuple[list[Recognizer], Any]:
    from presidio_analyzer import PatternRecognizer, RecognizerRegistry

    from custody.recognizers.presidio import StockCall, StockPatterns

    registry = RecognizerRegistry()
    with _presidio_quiet():
        registry.load_predefined_recognizers(languages=["en"], nlp_engine=nlp_engine)
    wrapped: list[Recognizer] = []
    for recognizer in registry.recognizers:
        if type(recognizer).__name__ in REPLACED_STOCK:
            continue
        if not set(recognizer.supported_entities) <= set(SUPPORTED_ENTITIES):
            logger.info("skipping stock recognizer %s: entity types not supported", type(recognizer).__name__)
            continue
        if isinstance(recognizer, PatternRecognizer):
            wrapped.append(StockPatterns(recognizer, registry.global_regex_flags or PRESIDIO_REGEX_FLAGS))
        else:
            wrapped.append(StockCall(recognizer))
    return wrapped, registry


@dataclass
class Engine:
    """Everything heavy, loaded once per process: the NER pipeline and every recognizer."""

    model_name: str
    nlp_engine: SpacyNlpEngine
    nlp: Language
    recognizers: list[Recognizer]
    registry: Any
    ner_mapping: dict[str, str]
    ner_ignore: frozenset[str]
    ner_score: float
    ner_low_score: frozenset[str]
    ner_low_multiplier: float
    batch_size: int = NER_BATCH_SIZE
    _analyzer: AnalyzerEngine | None = field(default=None, repr=False)

    @classmethod
    def build(cls, model_name: str) -> Engine:
        """Load the model and the recognizers (seconds; done once per process)."""
        from custody.recognizers.offline import offline_extractor, patch_presidio_tldextract

        # Presidio logs every recognizer it loads at INFO, in every worker process.
        if logging.getLogger("presidio-analyzer").getEffectiveLevel() < logging.WARNING:
            logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)
        patch_presidio_tldextract()
        offline_extractor()
        nlp_engine = load_spacy_engine(model_name)
        nlp = nlp_engine.nlp["en"]  # type: ignore[index]
        nlp.select_pipes(enable=_required_pipes(nlp))
        stock, registry = _stock_recognizers(nlp_engine)
        config = nlp_engine.ner_model_configuration
        return cls(
            model_name=model_name,
            nlp_engine=nlp_engine,
            nlp=nlp,
            recognizers=sealroom_recognizers() + stock,
            registry=registry,
            ner_mapping=dict(config.model_to_presidio_entity_mapping or {}),
            ner_ignore=frozenset(config.labels_to_ignore or ()),
            ner_score=config.default_score if config.default_score is not None else 0.85,
            ner_low_score=frozenset(config.low_score_entity_names or ()),
            ner_low_multiplier=config.low_confidence_score_multiplier or 0.4,
        )

    # --- detection -------------------------------------------------------------------------

    def detect(
        self, texts: Sequence[str], ner_flags: Sequence[bool], policy: Policy
    ) -> Iterator[list[Candidate]]:
        """Yield, for each text, its resolved candidates under the policy (sorted, disjoint).

        ``ner_flags[i]`` says whether the English NER model may see the Latin
        runs of ``texts[i]``.
        """
        entities = policy.entity_set
        threshold = policy.threshold
        policy_languages = frozenset(policy.languages)
        languages = policy_languages | {"*"}
        recognizers = [
            r
            for r in self.recognizers
            if r.languages & languages and entities.intersection(r.entities) and r.max_score >= threshold
        ]
        use_ner = "en" in policy.languages and bool(entities & NER_ENTITIES)
        docs = self._ner_docs(texts, ner_flags) if use_ner else iter(())
        for text, ner in zip(texts, ner_flags, strict=True):
            view = TextView(text, policy_languages)
            candidates: list[Candidate] = []
            for recognizer in recognizers:
                if recognizer.applies(view):
                    candidates.extend(recognizer.find(view, threshold))
            if use_ner and ner:
                candidates.extend(_plausible_ner(text, self._ner_candidates(text, next(docs)), candidates))
            yield resolve(_without_false_nhs(view, candidates), entities, threshold)

    def _ner_docs(self, texts: Sequence[str], ner_flags: Sequence[bool]) -> Iterator[Doc]:
        ner_texts = (latin_view(text) for text, ner in zip(texts, ner_flags, strict=True) if ner)
        return iter(self.nlp.pipe(ner_texts, batch_size=self.batch_size))

    def _ner_candidates(self, text: str, doc: Doc) -> list[Candidate]:
        mapping, ignore = self.ner_mapping, self.ner_ignore
        found = []
        for ent in doc.ents:
            label = ent.label_
            if label in ignore:
                continue
            entity = mapping.get(label, label)
            if entity in ignore:
                continue
            score = self.ner_score
            if entity in self.ner_low_score:
                score *= self.ner_low_multiplier
            for start, end in cjk_free_segments(text, ent.start_char, ent.end_char):
                found.append(Candidate(start, end, entity, score, "SpacyRecognizer"))
        return found

    # --- Presidio, the ordinary way ------------------------------------------------------

    def presidio_analyzer(self) -> AnalyzerEngine:
        """Return a Presidio ``AnalyzerEngine`` with the stock and Sealroom recognizers (slow path).

        For callers that want Presidio's own API and explanations. It shares
        the NER-only pipeline, so Presidio's lemma-based context enhancement
        finds no lemmas there.
        """
        if self._analyzer is None:
            from presidio_analyzer import AnalyzerEngine, RecognizerRegistry

            from custody.recognizers.presidio import as_presidio

            registry = RecognizerRegistry()
            with _presidio_quiet():
                registry.load_predefined_recognizers(languages=["en"], nlp_engine=self.nlp_engine)
            for recognizer in sealroom_recognizers():
                registry.add_recognizer(as_presidio(recognizer, "en"))
            self._analyzer = AnalyzerEngine(
                registry=registry, nlp_engine=self.nlp_engine, supported_languages=["en"]
            )
        return self._analyzer


def _overlaps(a: Candidate, b: Candidate) -> bool:
    return a.start < b.end and b.start < a.end


def _plausible_ner(text: str, ner: list[Candidate], patterns: list[Candidate]) -> list[Candidate]:
    """Drop NER entities made of digits and punctuation where a pattern recognizer matched.

    The small English model labels phone numbers and card numbers DATE_TIME
    or even PERSON, with the NER score (0.85) beating the pattern's; a number
    is better judged by the recognizer that knows its shape.
    """
    if not ner or not patterns:
        return ner
    kept = []
    for c in ner:
        letters = sum(ch.isalpha() for ch in text[c.start : c.end])
        if letters < 2 and any(_overlaps(c, p) for p in patterns):
            continue
        kept.append(c)
    return kept


def _without_false_nhs(view: TextView, candidates: list[Candidate]) -> list[Candidate]:
    """Drop UK NHS numbers that are phone numbers (a known Presidio conflict).

    Presidio's NHS recognizer takes any ten digits with a valid modulus-11
    check, so one North American phone number in eleven becomes an NHS
    number with score 1.0 and wins over the phone number. Without an NHS
    context word, a span that the phone recognizers also matched is a phone.
    """
    if not any(c.entity_type == "UK_NHS" for c in candidates):
        return candidates
    phones = [c for c in candidates if c.entity_type == "PHONE_NUMBER"]
    kept = []
    for c in candidates:
        if (
            c.entity_type == "UK_NHS"
            and any(_overlaps(c, p) for p in phones)
            and not view.has_context(c.start, c.end, _NHS_CONTEXT)
        ):
            continue
        kept.append(c)
    return kept


def resolve(candidates: list[Candidate], entities: frozenset[str], threshold: float) -> list[Candidate]:
    """Keep the candidates the policy asks for; overlaps go to the highest score, then the longest span."""
    eligible = [c for c in candidates if c.score >= threshold and c.entity_type in entities]
    if len(eligible) < 2:
        return eligible
    eligible.sort(key=lambda c: (-c.score, c.start - c.end, _PRIORITY.get(c.entity_type, 50), c.start))
    starts: list[int] = []
    chosen: list[Candidate] = []
    for c in eligible:
        index = bisect.bisect_left(starts, c.start)
        if index > 0 and chosen[index - 1].end > c.start:
            continue
        if index < len(chosen) and chosen[index].start < c.end:
            continue
        starts.insert(index, c.start)
        chosen.insert(index, c)
    return chosen


_ENGINES: dict[str, Engine] = {}
_ENGINES_LOCK = threading.Lock()


def engine_for(model_name: str) -> Engine:
    """Return this process's engine for the model, building it on first use."""
    engine = _ENGINES.get(model_name)
    if engine is None:
        with _ENGINES_LOCK:
            engine = _ENGINES.get(model_name)
            if engine is None:
                engine = _ENGINES[model_name] = Engine.build(model_name)
    return engine
