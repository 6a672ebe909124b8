"""The Chinese character tagger (custody/recognizers/zh_model.py): its files, its arithmetic, its decoding."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from custody.recognizers import zh_model
from custody.recognizers.base import TextView
from custody.recognizers.en_model import sha256_file
from custody.recognizers.zh_segmenter import Word, segment


def test_the_shipped_files_match_their_pinned_hashes_and_are_small() -> None:
    weights = zh_model.DATA_DIR / zh_model.WEIGHTS_FILE
    vocab = zh_model.DATA_DIR / zh_model.VOCAB_FILE
    assert sha256_file(weights) == zh_model.WEIGHTS_SHA256
    assert sha256_file(vocab) == zh_model.VOCAB_SHA256
    assert weights.stat().st_size + vocab.stat().st_size < 2 * 1024 * 1024


@pytest.mark.parametrize("name", [zh_model.WEIGHTS_FILE, zh_model.VOCAB_FILE])
def test_a_changed_file_is_refused_naming_it(tmp_path: Path, name: str) -> None:
    for file in (zh_model.WEIGHTS_FILE, zh_model.VOCAB_FILE):
        shutil.copy(zh_model.DATA_DIR / file, tmp_path / file)
    with (tmp_path / name).open("ab") as handle:
        handle.write(b" ")
    with pytest.raises(zh_model.ChineseModelError, match=r"fails its pinned sha256"):
        zh_model.ChineseTagger(tmp_path)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    shutil.copy(zh_model.DATA_DIR / zh_model.VOCAB_FILE, tmp_path / zh_model.VOCAB_FILE)
    with pytest.raises(zh_model.ChineseModelError, match="is missing"):
        zh_model.ChineseTagger(tmp_path)


def test_the_convolution_is_a_dilated_width_three_convolution() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, 4)).astype(np.float32)
    weight = rng.normal(size=(12, 5)).astype(np.float32)
    bias = rng.normal(size=5).astype(np.float32)
    for dilation in (1, 2, 4):
        expected = np.tile(bias, (7, 1))
        for t in range(7):
            for k, shift in enumerate((-dilation, 0, dilation)):
                if 0 <= t + shift < 7:
                    expected[t] += x[t + shift] @ weight[4 * k : 4 * (k + 1)]
        np.testing.assert_allclose(zh_model._conv(x, weight, bias, dilation), expected, rtol=1e-5, atol=1e-5)


def test_the_exported_layout_matches_torch_conv1d() -> None:
    torch = pytest.importorskip("torch")
    conv = torch.nn.Conv1d(4, 5, 3, padding=2, dilation=2)
    x = torch.randn(1, 4, 9)
    expected = conv(x)[0].T.detach().numpy()
    w = conv.weight.detach().numpy()
    weight = w.transpose(2, 1, 0).reshape(12, 5)
    found = zh_model._conv(x[0].T.numpy(), weight, conv.bias.detach().numpy(), 2)
    np.testing.assert_allclose(found, expected, rtol=1e-4, atol=1e-5)


def _distribution(rows: list[tuple[str, float]]) -> np.ndarray:
    """Probabilities with ``p`` on the named tag and the rest on O."""
    out = np.zeros((len(rows), len(zh_model.TAGS)))
    for i, (tag, p) in enumerate(rows):
        out[i, 0] = 1.0 - p
        if tag != "O":
            out[i, zh_model.TAGS.index(tag)] = p
    return out


def test_decoding_joins_runs_and_splits_at_a_new_begin_or_type() -> None:
    probabilities = _distribution(
        [
            ("B-PERSON", 0.9),
            ("I-PERSON", 0.8),
            ("B-PERSON", 0.9),  # a second name right after the first
            ("I-PERSON", 0.7),
            ("I-LOCATION", 0.9),  # a change of type opens a span
            ("O", 0.1),
            ("I-ORGANIZATION", 0.45),  # below the threshold
        ]
    )
    spans = zh_model.decode(probabilities, 0.5, 0.5)
    assert [(s, e, t) for s, e, t, _ in spans] == [(0, 2, "PERSON"), (2, 4, "PERSON"), (4, 5, "LOCATION")]
    assert spans[0][3] == pytest.approx(0.85)
    assert zh_model.decode(probabilities, 0.5, 0.95) == []


def test_segment_features_say_where_a_character_sits_in_its_word() -> None:
    words = [Word(0, 3, "王小明", "nr"), Word(3, 4, "在", "p"), Word(4, 6, "ab", "eng")]
    features = zh_model.segment_features("王小明在ab", words)
    classes = len(zh_model.FLAG_CLASSES)
    nr, other, nonhan = 1, 7, 8
    assert features.tolist() == [
        1 + nr,
        1 + classes + nr,
        1 + 2 * classes + nr,
        1 + 3 * classes + other,
        1 + nonhan,
        1 + 2 * classes + nonhan,
    ]
    assert int(features.max()) < zh_model.SEGMENT_FEATURES


def test_the_segmentation_is_cut_once_for_the_recognizers_that_share_it() -> None:
    text = "张三明天去北京开会"
    assert segment(text) is segment(text)
    assert "".join(w.text for w in segment(text)) == text


def test_the_recognizer_reports_only_its_types_and_spans_of_two_characters_or_more() -> None:
    text = "我昨天在杭州见到了王建国和李秀英，他们在阿里巴巴工作。"
    view = TextView(text, frozenset({"zh"}))
    found = zh_model.ChineseModelRecognizer().find(view)
    assert found, "the tagger found nothing in a sentence with two names, a city and a company"
    assert all(c.end - c.start >= 2 and c.score == zh_model.MODEL_SCORE for c in found)
    people = zh_model.ChineseModelRecognizer(types=("PERSON",)).find(view)
    assert {c.entity_type for c in people} <= {"PERSON"}
    assert {text[c.start : c.end] for c in people} & {"王建国", "李秀英"}


@pytest.mark.parametrize(
    ("text", "end", "expected"),
    [
        ("张伟明天下午三点来取货。", 3, 2),  # 明天 is read on: the name gives 明 back
        ("李晓今晚到", 3, 2),
        ("张伟明今天来取货。", 3, 3),  # 明今 is no word: 张伟明 stays whole
        ("张明天下午到", 2, 2),  # two characters stay two
        ("张总说下周一开会", 3, 2),  # the reporting verb goes back too
    ],
)
def test_a_name_cut_into_a_time_word_or_a_reporting_verb_gives_it_back(
    text: str, end: int, expected: int
) -> None:
    assert zh_model._name_end(text, "PERSON", 0, end) == expected
    assert zh_model._name_end(text, "LOCATION", 0, end) == end


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("张伟明天下午三点来取货。", ["张伟"]),  # was 张伟明
        ("陈志强和刘芳昨天去了银行。", ["陈志强", "刘芳"]),  # was 刘芳昨 (eighth round)
        ("张总说下周一开会，请通知赵静。", ["张总", "赵静"]),  # was 张总说
    ],
)
def test_the_tagger_keeps_a_time_word_after_a_name_in_clear(text: str, names: list[str]) -> None:
    found = zh_model.ChineseModelRecognizer(types=("PERSON",)).find(TextView(text, frozenset({"zh"})))
    assert [text[c.start : c.end] for c in found] == names


def test_the_first_convolution_from_tables_equals_the_convolution_of_the_embeddings() -> None:
    tagger = zh_model.tagger()
    text = "王小明说：明天10点在上海浦东机场见。"
    words = segment(text)
    x = np.concatenate(
        (
            tagger.chars[zh_model.char_ids(text, tagger.vocabulary)],
            tagger.segments[zh_model.segment_features(text, words)],
        ),
        axis=1,
    )
    h = x
    for i, (weight, bias, dilation) in enumerate(tagger.convs):
        out = np.maximum(zh_model._conv(h, weight, bias, dilation), 0.0)
        h = out if i == 0 else out + h
    logits = h @ tagger.head[0] + tagger.head[1]
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(tagger.probabilities(text, words), expected, rtol=1e-4, atol=1e-5)


def test_latin_text_in_a_chinese_record_is_left_to_the_english_stages() -> None:
    text = "会议由John Smith主持，地点在上海。"
    found = zh_model.ChineseModelRecognizer().find(TextView(text, frozenset({"zh"})))
    assert all(not any(ch.isascii() for ch in text[c.start : c.end]) for c in found)
    assert zh_model._han_runs("王·小明abc李四", 0, 11) == [(0, 4), (7, 9)]
    assert zh_model._han_runs("·王x", 0, 3) == []
    assert zh_model._han_runs("长安路88号x", 0, 7) == [(0, 6)]
    assert zh_model._han_runs("12ab", 0, 4) == []
