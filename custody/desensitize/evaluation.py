"""Score the desensitizer against a labelled development set (bench/data/devset).

The set's files are ``{language}-{split}.jsonl``, one record a line:
``{"id", "source", "language": "en"|"zh", "text", "spans": [{"start", "end", "type"}]}``.
Four figures, each per language, per source and per entity type:

- **character recall**: the fraction of gold PII characters covered by any
  predicted span (whatever its type: a covered character no longer leaks);
- **span recall**: the fraction of gold spans with at least half of their
  characters covered;
- **leak-view precision**: the fraction of predicted spans with at least half
  of their characters on gold spans (of any type);
- **non-PII kept**: the fraction of characters outside gold spans that no
  prediction removed.

Per entity type, recall is by the gold type and precision by the predicted
type mapped to the set's canonical types (``canonical_type``). Pure Python:
the caller runs the desensitizer and passes its spans in.

**What the sources do not annotate** (``UNANNOTATED_BY_SOURCE``). The set's
canonical types make an ``@handle`` a PERSON and a date DATE_TIME, and the
English builder labels every WNUT handle; but WNUT-17, GSD and Weibo NER
annotate no dates, and Weibo NER annotates about half of its handles (the
Chinese builder adds none, and labels a handle it keeps without its ``@``).
A policy-mandated handle or a true date there counts as a false positive
and as non-PII removed in the headline figures. A second view,
``set_aside``, reports precision and "kept" with those predictions set apart
(a predicted span not at least half on gold, of a type its source does not
annotate; in Weibo NER also the ``@`` of a handle the source did label).
Recall is the same in both views; the headline figures are never replaced.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

DEVSET_LANGUAGES: Final = ("en", "zh")
DEVSET_SPLITS: Final = ("train", "dev", "test")
CANONICAL_TYPES: Final = (
    "PERSON",
    "LOCATION",
    "ORGANIZATION",
    "EMAIL_ADDRESS",
    "PHONE_NUMBER",
    "URL",
    "DATE_TIME",
    "CREDIT_CARD",
    "ID",
    "IP_ADDRESS",
    "OTHER",
)
# The engine's entity types that are not canonical names themselves.
_ENGINE_TO_CANONICAL: Final = {
    "BANK_CARD": "CREDIT_CARD",
    "ID_NUMBER": "ID",
    "PASSPORT": "ID",
    "LICENSE_PLATE": "ID",
    "PASSWORD": "OTHER",
    "NRP": "OTHER",
    "CRYPTO": "OTHER",
    "MAC_ADDRESS": "OTHER",
    "UUID": "OTHER",
}
_ID_HINTS: Final = (
    "_ID",
    "SSN",
    "ITIN",
    "PASSPORT",
    "LICENSE",
    "PLATE",
    "IBAN",
    "NHS",
    "USCC",
    "BANK_NUMBER",
)


def canonical_type(entity_type: str) -> str:
    """Map an engine entity type to the development set's canonical type (identifiers are ``ID``)."""
    if entity_type in CANONICAL_TYPES:
        return entity_type
    if entity_type in _ENGINE_TO_CANONICAL:
        return _ENGINE_TO_CANONICAL[entity_type]
    if any(hint in entity_type for hint in _ID_HINTS):
        return "ID"
    return "OTHER"


# Per source: canonical types the source never annotates, and "HANDLE" where it annotates only
# some ``@handles`` (bench/data/devset/README.md, "Known limits of the gold").
UNANNOTATED_BY_SOURCE: Final[dict[str, frozenset[str]]] = {
    "wnut17": frozenset({"DATE_TIME"}),
    "uner-gsdsimp": frozenset({"DATE_TIME"}),
    "weibo-ner": frozenset({"DATE_TIME", "HANDLE"}),
}


class DevsetError(ValueError):
    """A development set file is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class GoldSpan:
    start: int
    end: int
    type: str


@dataclass(frozen=True)
class DevRecord:
    id: str
    source: str
    language: str
    text: str
    spans: tuple[GoldSpan, ...]


def devset_path(devset: Path, language: str, split: str) -> Path:
    """Return the file holding one language's split."""
    return devset / f"{language}-{split}.jsonl"


def load_devset_file(path: Path) -> list[DevRecord]:
    """Read and validate one split file.

    :raises DevsetError: naming the file (and line) when it is missing or malformed.
    """
    if not path.is_file():
        raise DevsetError(f"{path}: no such development set file")
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                records.append(_parse_record(line))
            except (ValueError, TypeError) as exc:
                raise DevsetError(f"{path}:{number}: {exc}") from None
    return records


def _parse_record(line: str) -> DevRecord:
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON ({exc.msg}, column {exc.colno})") from None
    if not isinstance(data, dict):
        raise ValueError("a record must be a JSON object")
    for key in ("id", "source", "language", "text"):
        if not isinstance(data.get(key), str):
            raise ValueError(f"{key!r} must be a string")
    if data["language"] not in DEVSET_LANGUAGES:
        raise ValueError(f"'language' must be one of {', '.join(DEVSET_LANGUAGES)}")
    if not isinstance(data.get("spans"), list):
        raise ValueError("'spans' must be a list")
    text = data["text"]
    spans = []
    for index, span in enumerate(data["spans"]):
        if not isinstance(span, dict):
            raise ValueError(f"spans[{index}] must be an object")
        start, end, kind = span.get("start"), span.get("end"), span.get("type")
        if not (isinstance(start, int) and isinstance(end, int)) or isinstance(start, bool):
            raise ValueError(f"spans[{index}]: 'start' and 'end' must be integers")
        if not 0 <= start < end <= len(text):
            raise ValueError(
                f"spans[{index}]: offsets {start}..{end} are outside the text ({len(text)} characters)"
            )
        if kind not in CANONICAL_TYPES:
            raise ValueError(f"spans[{index}]: type {kind!r} is not one of {', '.join(CANONICAL_TYPES)}")
        spans.append(GoldSpan(start, end, kind))
    return DevRecord(data["id"], data["source"], data["language"], text, tuple(spans))


