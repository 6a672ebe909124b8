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
from custody.language import cjk_free_segments, has_letter, latin_view
from custody.recognizers import Candidate, Context, Recognizer, TextView, sealroom_recognizers
from custody.recognizers.base import english_stop_words
from custody.recognizers.en_dates import WordDateRecognizer
from custody.recognizers.en_model import accepted, tag_segments
from custody.recognizers.en_names import is_title
from custody.recognizers.fields import is_field_name
from custody.recognizers.generic import scheme_urls

if TYPE_CHECKING:
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from spacy.language import Language
    from spacy.tokens import Doc

logger = logging.getLogger(__name__)

NER_BATCH_SIZE: Final = 256
PRESIDIO_REGEX_FLAGS: Final = re.DOTALL | re.MULTILINE | re.IGNORECASE
NER_ENTITIES: Final = frozenset({"PERSON", "LOCATION", "ORGANIZATION", "NRP", "DATE_TIME"})
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
    # Organisations are reported (Presidio ignores them): a company or a
    # team named next to a person narrows down who it is.
    "labels_to_ignore": [
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
# What spaCy's NER still reports when the English tagger runs (the tagger reads the names).
SPACY_TYPES_WITH_TAGGER: Final = frozenset({"DATE_TIME", "NRP"})
TAGGER_ENTITIES: Final = frozenset({"PERSON", "LOCATION", "ORGANIZATION"})
# Replaces spaCy's dates when the English tagger replaces its names (``detect``).
WORD_DATES: Final = WordDateRecognizer()
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
    "PASSPORT": 9,
    "ID_NUMBER": 10,
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
    # The English tagger (custody/recognizers/en_model.py) when settings.DESENSITIZE_EN_MODEL is on.
    en_tagger: Any = None
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
            en_tagger=load_en_tagger(),
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
        tagger = self.en_tagger if use_ner else None
        # The tagger reads names, places and organisations (it replaces spaCy's: chosen on the
        # train split, docs/desensitization.md); dates written in words are read by a grammar
        # (``en_dates.WordDateRecognizer``), so with the tagger spaCy runs only where the policy
        # names NRP, and its sentences are not even cut otherwise.
        read_spacy = use_ner and (tagger is None or "NRP" in entities)
        segments = ner_segments(texts, ner_flags) if read_spacy else []
        spacy_types: frozenset[str] | None = None
        if tagger is not None:
            spacy_types = SPACY_TYPES_WITH_TAGGER
            if "DATE_TIME" in entities and threshold <= WORD_DATES.max_score:
                recognizers.append(WORD_DATES)
            if not entities & TAGGER_ENTITIES:
                tagger = None
        docs = iter(self.nlp.pipe((seg for _, _, seg in segments), batch_size=self.batch_size))
        # The English tagger reads every English record whole, in one batch; its spans fill what the
        # other stages left (``fill_gaps``).
        tagged: dict[int, list[Candidate]] = {}
        if tagger is not None:
            whole = [(i, 0, read) for i, t in enumerate(texts) if ner_flags[i] and (read := tagger_view(t))]
            tagged = tag_segments(tagger, texts, whole, self.ner_score)
        cursor = 0
        for index, text in enumerate(texts):
            view = TextView(text, policy_languages, english=ner_flags[index])
            candidates: list[Candidate] = []
            for recognizer in recognizers:
                if recognizer.applies(view):
                    candidates.extend(recognizer.find(view, threshold))
            ner: list[Candidate] = []
            while cursor < len(segments) and segments[cursor][0] == index:
                ner.extend(self._ner_candidates(text, next(docs), segments[cursor][1], spacy_types))
                cursor += 1
            if ner:
                candidates.extend(_plausible_ner(text, ner, candidates, threshold))
            chosen = resolve(_joined_phones(_without_false_nhs(view, candidates)), entities, threshold)
            if index in tagged:
                chosen = widen_organizations(
                    text, fill_gaps(chosen, tagged[index], entities, threshold, text)
                )
            yield merge_adjacent_locations(text, whole_tokens(text, chosen))

    def _ner_candidates(
        self, text: str, doc: Doc, offset: int, types: frozenset[str] | None = None
    ) -> list[Candidate]:
        """spaCy's entities in ``doc`` (a segment at ``offset``), of ``types`` only when given."""
        mapping, ignore = self.ner_mapping, self.ner_ignore
        found = []
        for ent in doc.ents:
            label = ent.label_
            if label in ignore:
                continue
            entity = mapping.get(label, label)
            if entity in ignore or (types is not None and entity not in types):
                continue
            score = self.ner_score
            if entity in self.ner_low_score:
                score *= self.ner_low_multiplier
            for start, end in cjk_free_segments(text, offset + ent.start_char, offset + ent.end_char):
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


# The cascade's gate in front of the model: a sentence goes to NER only if it
# holds a word with a capital letter that could start a name. For a writer
# who capitalises, NER entities without a capital are dropped anyway
# (``_plausible_ner``), so a sentence without one can only yield nothing;
# lowercase names come from the gazetteers. A writer who does not capitalise
# (``writes_in_lowercase``) has the whole record read by the model. Not
# candidates: "I" and its contractions, a stop word opening the sentence
# ("The", "It"), and capitals inside URLs, e-mail addresses, handles and
# hashtags, which exact stages handle.
_SENTENCE = re.compile(r"[^\n.!?]*(?:[.!?]+|\n|$)")
_NOT_NAME_CONTEXT = re.compile(r"\S*(?:://|www\.|@|#)\S*")
_CAPITAL_WORD = re.compile(r"(?<![\w'’])[A-Z][\w'’\-]*")
_PRONOUN_I = frozenset({"I", "I'm", "I'll", "I've", "I'd", "I’m", "I’ll", "I’ve", "I’d"})


def writes_in_lowercase(text: str) -> bool:
    """Say whether the writer does not capitalise: most sentences start with a lowercase letter.

    Such a writer does not capitalise names either, so the model sees all of
    the text and its lowercase guesses stand.
    """
    lower = upper = 0
    for m in _SENTENCE_START.finditer(text):
        if m.group(1).islower():
            lower += 1
        else:
            upper += 1
    return lower > upper


_SENTENCE_START = re.compile(r"(?:^|[.!?\n])[\s\"'(“‘*-]*([A-Za-z])")


def _could_name(sentence: str) -> bool:
    """Say whether a sentence holds a capitalised word that could be (part of) a name."""
    if not any(ch.isupper() for ch in sentence):
        return False
    if "@" in sentence or "#" in sentence or "/" in sentence:
        sentence = _NOT_NAME_CONTEXT.sub(" ", sentence)
    stop = english_stop_words()
    first = True
    for m in _CAPITAL_WORD.finditer(sentence):
        word = m.group()
        opening = first and not sentence[: m.start()].strip(" \t\"'(“‘-*")
        first = False
        if word in _PRONOUN_I or (opening and word.lower() in stop):
            continue
        return True
    return False


def ner_segments(texts: Sequence[str], ner_flags: Sequence[bool]) -> list[tuple[int, int, str]]:
    """Return ``(record index, offset, text)`` for each sentence the NER model should see.

    Sentences are cut at ``.!?`` and line breaks, CJK characters blanked
    (``latin_view``); consecutive sentences that qualify are passed as one
    piece, so the model keeps their context.
    """
    segments: list[tuple[int, int, str]] = []
    for index, (text, flag) in enumerate(zip(texts, ner_flags, strict=True)):
        if not flag:
            continue
        latin = latin_view(text)
        if writes_in_lowercase(latin):
            segments.append((index, 0, latin))
            continue
        start = end = -1
        for m in _SENTENCE.finditer(latin):
            if m.start() == m.end():
                continue
            if _could_name(m.group()):
                if start < 0:
                    start = m.start()
                end = m.end()
            elif start >= 0:
                segments.append((index, start, latin[start:end]))
                start = -1
        if start >= 0:
            segments.append((index, start, latin[start:end]))
    return segments


def _overlaps(a: Candidate, b: Candidate) -> bool:
    return a.start < b.end and b.start < a.end


def _plausible_ner(
    text: str, ner: list[Candidate], patterns: list[Candidate], threshold: float = 0.0
) -> list[Candidate]:
    """Drop the NER guesses that are not personal data, or that a pattern recognizer knows better.

    - A number (fewer than two letters) where a pattern recognizer matched:
      the small English model labels phone and card numbers DATE_TIME or even
      PERSON, with the NER score (0.85) beating the pattern's.
    - A date or time without a digit ("today", "this morning", "Sunday",
      "July"), a duration or an age ("3 days", "64 years old"), a bare
      number: none of them dates anything or anyone.
    - A name, place or organisation inside a hashtag, a URL or an e-mail
      address; one written without a capital letter by a writer who uses
      capitals (the model's guesses there are noise; lowercase names come
      from the gazetteers); one in capitals inside text written mostly in
      capitals.
    - The part of a guess that runs over a number a pattern recognizer found
      (phone, card, identifier): "Ring +420 728 778" read as an organisation,
      "+44 28 9018 4700 later" as a date. The model's higher score would
      otherwise win the overlap and leave the rest of the number in clear;
      what is left beside the number stays if it still reads as a name or a date.
    """
    if not ner:
        return ner
    # In text written mostly in capitals, capitals say nothing about names.
    letters_upper = sum(ch.isupper() for ch in text)
    shouting = letters_upper > 12 and letters_upper * 2 > sum(ch.isalpha() for ch in text)
    capitalises = not writes_in_lowercase(text)
    kept = []
    for c in ner:
        value = text[c.start : c.end]
        if c.entity_type == "DATE_TIME":
            if not _DATE_HAS_DIGIT.search(value) or _NOT_A_DATE.fullmatch(value.strip()):
                continue
        elif c.entity_type in _NAME_TYPES:
            if _in_tag(text, c.start) or (capitalises and not any(ch.isupper() for ch in value)):
                continue
            if shouting and value.isupper():
                continue
            if value.lower() in _NOT_NAMES:
                continue
        if patterns:
            letters = sum(ch.isalpha() for ch in value)
            if letters < 2 and any(_overlaps(c, p) for p in patterns):
                continue
            addresses = [p for p in patterns if p.entity_type in _ADDRESS_TYPES and _overlaps(c, p)]
            if addresses:
                if c.entity_type in _NAME_TYPES:
                    continue
                # "Sept 18 http://is.gd/x": keep the date before the link, not the link's start.
                clipped = _clipped_before(text, c, min(p.start for p in addresses))
                if clipped is None:
                    continue
                c = clipped
            numbers = [
                p
                for p in patterns
                if p.entity_type not in _NOT_NUMBER_TYPES and p.score >= threshold and _overlaps(c, p)
            ]
            if numbers:
                beside = _beside_numbers(text, c, numbers)
                if beside is None:
                    continue
                c = beside
        kept.append(c)
    return kept


def _clipped_before(text: str, c: Candidate, limit: int) -> Candidate | None:
    """Return the candidate cut to end before ``limit`` (white space dropped), or None if no date is left."""
    end = min(c.end, limit)
    while end > c.start and text[end - 1] in " \t\n-,(":
        end -= 1
    value = text[c.start : end]
    if not _DATE_HAS_DIGIT.search(value) or _NOT_A_DATE.fullmatch(value.strip()):
        return None
    return c._replace(end=end)


_TRIM: Final = " \t\n-,:;()[]/+.#"


def _beside_numbers(text: str, c: Candidate, numbers: list[Candidate]) -> Candidate | None:
    """Return the part of a model guess before (or else after) the numbers it overlaps, or None."""
    pieces = ((c.start, min(p.start for p in numbers)), (max(p.end for p in numbers), c.end))
    for start, end in pieces:
        while start < end and text[start] in _TRIM:
            start += 1
        while end > start and text[end - 1] in _TRIM:
            end -= 1
        value = text[start:end]
        if sum(ch.isalpha() for ch in value) < 2:
            continue
        if c.entity_type == "DATE_TIME" and (
            not _DATE_HAS_DIGIT.search(value) or _NOT_A_DATE.fullmatch(value)
        ):
            continue
        return c._replace(start=start, end=end)
    return None


_DATE_HAS_DIGIT = re.compile(r"\d")
_NOT_A_DATE = re.compile(
    # a bare number that is not a year; a duration or an age
    r"(?!(?:19|20)\d\d$)\d{1,4}"
    r"|(?:about |around |over |under |almost |nearly |the )?(?:(?:last|next|past|coming|first|previous) )?"
    r"(?:\d+|a|an|one|two|few)(?:st|nd|rd|th)?[ \-]*"
    r"(?:years?|yrs?|months?|weeks?|wks?|days?|hours?|hrs?|minutes?|mins?|seconds?|secs?|semesters?|quarters?)"
    r"(?:[ \-]*old| ago| later| long)?"
    # a time of day ("8:30 today", "7pm", "9:14 AM CST")
    r"|(?:at |by |until |from )?\d{1,2}(?:[:.]\d{2}){0,2} ?(?:[ap]\.?m\.?)?(?: [A-Z]{2,4})?"
    r"(?: (?:today|tonight|tomorrow|yesterday|this morning|this evening|this afternoon))?"
    # a numbered period of something ("Day 6", "Week 2", "Season 3")
    r"|(?:day|week|season|round|episode|chapter|stage|phase|level|part|game) \d{1,3}"
    # a time of day on a relative day ("today 5 pm", "tomorrow 10-12")
    r"|(?:today|tonight|tomorrow|yesterday) (?:at |from )?\d{1,2}(?:[:.]\d{2})?"
    r"(?: ?- ?\d{1,2}(?:[:.]\d{2})?)?(?: ?[ap]\.?m\.?)?"
    # an ordinal without a month, an age, a century ("the 1st", "the age of 30", "the 21st century")
    r"|(?:the |their |his |her |my |our |your )?\d{1,2}(?:st|nd|rd|th)(?: century| half| place| time)?"
    r"|(?:the )?age of \d{1,3}",
    re.IGNORECASE,
)
_NAME_TYPES: Final = frozenset({"PERSON", "LOCATION", "ORGANIZATION", "NRP"})
_ADDRESS_TYPES: Final = frozenset({"URL", "EMAIL_ADDRESS"})
# Pattern types a model guess is not cut around: other guesses of its kind, dates, addresses.
_NOT_NUMBER_TYPES: Final = _NAME_TYPES | _ADDRESS_TYPES | {"DATE_TIME"}
# Words the small model takes for names in informal text.
_NOT_NAMES: Final = frozenset(
    [
        "rt",
        "lol",
        "lmao",
        "omg",
        "haha",
        "wanna",
        "gonna",
        "gotta",
        "congrats",
        "thanx",
        "thx",
        "pls",
        "plz",
        "yay",
        "yup",
        "nope",
        "ok",
        "okay",
        "email",
        "e-mail",
        "phone",
        "tel",
        "fax",
        "aadhar",
        "aadhaar",
        "ssn",
        "pan",
        "iban",
    ]
)


def _in_tag(text: str, start: int) -> bool:
    """Say whether the span starts a hashtag ("#SWOOP"): a topic, not a name."""
    return text[start : start + 1] == "#" or (start > 0 and text[start - 1] == "#")


# Words a span may grow by on each side.
_ORG_WIDEN_WORDS: Final = 2
_TITLE_WORD = re.compile(r"(?<![\w'’])[A-Za-z][a-z'’]+")
# Latin letters only: a name never runs on into Han text ("Acme Widgets公司").
# a letter or digit of any script but CJK, kana and hangul (a negated class)
_NOT_CJK_WORD = r"[^\W_\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]"
_ORG_WORD_AFTER = re.compile(
    rf"(?:[ \t]+(?:(?:And|&|of|Of|de|du|von)[ \t]+)?|-)([A-Z](?:{_NOT_CJK_WORD}|['’])*)(?!{_NOT_CJK_WORD})"
)
_ORG_WORD_BEFORE = re.compile(
    rf"(?<!{_NOT_CJK_WORD})(?<!['’])([A-Z](?:{_NOT_CJK_WORD}|['’])*)(?:[ \t]+(?:(?:And|&|of|Of)[ \t]+)?|-)$"
)


def widen_organizations(text: str, chosen: list[Candidate]) -> list[Candidate]:
    """Widen ORGANIZATION spans over the capitalised words around them, on the same line.

    The tagger often tags one word of a company's name ("Compliance And <Risks>", "<Roadify>
    Transit", "Weeks-<Rivas>"): the rest stays in clear. A span grows over capitalised words (and
    "And", "&", "of" between two of them, and hyphens) up to the next chosen span; not over a stop
    word ("The", "In") opening it, and not in text written in capitals, where capitals say nothing.
    """
    if not any(c.entity_type == "ORGANIZATION" for c in chosen):
        return chosen
    letters_upper = sum(ch.isupper() for ch in text)
    if letters_upper > 12 and letters_upper * 2 > sum(ch.isalpha() for ch in text):
        return chosen
    stop = english_stop_words()
    widened = list(chosen)
    for i, c in enumerate(widened):
        if c.entity_type != "ORGANIZATION" or not text[c.start : c.start + 1].isupper():
            continue
        # Headlines and titles ("Facebook Job-Hunting App BranchOut Raises"): every word of the
        # line is capitalised.
        line = text[text.rfind("\n", 0, c.start) + 1 : (text.find("\n", c.end) + 1 or len(text) + 1) - 1]
        words = _TITLE_WORD.findall(line)
        if len(words) > 4 and 4 * sum(w[0].isupper() for w in words) > 3 * len(words):
            continue
        limit_right = widened[i + 1].start if i + 1 < len(widened) else len(text)
        limit_left = widened[i - 1].end if i > 0 else 0
        end, added = c.end, 0
        while (
            added < _ORG_WIDEN_WORDS
            and (m := _ORG_WORD_AFTER.match(text, end, limit_right))
            and m.group(1).lower() not in stop
        ):
            end, added = m.end(), added + 1
        start, added = c.start, 0
        while (
            added < _ORG_WIDEN_WORDS
            and (m := _ORG_WORD_BEFORE.search(text, limit_left, start))
            and m.group(1).lower() not in stop
        ):
            start, added = m.start(), added + 1
        if (start, end) != (c.start, c.end):
            widened[i] = c._replace(start=start, end=end)
    return widened


# Postal codes that follow a town: UK (NW1 6XE), Canadian (M4W 1A5), Japanese (150-0002).
_POSTCODE: Final = r"(?:[A-Z]{1,2}\d[A-Z\d]?[ \t]?\d[A-Z]{2}|[A-Z]\d[A-Z][ \t]?\d[A-Z]\d|\d{3}-\d{4})"
_POSTCODE_AFTER: Final = re.compile(rf"[ \t]{{1,2}}{_POSTCODE}(?![\w\-])")
# What may stand between two places of one address: commas and white space, and a postal code or
# a piece of one (a tagger that cut "Tokyo 150-0002, Japan" after "150-"); capitals, digits and
# hyphens only, so "Leeds and York" stays two places.
_ADDRESS_GAP: Final = re.compile(r"[, \t\n]*(?:[A-Z0-9][A-Z0-9 \-]{0,8}[, \t\n\-]*)?")


def _joins_places(gap: str) -> bool:
    if all(ch in ", \t\n" for ch in gap):
        return len(gap) <= 4
    digits = sum(ch.isdigit() for ch in gap)
    # A postal code has three digits or more, or letters and digits together ("HG1 2LS"); a house
    # number stands alone ("Hafnarstraeti 5, Suite 179"); a score between two teams ("Bolton 1-2
    # Liverpool") is none of them.
    postcode = (
        digits >= 3 or (digits > 0 and any(ch.isalpha() for ch in gap)) or gap.strip(", \t\n").isdigit()
    )
    return len(gap) <= 14 and postcode and bool(_ADDRESS_GAP.fullmatch(gap))


# Characters of one user name or identifier token: "throwaway_kat88", "grandma_ruth", "okafor.c".
_TOKEN_CHAR: Final = re.compile(r"[A-Za-z0-9_]")
_TOKEN_JOINER: Final = frozenset("._")
_TOKEN_TYPES: Final = frozenset({"PERSON", "LOCATION", "ORGANIZATION"})


# How far a name may grow into its token on either side.
_TOKEN_WIDEN_MAX: Final = 30


def _joins(text: str, pos: int) -> bool:
    """Whether the ``.`` or ``_`` at ``pos`` joins one token: word characters on both sides, and
    after a ``.`` no capital (``okafor.c``, not the sentence break of ``…o3.Abest``)."""
    if pos < 1 or pos + 1 >= len(text) or not _TOKEN_CHAR.match(text, pos - 1):
        return False
    after = text[pos + 1]
    return bool(_TOKEN_CHAR.match(after)) and not (text[pos] == "." and after.isupper())


def _ascii_letter(text: str, pos: int) -> bool:
    return 0 <= pos < len(text) and text[pos].isascii() and text[pos].isalpha()


def whole_tokens(text: str, chosen: list[Candidate]) -> list[Candidate]:
    """Widen a name to the whole token it cuts into and drop the quotes it took.

    The English tagger reads ``grandma_ruth`` as ``grandma``, ``_``, ``ruth`` and tagged only the
    last; the rest of a user name is as identifying as its end. A name (PERSON, LOCATION,
    ORGANIZATION) that starts or ends inside a run of ASCII letters, digits and ``_`` (``.``
    inside it, not before a capital) takes the whole run, up to 30 characters on a side and unless
    that reaches another span; a quote at either end of it (``'Lindqvist`` in SQL) is given back.
    Eleventh round of issue 12, from a walk."""
    if not chosen:
        return chosen
    widened = list(chosen)
    for i, c in enumerate(widened):
        if c.entity_type not in _TOKEN_TYPES:
            continue
        start, end = c.start, c.end
        # a quote is given back unless it is an apostrophe inside a word ("de l'interieur")
        while start < end and text[start] in "'\"‘“` \t" and not _ascii_letter(text, start - 1):
            start += 1
        while (
            end > start
            and text[end - 1] in "'\"’”` \t"
            and not (_ascii_letter(text, end) and _ascii_letter(text, end - 2))
        ):
            end -= 1
        if _TOKEN_CHAR.match(text, start) and _TOKEN_CHAR.match(text, end - 1):
            left = max(widened[i - 1].end if i else 0, start - _TOKEN_WIDEN_MAX)
            right = min(widened[i + 1].start if i + 1 < len(widened) else len(text), end + _TOKEN_WIDEN_MAX)
            new_start, new_end = start, end
            while new_start > left and (
                _TOKEN_CHAR.match(text, new_start - 1)
                or (text[new_start - 1] in _TOKEN_JOINER and _joins(text, new_start - 1))
            ):
                new_start -= 1
            while new_end < right and (
                _TOKEN_CHAR.match(text, new_end) or (text[new_end] in _TOKEN_JOINER and _joins(text, new_end))
            ):
                new_end += 1
            start, end = new_start, new_end
        if (start, end) != (c.start, c.end) and start < end:
            widened[i] = c._replace(start=start, end=end)
    return widened


def merge_adjacent_locations(text: str, chosen: list[Candidate]) -> list[Candidate]:
    """Join LOCATION spans separated only by commas and white space ("12 Main St", "Springfield, IL")
    or by a postal code ("Harrogate HG1 2LS, UK"), and take a postal code after a place with it."""
    if not chosen:
        return chosen
    merged = [chosen[0]]
    for c in chosen[1:]:
        last = merged[-1]
        if last.entity_type == c.entity_type == "LOCATION" and _joins_places(text[last.end : c.start]):
            merged[-1] = Candidate(last.start, c.end, "LOCATION", max(last.score, c.score), last.source)
        else:
            merged.append(c)
    for i, c in enumerate(merged):
        if c.entity_type == "LOCATION" and (code := _POSTCODE_AFTER.match(text, c.end)):
            limit = merged[i + 1].start if i + 1 < len(merged) else len(text)
            if code.end() <= limit:
                merged[i] = c._replace(end=code.end())
    return merged


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


def _joined_phones(candidates: list[Candidate]) -> list[Candidate]:
    """Join overlapping phone candidates into one span with the best score.

    The numbering-plan matcher often reads only part of a foreign number
    ("757 938 3470" of "+7 757 938 3470") and scores it higher than the
    recognizer that saw the whole: resolved by score, the country code and
    trunk digits would stay in clear. Digits two recognizers share belong to
    the same number.
    """
    phones = [c for c in candidates if c.entity_type == "PHONE_NUMBER"]
    if len(phones) < 2:
        return candidates
    phones.sort(key=lambda c: (c.start, -c.end))
    joined = [phones[0]]
    for c in phones[1:]:
        last = joined[-1]
        if c.start < last.end:
            if c.end > last.end or c.score > last.score:
                best = c if c.score > last.score else last
                joined[-1] = Candidate(
                    last.start, max(last.end, c.end), "PHONE_NUMBER", best.score, best.source
                )
        else:
            joined.append(c)
    return [c for c in candidates if c.entity_type != "PHONE_NUMBER"] + joined


def fill_gaps(
    chosen: list[Candidate],
    extra: list[Candidate],
    entities: frozenset[str],
    threshold: float,
    text: str,
) -> list[Candidate]:
    """Add the ``extra`` spans (the English tagger's) where nothing is chosen yet, sorted.

    A span that overlaps chosen spans still adds what lies outside them (``_remainders``, eighth
    round of issue 12): where a rule took ``Tommy`` of the tagger's ``Tommy WIseau``, or the
    postcode of an address block the tagger read as one place, the surname and the city are still
    masked (before, the whole tagger span was dropped with its overlap)."""
    added = []
    for c in extra:
        if c.entity_type not in entities or c.score < threshold:
            continue
        if _table_noise(text, c):
            continue
        overlapping = [k for k in chosen if _overlaps(c, k)]
        if not overlapping:
            added.append(c)
        else:
            added.extend(_remainders(text, c, overlapping))
    if not added:
        return chosen
    return resolve([*chosen, *added], entities, threshold)


def tagger_view(text: str) -> str | None:
    """What the English tagger reads of a record (its ``latin_view``, CJK blanked), or ``None`` when
    it has no letter outside its links: a record of digits, punctuation, Chinese and URLs
    (``2012年10月 http://t.cn/SXLy39``) holds no name for the English tagger, and a URL with a scheme
    is ``UrlRecognizer``'s, whole, at a score the tagger's spans never beat. 31% of the Chinese
    train records read as mixed were such work for nothing (twelfth round of issue 12).

    A record that is read is read whole, links included: blanking the links' hosts and paths
    (8% of the English train split's word pieces) changes what the tagger makes of the words
    around them, and cost recall (docs/desensitization.md, "Twelfth round")."""
    view = latin_view(text)
    cursor = 0
    for start, end in scheme_urls(view):
        if has_letter(view[cursor:start]):
            return view
        cursor = end
    return view if has_letter(view[cursor:]) else None


def _table_noise(text: str, span: Candidate) -> bool:
    """Whether ``span`` is a whole table cell that names no one: a field's name (``city`` in
    ``id,name,city``, ``fields.FIELDS``) or a cell without a letter (a row's ``1042``)."""
    before = text[span.start - 1] if span.start else "\n"
    after = text[span.end] if span.end < len(text) else "\n"
    if before not in ",;\t|\n" or after not in ",;\t|\n\r":
        return False
    value = text[span.start : span.end]
    return is_field_name(value) or not any(ch.isalpha() for ch in value)


def _remainders(text: str, span: Candidate, overlapping: list[Candidate]) -> list[Candidate]:
    """The parts of ``span`` outside every ``overlapping`` span, cut to their first and last word
    characters, each kept only if the tagger would accept it alone (``accepted``: not one
    character, a lone stop word, a demonym or a common word) and it is not a title alone (the ``mr``
    of ``mr tanaka`` once a rule took ``tanaka``)."""
    pieces = [(span.start, span.end)]
    for k in overlapping:
        pieces = [
            part
            for start, end in pieces
            for part in ((start, min(end, k.start)), (max(start, k.end), end))
            if part[0] < part[1]
        ]
    kept = []
    for start, end in pieces:
        while start < end and not text[start].isalnum():
            start += 1
        while end > start and not text[end - 1].isalnum():
            end -= 1
        value = text[start:end]
        if accepted(value, span.entity_type, span.score, min_score=0.0) and not is_title(value):
            kept.append(span._replace(start=start, end=end))
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


def load_en_tagger() -> Any:
    """Load the English tagger when ``settings.DESENSITIZE_EN_MODEL`` is on, else None.

    :raises ImproperlyConfigured: when it is on and the tagger cannot load (torch or transformers
        missing, a file failing its pinned hash): never a silent fallback that finds less.
    """
    import os

    from django.conf import settings

    if not getattr(settings, "DESENSITIZE_EN_MODEL", False):
        return None
    from custody.recognizers.en_model import EnglishModelError, EnglishTagger, default_threads

    processes = settings.DESENSITIZE_PROCESSES or (os.cpu_count() or 1)
    try:
        return EnglishTagger(threads=default_threads(processes), precision=settings.DESENSITIZE_EN_PRECISION)
    except EnglishModelError as error:
        raise ImproperlyConfigured(
            f"{error}. settings.DESENSITIZE_EN_MODEL (SEALROOM_DESENSITIZE_EN_MODEL) is on: "
            "install requirements/training.txt on this worker or turn the setting off"
        ) from None
    except ValueError as error:
        raise ImproperlyConfigured(
            f"settings.DESENSITIZE_EN_PRECISION (SEALROOM_DESENSITIZE_EN_PRECISION): {error}"
        ) from None


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
