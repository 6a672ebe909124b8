"""The sixth round's cheaper Chinese stages give the same answers as what they replace.

Each check compares the faster code with the slower reference on the development set's zh dev split
and on edge cases: jieba's own ``Tokenizer.cut`` for the segmenter, the per-character loops the
Chinese tagger's features were built with, and ``_chain`` tried at every position for the address
grammar's prefilter (docs/desensitization.md, "Sixth round: speed").
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from custody.recognizers import TextView
from custody.recognizers.zh_address import ChineseAddressRecognizer
from custody.recognizers.zh_model import (
    FLAG_CLASSES,
    char_class,
    char_ids,
    decode,
    segment_features,
    tagger,
)
from custody.recognizers.zh_segmenter import Word, _cut, _hmm_cut, _pieces, segmenter

DEV = Path(__file__).resolve().parents[2] / "bench" / "data" / "devset" / "zh-dev.jsonl"
EDGE_CASES = [
    "",
    " ",
    "\r\n\t",
    "张",
    "龘龘龘龘龘",  # characters the dictionary does not know
    "我们我们我们我们",
    "联系人：张伟，电话13800138000，地址：北京市朝阳区建国路88号3栋2单元501室。",
    "@椰子yuria 转发微博 http://t.cn/SXLy39 #话题# ~!!",
    "Apple公司和IBM中国研究院 2012年10月1日 C++ a.b_c%d-e",
    "研究生命起源，南京市长江大桥，结婚的和尚未结婚的",
    "长长长长长长长长长长长长长长长长长长长长长长长长长长长长长长",
]


@pytest.fixture(scope="module")
def dev_texts() -> list[str]:
    with DEV.open(encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle if line.strip()]


def test_segmenter_cuts_as_jieba_does(dev_texts: list[str]) -> None:
    tokenizer, _ = segmenter()
    for text in [*EDGE_CASES, *dev_texts]:
        assert list(_pieces(text, tokenizer)) == list(tokenizer.cut(text, HMM=True)), text


def test_unknown_words_cut_as_jiebas_hmm_does(dev_texts: list[str]) -> None:
    from jieba import finalseg  # type: ignore[import-untyped]

    # Runs of characters the dictionary does not join are what the HMM reads: random strings of the
    # split's own characters give it thousands of them.
    rng = random.Random(7)
    characters = sorted(set("".join(dev_texts)))
    noise = ["".join(rng.choice(characters) for _ in range(rng.randint(1, 24))) for _ in range(2000)]
    tokenizer, _ = segmenter()
    for text in [*EDGE_CASES, *dev_texts, *noise]:
        assert list(_hmm_cut(text)) == list(finalseg.cut(text)), text
    for text in noise:
        assert list(_pieces(text, tokenizer)) == list(tokenizer.cut(text, HMM=True)), text


def test_segmenter_breaks_ties_as_jieba_does() -> None:
    # Paths of the same score: jieba's max over (score, end) takes the later end. Keeping the first
    # instead cuts these differently (哈哈 哈哈哈 for jieba's 哈哈哈 哈哈; 54 blocks of the zh splits,
    # all laughter and cries, tie this way).
    tokenizer, _ = segmenter()
    assert list(_pieces("哈哈哈哈哈", tokenizer)) == ["哈哈哈", "哈哈"]
    for text in ("哈哈哈哈哈", "啊啊啊啊啊", "哈哈哈哈哈哈我在", "回不来了哈哈哈哈嘻嘻嘻嘻"):
        assert list(_pieces(text, tokenizer)) == list(tokenizer.cut(text, HMM=True))


def _reference_features(text: str, words: list[Word]) -> np.ndarray:
    """The features as the third round computed them: a loop over each word's characters."""
    features = np.zeros(len(text), dtype=np.int64)
    for w in words:
        if not any("\u4e00" <= ch <= "\u9fff" for ch in w.text):
            kind = 8
        elif not w.flag:
            kind = 0
        elif w.flag.startswith("nr"):
            kind = 1
        elif w.flag in ("ns", "nt", "nz"):
            kind = FLAG_CLASSES.index(w.flag)
        elif w.flag.startswith("n"):
            kind = 5
        elif w.flag.startswith("v"):
            kind = 6
        else:
            kind = 7
        if w.end - w.start == 1:
            features[w.start] = 1 + 3 * len(FLAG_CLASSES) + kind
            continue
        features[w.start] = 1 + kind
        features[w.start + 1 : w.end - 1] = 1 + len(FLAG_CLASSES) + kind
        features[w.end - 1] = 1 + 2 * len(FLAG_CLASSES) + kind
    return features


def _reference_decode(
    probabilities: np.ndarray, min_probability: float, min_score: float
) -> list[tuple[int, int, str, float]]:
    """``decode`` as the third round wrote it: numpy scalars read one character at a time."""
    types = ("PERSON", "LOCATION", "ORGANIZATION")
    entity = 1.0 - probabilities[:, 0]
    pairs = probabilities[:, 1:].reshape(len(probabilities), len(types), 2)
    kinds = pairs.sum(axis=2).argmax(axis=1)
    begins = pairs[np.arange(len(kinds)), kinds, 0] > pairs[np.arange(len(kinds)), kinds, 1]
    spans: list[tuple[int, int, str, float]] = []
    start = -1
    for position in range(len(entity) + 1):
        inside = position < len(entity) and entity[position] >= min_probability
        opens = inside and (start < 0 or begins[position] or kinds[position] != kinds[start])
        if start >= 0 and (not inside or opens):
            score = float(entity[start:position].mean())
            if score >= min_score:
                spans.append((start, position, types[int(kinds[start])], score))
            start = -1
        if opens:
            start = position
    return spans


def test_tagger_inputs_and_decoding_unchanged(dev_texts: list[str]) -> None:
    model = tagger()
    vocabulary = model.vocabulary
    decoded = 0
    for text in [*EDGE_CASES, *dev_texts]:
        words = _cut(text)
        assert np.array_equal(segment_features(text, words), _reference_features(text, words)), text
        reference_ids = np.array([vocabulary.get(ch) or char_class(ch) for ch in text], dtype=np.int64)
        assert np.array_equal(char_ids(text, vocabulary), reference_ids), text
        if not text:
            continue
        probabilities = model.probabilities(text, words)
        for min_probability, min_score in ((0.5, 0.6), (0.3, 0.0), (0.7, 0.8)):
            spans = decode(probabilities, min_probability, min_score)
            assert spans == _reference_decode(probabilities, min_probability, min_score), text
            decoded += len(spans)
    assert decoded > 100  # the check saw spans, not only empty lists


def _reference_addresses(recognizer: ChineseAddressRecognizer, text: str) -> list[tuple[int, int, float]]:
    """The address grammar tried at every position, without the prefilter."""
    found = []
    pos = 0
    while pos < len(text):
        end, address = recognizer._chain(text, pos)
        if end > pos:
            found.append((pos, end, 0.85 if address else 0.6))
            pos = end
        else:
            pos += 1
    return found


def test_address_prefilter_finds_the_same_spans(dev_texts: list[str]) -> None:
    recognizer = ChineseAddressRecognizer()
    texts = [*EDGE_CASES, *dev_texts, "寄到长安路88号", "深圳南山区科技园", "广东省深圳市", "不走这几条路"]
    total = 0
    for text in texts:
        found = [(c.start, c.end, c.score) for c in recognizer.find(TextView(text, english=False))]
        assert found == _reference_addresses(recognizer, text), text
        total += len(found)
    assert total > 20
