"""The English tagger finds the same spans in a record whatever records share its batch.

Desensitization must not depend on a record's neighbours (a retried batch, a re-run, a record
moved to another shard get the same answer). The default tagger runs float32 for this reason:
dynamic int8 scales activations per batch, and ``quantize=True`` is the positive control that
shows the check can fail ("Aisha Khan" alone, only "Khan" beside a shorter text).
"""

from __future__ import annotations

import pytest
import torch

from custody.recognizers.en_model import EnglishTagger

NAME = "Hello, this is Aisha Khan. My router drops the connection every few minutes lately."
NEIGHBOURS = [
    "Hello, this is Aisha Khan.",
    "had lunch with marcus okafor today, he says hi",
    "My appointment with Dr. Henrietta Vasquez got moved to Thursday.",
    "She has worked as an analyst at Goldman Sachs for six years.",
    "We drove from Winnipeg to Reykjavik last summer with Priya.",
]


@pytest.fixture(scope="module")
def taggers() -> tuple[EnglishTagger, EnglishTagger]:
    return EnglishTagger(threads=1), EnglishTagger(threads=1, quantize=True)


def spans_alone_and_in_batches(tagger: EnglishTagger) -> list[set[tuple[str, str]]]:
    def named(found) -> set[tuple[str, str]]:
        return {(NAME[c.start : c.end], c.entity_type) for c in found}

    results = [named(tagger.tag([NAME])[0])]
    for neighbour in NEIGHBOURS:
        results.append(named(tagger.tag([neighbour, NAME])[1]))
    return results


def test_the_default_tagger_runs_float32(taggers: tuple[EnglishTagger, EnglishTagger]) -> None:
    default, int8 = taggers
    assert torch.nn.Linear in {type(m) for m in default.encoder.modules()}
    assert torch.nn.Linear not in {type(m) for m in int8.encoder.modules()}


def test_a_records_spans_do_not_depend_on_its_batch(taggers: tuple[EnglishTagger, EnglishTagger]) -> None:
    default, _ = taggers
    results = spans_alone_and_in_batches(default)
    assert results[0], "the tagger finds the name"
    assert all(r == results[0] for r in results), results


def test_int8_is_batch_dependent_which_is_why_it_is_off(taggers: tuple[EnglishTagger, EnglishTagger]) -> None:
    _, int8 = taggers
    results = spans_alone_and_in_batches(int8)
    assert any(r != results[0] for r in results), results
