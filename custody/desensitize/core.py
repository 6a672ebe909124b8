"""The desensitizer: detect, resolve and replace, per policy, under a version's pseudonym key."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from django.conf import settings

from common.exceptions import Invalid
from custody.desensitize.operators import Replacer
from custody.desensitize.policy import Policy
from custody.language import detect_language

if TYPE_CHECKING:
    from custody.desensitize.engine import Engine

LANGUAGE_CHOICES: Final = ("auto", "en", "zh")
MIN_KEY_BYTES: Final = 16
# The records whose Latin runs the English NER model sees.
_NER_LANGUAGES: Final = frozenset({"en", "mixed"})


@dataclass(frozen=True)
class Span:
    """A detected entity: offsets into the input text, its type and score."""

    start: int
    end: int
    entity_type: str
    score: float

    def to_dict(self) -> dict[str, object]:
        """Return the JSON form ``{start, end, entity_type, score}``."""
        return {"start": self.start, "end": self.end, "entity_type": self.entity_type, "score": self.score}


@dataclass(frozen=True)
class Desensitized:
    """One desensitized record: the new text, the spans found in the input, the record's language."""

    text: str
    spans: tuple[Span, ...]
    language: str


class Desensitizer:
    """Desensitizes records under a policy and a version's pseudonym key.

    Cheap to create: the heavy engine (spaCy, Presidio) is built on first
    use and shared by every desensitizer of the process.
    """

    def __init__(self, policy: Policy, pseudonym_key: bytes, *, model_name: str | None = None) -> None:
        if not isinstance(pseudonym_key, bytes) or len(pseudonym_key) < MIN_KEY_BYTES:
            raise ValueError(f"pseudonym_key must be at least {MIN_KEY_BYTES} bytes")
        self.policy = policy
        self.model_name = model_name or settings.SPACY_MODEL
        self._replacer = Replacer(pseudonym_key)
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        """Return the process's engine, building it on first use."""
        if self._engine is None:
            from custody.desensitize.engine import engine_for  # heavy

            self._engine = engine_for(self.model_name)
        return self._engine

    def desensitize(self, text: str, language: str = "auto") -> Desensitized:
        """Desensitize one record (prefer ``desensitize_batch``: NER is batched)."""
        return self.desensitize_batch([text], language)[0]

    def desensitize_batch(self, texts: Sequence[str], language: str = "auto") -> list[Desensitized]:
        """Desensitize records; ``language`` is ``auto`` (per record), ``en`` or ``zh`` (all records).

        :raises Invalid: on an unknown language.
        """
        if language not in LANGUAGE_CHOICES:
            raise Invalid(
                f"language must be one of {', '.join(LANGUAGE_CHOICES)}",
                code="custody.language_invalid",
                errors=[
                    {
                        "pointer": "/language",
                        "code": "invalid_choice",
                        "detail": f"{language!r} is not supported",
                    }
                ],
            )
        labels: list[str] = [language] * len(texts)
        if language == "auto":
            labels = [detect_language(t) for t in texts]
        ner_flags = [label in _NER_LANGUAGES for label in labels]
        policy = self.policy
        out = []
        detections = self.engine.detect(texts, ner_flags, policy)
        for text, label, found in zip(texts, labels, detections, strict=True):
            spans = tuple(Span(c.start, c.end, c.entity_type, round(c.score, 4)) for c in found)
            new_text = self._replacer.apply(
                text, [(c.start, c.end, c.entity_type) for c in found], policy.operator_for
            )
            out.append(Desensitized(new_text, spans, label))
        return out


def get_desensitizer(policy: Policy, pseudonym_key: bytes) -> Desensitizer:
    """Return a desensitizer for the policy and key; its engine is built once per process, lazily."""
    return Desensitizer(policy, pseudonym_key)