@dataclass
class Tally:
    """Counts behind the four figures, for one slice of the set."""

    gold_chars: int = 0
    gold_chars_covered: int = 0
    gold_spans: int = 0
    gold_spans_found: int = 0
    predicted: int = 0
    predicted_correct: int = 0
    other_chars: int = 0
    other_chars_removed: int = 0
    # the ``set_aside`` view: predictions of what the source does not annotate, and the non-PII
    # characters removed by the other predictions
    predicted_set_aside: int = 0
    other_chars_removed_kept_view: int = 0

    def add(self, other: Tally) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def figures(self) -> dict[str, float | int | None]:
        """Return the four ratios (``None`` where nothing was counted) and the counts."""
        return {
            "char_recall": _ratio(self.gold_chars_covered, self.gold_chars),
            "span_recall": _ratio(self.gold_spans_found, self.gold_spans),
            "precision": _ratio(self.predicted_correct, self.predicted),
            "non_pii_kept": None
            if not self.other_chars
            else round(1 - self.other_chars_removed / self.other_chars, 4),
            "gold_spans": self.gold_spans,
            "predicted_spans": self.predicted,
        }

    def set_aside_figures(self) -> dict[str, float | int | None]:
        """Precision and "kept" with the predictions of what the source does not annotate set apart."""
        return {
            "precision": _ratio(self.predicted_correct, self.predicted - self.predicted_set_aside),
            "non_pii_kept": None
            if not self.other_chars
            else round(1 - self.other_chars_removed_kept_view / self.other_chars, 4),
            "set_aside_spans": self.predicted_set_aside,
            "predicted_spans": self.predicted,
        }


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


@dataclass
class Scores:
    """Tallies of a scored set: overall, per language, per source and per entity type."""

    overall: Tally = field(default_factory=Tally)
    languages: dict[str, Tally] = field(default_factory=dict)
    sources: dict[str, Tally] = field(default_factory=dict)
    types: dict[str, Tally] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form: ``{"overall", "languages", "sources", "types"}``, figures in each,
        and ``set_aside`` (precision and kept without what the sources do not annotate)."""
        return {
            "overall": self.overall.figures(),
            "languages": {k: v.figures() for k, v in sorted(self.languages.items())},
            "sources": {k: v.figures() for k, v in sorted(self.sources.items())},
            "types": {k: v.figures() for k, v in sorted(self.types.items())},
            "set_aside": {
                "overall": self.overall.set_aside_figures(),
                "languages": {k: v.set_aside_figures() for k, v in sorted(self.languages.items())},
                "sources": {k: v.set_aside_figures() for k, v in sorted(self.sources.items())},
            },
        }


Predicted = Sequence[tuple[int, int, str]]


def score_record(record: DevRecord, predicted: Predicted) -> tuple[Tally, dict[str, Tally]]:
    """Score one record: its tally, and tallies per entity type."""
    removed = _char_set((s, e) for s, e, _ in predicted)
    pii = _char_set((g.start, g.end) for g in record.spans)
    tally = Tally(gold_chars=len(pii), gold_chars_covered=len(pii & removed))
    tally.other_chars = len(record.text) - len(pii)
    tally.other_chars_removed = len(removed - pii)
    by_type: dict[str, Tally] = {}
    for gold in record.spans:
        chars = set(range(gold.start, gold.end))
        covered = len(chars & removed)
        found = 2 * covered >= len(chars)
        kind = by_type.setdefault(gold.type, Tally())
        kind.gold_spans += 1
        kind.gold_spans_found += found
        kind.gold_chars += len(chars)
        kind.gold_chars_covered += covered
        tally.gold_spans += 1
        tally.gold_spans_found += found
    unannotated = UNANNOTATED_BY_SOURCE.get(record.source, frozenset())
    removed_kept_view: set[int] = set()
    for start, end, entity_type in predicted:
        correct = 2 * len(set(range(start, end)) & pii) >= end - start
        kind_name = canonical_type(entity_type)
        kind = by_type.setdefault(kind_name, Tally())
        kind.predicted += 1
        kind.predicted_correct += correct
        tally.predicted += 1
        tally.predicted_correct += correct
        handle = "HANDLE" in unannotated and record.text.startswith("@", start)
        if not correct and (kind_name in unannotated or handle):
            kind.predicted_set_aside += 1
            tally.predicted_set_aside += 1
            continue
        removed_kept_view.update(range(start + 1 if handle else start, end))
    tally.other_chars_removed_kept_view = len(removed_kept_view - pii)
    return tally, by_type


def _char_set(spans: Iterable[tuple[int, int]]) -> set[int]:
    chars: set[int] = set()
    for start, end in spans:
        chars.update(range(start, end))
    return chars


def score(records: Sequence[DevRecord], predictions: Sequence[Predicted]) -> Scores:
    """Score every record against its predicted spans ``(start, end, entity_type)``."""
    scores = Scores()
    for record, predicted in zip(records, predictions, strict=True):
        tally, by_type = score_record(record, predicted)
        scores.overall.add(tally)
        scores.languages.setdefault(record.language, Tally()).add(tally)
        scores.sources.setdefault(f"{record.language}/{record.source}", Tally()).add(tally)
        for kind, kind_tally in by_type.items():
            scores.types.setdefault(f"{record.language}/{kind}", Tally()).add(kind_tally)
    return scores
