"""Which of the taggers' spans are accepted (fifth round, tagger acceptance; docs/desensitization.md).

English (``en_model.accepted``): lower-case spans need a higher score (more for places and
organisations); a single common word of the train split is refused unless written in capitals.
Chinese (``zh_model.accepted``): a span that is one of the train split's common n-grams is refused.
Each rule has a negative case and a positive control; the shipped lists are what the builder makes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from django.conf import settings

from custody.recognizers import en_model, zh_model
from custody.recognizers.base import TextView
from custody.recognizers.en_model import (
    MIN_SPAN_SCORE,
    MIN_SPAN_SCORE_LOWERCASE,
    MIN_SPAN_SCORE_LOWERCASE_PLACE,
    EnglishTagger,
    accepted,
    common_words,
)


def _builder() -> ModuleType:
    path = Path(settings.BASE_DIR) / "bench" / "build_tagger_common_words.py"
    spec = importlib.util.spec_from_file_location("build_tagger_common_words", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestEnglishThresholds:
    def test_the_base_threshold_still_holds(self) -> None:
        assert accepted("Vasquez", "PERSON", MIN_SPAN_SCORE)
        assert not accepted("Vasquez", "PERSON", MIN_SPAN_SCORE - 0.01)

    def test_a_lowercase_name_needs_a_higher_score(self) -> None:
        score = (MIN_SPAN_SCORE + MIN_SPAN_SCORE_LOWERCASE) / 2
        assert not accepted("marcus", "PERSON", score)
        assert accepted("Marcus", "PERSON", score)  # control: the same score, capitalised
        assert accepted("marcus", "PERSON", MIN_SPAN_SCORE_LOWERCASE)

    def test_a_lowercase_place_or_organisation_needs_more_than_a_lowercase_name(self) -> None:
        score = (MIN_SPAN_SCORE_LOWERCASE + MIN_SPAN_SCORE_LOWERCASE_PLACE) / 2
        assert not accepted("skool", "LOCATION", score)
        assert not accepted("nasa", "ORGANIZATION", score)
        assert accepted("okafor", "PERSON", score)  # control: a name at the same score
        assert accepted("buckhead", "LOCATION", MIN_SPAN_SCORE_LOWERCASE_PLACE)

    def test_implausible_spans_are_still_refused(self) -> None:
        for value in ("the", "#", "p", "French"):
            assert not accepted(value, "LOCATION", 0.99)


class TestEnglishCommonWords:
    def test_a_common_single_word_is_refused_whatever_its_score(self) -> None:
        assert {"words", "big", "party"} <= common_words()
        assert not accepted("Words", "LOCATION", 0.99)
        assert not accepted("Big", "ORGANIZATION", 0.99)

    def test_names_and_longer_spans_are_not_refused(self) -> None:
        assert "hawthorne" not in common_words()
        assert accepted("Hawthorne", "PERSON", 0.9)
        assert accepted("Party City", "ORGANIZATION", 0.9)  # two words: not a common word

    def test_a_common_word_in_capitals_is_a_code_and_kept(self) -> None:
        assert "oh" in common_words()
        assert accepted("OH", "LOCATION", 0.99)  # "Greenville , OH"
        assert not accepted("Oh", "LOCATION", 0.99)

    def test_the_shipped_list_is_the_builders(self) -> None:
        assert common_words() == frozenset(_builder().english_words())


@pytest.fixture(scope="module")
def tagger() -> EnglishTagger:
    return EnglishTagger(threads=1)


def _raw(tagger: EnglishTagger, text: str) -> dict[str, tuple[str, float]]:
    """The tagger's spans before acceptance (its own decoding, nothing refused)."""
    windows = tagger._windows([text])
    found = {}
    for window, probabilities in zip(windows, tagger._probabilities(windows), strict=True):
        for c in tagger._spans(text, window, probabilities[window.first : window.last], window.first):
            found[text[c.start : c.end]] = (c.entity_type, c.score)
    return found


class TestEnglishTagger:
    def test_the_tagger_drops_a_common_word_it_tags(self, tagger: EnglishTagger) -> None:
        text = "the Big Apple is calling"
        raw = _raw(tagger, text)
        assert "Big" in raw and raw["Big"][1] >= MIN_SPAN_SCORE  # control: the model does tag it
        (spans,) = tagger.tag([text])
        assert "Big" not in [text[c.start : c.end] for c in spans]

    def test_the_tagger_keeps_names_beside_it(self, tagger: EnglishTagger) -> None:
        text = "Happy birthday to Gale Hawthorne , see you at the party"
        (spans,) = tagger.tag([text])
        assert any("Hawthorne" in text[c.start : c.end] for c in spans)

    def test_acceptance_does_not_depend_on_the_batch(self, tagger: EnglishTagger) -> None:
        texts = ["the Big Apple is calling", "hanging out with jenny and mike at the mall"]
        together = tagger.tag(texts)
        assert together == [tagger.tag([t])[0] for t in texts]


class TestChinese:
    def test_a_common_ngram_is_refused_and_a_name_is_not(self) -> None:
        assert {"英雄", "一下"} <= zh_model.common_ngrams()
        assert not zh_model.accepted("英雄")
        assert zh_model.accepted("张伟")
        assert zh_model.accepted("王建国")

    def test_the_recognizer_drops_a_common_ngram_the_tagger_tags(self) -> None:
        text = "我和王建国一起看了那痞子英雄的剧情"
        start = text.index("英雄")
        raw = [
            (s, e)
            for a, b, kind, _ in zh_model.decode(
                zh_model.entity_probabilities(text), zh_model.DEFAULT_MIN_PROBABILITY, zh_model.MIN_SPAN_SCORE
            )
            for s, e in zh_model._han_runs(text, a, b)
        ]
        assert (start, start + 2) in raw  # control: the tagger reads 英雄 as a name
        found = zh_model.ChineseModelRecognizer().find(TextView(text, frozenset({"zh"})))
        assert (start, start + 2) not in [(c.start, c.end) for c in found]
        assert [text[c.start : c.end] for c in found] == ["王建国"]  # control: the name stays

    def test_the_shipped_list_is_the_builders(self) -> None:
        assert zh_model.common_ngrams() == frozenset(_builder().chinese_ngrams())


def test_the_lists_name_their_source() -> None:
    for path in (en_model.COMMON_WORDS_FILE, zh_model.COMMON_NGRAMS_FILE):
        head = path.read_text(encoding="utf-8").splitlines()[:3]
        assert any("train split only" in line for line in head), path
