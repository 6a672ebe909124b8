"""The English tagger finds the same spans in a record whatever records share its batch.

Desensitization must not depend on a record's neighbours (a retried batch, a re-run, a record
moved to another shard get the same answer). The tagger pads each window to a length that depends
on the window alone (``padded_length``), masks the padding and batches only windows of one padded
length, so a window's probabilities are a pure function of the window, bit for bit, in bfloat16
(the default where the CPU has it) as in float32, with the linear layers' weights prepacked for
oneDNN or not. Dynamic int8 (``quantize=True``) scales activations by the whole batch: it is the
positive control that shows the check can fail.
"""

from __future__ import annotations

import pytest
import torch

from custody.recognizers.en_model import PAD_MULTIPLE, EnglishTagger, native_bfloat16, padded_length

NAME = "Hello, this is Aisha Khan. My router drops the connection every few minutes lately."
NEIGHBOURS = [
    "Hello, this is Aisha Khan.",
    "had lunch with marcus okafor today, he says hi",
    "My appointment with Dr. Henrietta Vasquez got moved to Thursday.",
    "She has worked as an analyst at Goldman Sachs for six years.",
    "We drove from Winnipeg to Reykjavik last summer with Priya.",
    # Longer than NAME: batched by length and padded, NAME's scores moved (the float32 tagger
    # before the fifth round).
    "Please forward the signed lease for the flat on Baker Street to my solicitor, Margaret "
    "O'Connell, before the end of next week, and copy the letting agent in on the message too.",
]


@pytest.fixture(scope="module")
def taggers() -> dict[str, EnglishTagger]:
    return {
        "default": EnglishTagger(threads=1),
        "float32": EnglishTagger(threads=1, precision="float32"),
        "int8": EnglishTagger(threads=1, quantize=True),
    }


def neighbour_of_length(tagger: EnglishTagger, width: int) -> str:
    """The neighbours' text cut to exactly ``width`` word pieces."""
    ids = tagger.tokenizer.encode(" ".join(NEIGHBOURS), add_special_tokens=False).ids[:width]
    text = tagger.tokenizer.decode(ids)
    assert len(tagger.tokenizer.encode(text, add_special_tokens=False).ids) == width, text
    return text


def same_length_neighbours(tagger: EnglishTagger) -> list[str]:
    """The neighbours, each cut or repeated to exactly as many tokens as NAME (one batch with it)."""
    width = len(tagger.tokenizer.encode(NAME, add_special_tokens=False).ids)
    texts = []
    for neighbour in NEIGHBOURS:
        ids = tagger.tokenizer.encode(neighbour, add_special_tokens=False).ids
        ids = (ids * (width // len(ids) + 1))[:width]
        text = tagger.tokenizer.decode(ids)
        assert len(tagger.tokenizer.encode(text, add_special_tokens=False).ids) == width, text
        texts.append(text)
    return texts


def named(found: object) -> set[tuple[str, str]]:
    return {(NAME[c.start : c.end], c.entity_type) for c in found}  # type: ignore[attr-defined]


def probabilities_alone_and_in_batches(tagger: EnglishTagger, *, natural: bool = False) -> list[torch.Tensor]:
    """NAME's tag probabilities alone, then in one batch with each same-length neighbour (and,
    with ``natural``, beside each neighbour as written, shorter or longer)."""
    results = [tagger._probabilities(tagger._windows([NAME]))[0]]
    for neighbour in same_length_neighbours(tagger):
        windows = tagger._windows([neighbour, NAME])
        assert len({len(w.ids) for w in windows}) == 1, "one batch"
        results.append(tagger._probabilities(windows)[1])
    if natural:
        for neighbour in NEIGHBOURS:
            results.append(tagger._probabilities(tagger._windows([neighbour, NAME, neighbour]))[1])
    return results


def test_the_default_tagger_runs_bfloat16_where_the_cpu_has_it(taggers: dict[str, EnglishTagger]) -> None:
    default, float32 = taggers["default"], taggers["float32"]
    assert default.precision == ("bfloat16" if native_bfloat16(torch) else "float32")
    linears = [m for m in float32.encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.weight.dtype == torch.float32 for m in linears)
    with pytest.raises(ValueError):
        EnglishTagger(threads=1, precision="float16")


@pytest.mark.parametrize("kind", ["default", "float32"])
def test_a_records_spans_do_not_depend_on_its_batch(taggers: dict[str, EnglishTagger], kind: str) -> None:
    tagger = taggers[kind]
    alone = named(tagger.tag([NAME])[0])
    assert {"Aisha", "Khan"} <= {word for span, _ in alone for word in span.split()}, "it finds the name"
    for neighbour in [*NEIGHBOURS, *same_length_neighbours(tagger)]:
        assert named(tagger.tag([neighbour, NAME])[1]) == alone, neighbour
        assert named(tagger.tag([NAME, neighbour, neighbour])[0]) == alone, neighbour


@pytest.mark.parametrize("kind", ["default", "float32"])
def test_a_windows_probabilities_are_the_same_bit_for_bit_in_any_batch(
    taggers: dict[str, EnglishTagger], kind: str
) -> None:
    results = probabilities_alone_and_in_batches(taggers[kind], natural=True)
    assert all(torch.equal(r, results[0]) for r in results[1:])


def test_int8_is_batch_dependent_which_is_why_it_is_off(taggers: dict[str, EnglishTagger]) -> None:
    results = probabilities_alone_and_in_batches(taggers["int8"])
    assert any(not torch.equal(r, results[0]) for r in results[1:])


@pytest.mark.parametrize("kind", ["default", "float32"])
def test_a_padded_window_scores_the_same_beside_shorter_and_longer_windows_of_its_batch(
    taggers: dict[str, EnglishTagger], kind: str
) -> None:
    """Windows of different lengths share a batch when they pad to the same length: NAME beside
    each other length of its bucket (its padding then differs in size, or it has none)."""
    tagger = taggers[kind]
    width = len(tagger.tokenizer.encode(NAME, add_special_tokens=False).ids)
    bucket = padded_length(width)
    assert bucket % PAD_MULTIPLE == 0 and bucket - PAD_MULTIPLE < width <= bucket
    alone = tagger._probabilities(tagger._windows([NAME]))[0]
    others = [w for w in range(bucket - PAD_MULTIPLE + 1, bucket + 1) if w != width]
    assert len(others) == PAD_MULTIPLE - 1
    for other in others:
        windows = tagger._windows([neighbour_of_length(tagger, other), NAME])
        assert {padded_length(len(w.ids)) for w in windows} == {bucket}, "one batch"
        assert torch.equal(tagger._probabilities(windows)[1], alone), other


def test_prepacked_weights_give_the_same_probabilities_bit_for_bit(taggers: dict[str, EnglishTagger]) -> None:
    default = taggers["default"]
    if not default.prepacked:
        pytest.skip("this CPU has no native bfloat16: the tagger runs float32 and nothing is prepacked")
    plain = EnglishTagger(threads=1, prepack=False)
    assert plain.precision == default.precision == "bfloat16" and not plain.prepacked
    texts = [NAME, *NEIGHBOURS, *same_length_neighbours(default)]
    windows = default._windows(texts)
    for packed, unpacked in zip(default._probabilities(windows), plain._probabilities(windows), strict=True):
        assert torch.equal(packed, unpacked)
