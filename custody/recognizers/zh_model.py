"""Chinese names, places and organisations from a small character-level tagger (a stage of the cascade).

What the rules cannot reach: Weibo nicknames, two-character names jieba takes for ordinary words,
names mid-sentence with no context word. The tagger reads each character with its neighbours (a
dilated convolution sees seven characters either side) and jieba's segmentation of it (where the
character sits in its word, and the word's dictionary flag: ``nr``, ``ns``, ``nt`` ... or unknown),
and tags it BIO over PERSON, LOCATION and ORGANIZATION.

It was trained by ``bench/train_zh_ner.py`` on the development set's zh **train** split (and the
rest of GSD's published training split, same source and licence), chosen on dev; its card is
``data/zh_ner/README.md`` (data, licences, hyperparameters, dev figures). What ships is
``data/zh_ner/tagger.safetensors`` (fp16 weights) and ``data/zh_ner/vocab.json`` (its characters),
both checked against the sha256 pinned here before anything is read (the check is the English
tagger's, ``en_model.verified``); a mismatch raises ``ChineseModelError`` naming the file.

Inference is numpy only (no torch on the web image): table lookups for the first convolution and
two matrix products per record, about 250 µs for a 44-character record on one core. The
segmentation it reads is the one ``ChineseEntityRecognizer`` has already made of the same text
(``zh_segmenter.segment`` keeps the last few), and that recognizer's PERSON and LOCATION spans are
vetted with the same probabilities (``agreement``). ``settings.DESENSITIZE_ZH_MODEL`` off turns
both off.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from pathlib import Path
from typing import Any, Final

import numpy as np

from custody.language import HAN_CLASS
from custody.recognizers.base import Candidate, Recognizer, TextView
from custody.recognizers.en_model import EnglishModelError, verified
from custody.recognizers.zh_segmenter import Word, segment

DATA_DIR: Final = Path(__file__).resolve().parent / "data" / "zh_ner"
WEIGHTS_FILE: Final = "tagger.safetensors"
VOCAB_FILE: Final = "vocab.json"
WEIGHTS_SHA256: Final = "b3e586dcf8e0a10f9901bb5a36e6f1f09973ad799f698bb36627cbc536d0f6e1"
VOCAB_SHA256: Final = "3960dd3c027bd1d77755fb04d064d5d7216d9cdea814a539c05ef1e033a838c2"
TYPES: Final = ("PERSON", "LOCATION", "ORGANIZATION")
TAGS: Final = ("O", *(f"{p}-{t}" for t in TYPES for p in ("B", "I")))
SOURCE: Final = "ChineseModelRecognizer"
# Dilations of the three convolutions (width 3 each): the receptive field is 1 + 2 * (1 + 2 + 4).
DILATIONS: Final = (1, 2, 4)
# A character is tagged when the model gives its entity tags together at least this probability;
# a span is kept when its characters' mean is at least MIN_SPAN_SCORE (chosen on dev among 0.5-0.8:
# docs/desensitization.md).
DEFAULT_MIN_PROBABILITY: Final = 0.5
MIN_SPAN_SCORE: Final = 0.6
# The score a kept span gets: just above the rules' 0.6, so where a rule and the tagger disagree on
# the bounds of one name, the tagger's span is kept (on dev, +0.02 character recall over the rule
# winning, precision the same).
MODEL_SCORE: Final = 0.62
# Han n-grams a tagged span may not be: the train split's common words outside any entity (英雄,
# 阳光, 维生素 ...; built by bench/build_tagger_common_words.py). On dev: precision 0.717 -> 0.720,
# recall unchanged (fifth round, tagger acceptance, docs/desensitization.md).
COMMON_NGRAMS_FILE: Final = DATA_DIR.parent / "zh_common_ngrams.txt"

# Character classes, ids 0-4; the vocabulary's characters follow.
PAD, UNKNOWN, DIGIT, LATIN, SPACE = 0, 1, 2, 3, 4
FIRST_CHAR_ID: Final = 5
# jieba flags, coarsened: which kind of word a character sits in.
FLAG_CLASSES: Final = ("", "nr", "ns", "nt", "nz", "n", "v", "other", "nonhan")
POSITIONS: Final = ("B", "M", "E", "S")
SEGMENT_FEATURES: Final = 1 + len(FLAG_CLASSES) * len(POSITIONS)


class ChineseModelError(EnglishModelError):
    """The Chinese tagger cannot be loaded: a file missing or failing its pinned hash."""


# A character of the basic CJK block, the test ``flag_class`` makes (one regular-expression search
# per word instead of a Python loop over its characters).
_BASIC_HAN: Final = re.compile("[\u4e00-\u9fff]")


def flag_class(word: Word) -> int:
    """The coarse class of a segmented word (index into ``FLAG_CLASSES``)."""
    if _BASIC_HAN.search(word.text) is None:
        return 8
    return _flag_kind(word.flag)


@functools.cache
def _flag_kind(flag: str) -> int:
    """The class of a word with a Han character, by its flag (jieba's flags are a few dozen)."""
    if not flag:
        return 0
    if flag.startswith("nr"):
        return 1
    if flag in ("ns", "nt", "nz"):
        return FLAG_CLASSES.index(flag)
    if flag.startswith("n"):
        return 5
    if flag.startswith("v"):
        return 6
    return 7


_CLASSES: Final = len(FLAG_CLASSES)


def segment_features(text: str, words: list[Word]) -> np.ndarray:
    """Each character's segmentation feature: 1 + position-in-word * classes + flag class."""
    features = [0] * len(text)
    for w in words:
        kind = flag_class(w)
        start, end = w.start, w.end
        if end - start == 1:
            features[start] = 1 + 3 * _CLASSES + kind
            continue
        features[start] = 1 + kind
        if end - start > 2:
            features[start + 1 : end - 1] = [1 + _CLASSES + kind] * (end - start - 2)
        features[end - 1] = 1 + 2 * _CLASSES + kind
    return np.array(features, dtype=np.int64)


def char_class(ch: str) -> int:
    """The id of a character outside the vocabulary."""
    if ch.isdigit():
        return DIGIT
    if ch.isascii() and ch.isalpha():
        return LATIN
    if ch.isspace():
        return SPACE
    return UNKNOWN


def char_ids(text: str, vocabulary: dict[str, int]) -> np.ndarray:
    """Each character's id: its vocabulary id, else its class."""
    ids = list(map(vocabulary.get, text))
    if None in ids:
        ids = [i if i is not None else char_class(ch) for i, ch in zip(ids, text, strict=True)]
    return np.array(ids, dtype=np.int64)


def _openblas_threads() -> tuple[Any, Any] | None:
    """numpy's OpenBLAS thread getter and setter, or None where numpy is built without OpenBLAS."""
    import ctypes
    import glob

    libs = Path(np.__file__).resolve().parent.parent / "numpy.libs"
    for path in sorted(glob.glob(str(libs / "*openblas*"))):
        lib = ctypes.CDLL(path)
        for suffix in ("64_", ""):
            for prefix in ("scipy_openblas", "openblas"):
                getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                if getter is not None and setter is not None:
                    return getter, setter
    return None


class _OneBlasThread:
    """Run the tagger's small products on one BLAS thread: OpenBLAS otherwise spreads a 50-row product
    over every core and spins them (50 times the CPU on the shared machine); the desensitizer already
    runs one process per core. The previous thread count is restored after each record."""

    def __init__(self) -> None:
        self.calls = _openblas_threads()

    def run(self, function: Any, *args: Any) -> Any:
        if self.calls is None:
            return function(*args)
        previous = self.calls[0]()
        if previous == 1:
            return function(*args)
        self.calls[1](1)
        try:
            return function(*args)
        finally:
            self.calls[1](previous)


def _conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, dilation: int) -> np.ndarray:
    """Width-3 dilated convolution over the rows of ``x`` (zero padding): ``weight`` is [3*in, out].

    The product reads ``[x shifted down, x, x shifted up]`` side by side, written straight into one
    array (no padded copy to slice): the same matrix, so the same product, bit for bit.
    """
    rows, width = x.shape
    stacked = np.zeros((rows, 3 * width), dtype=x.dtype)
    stacked[dilation:, :width] = x[: rows - dilation] if rows > dilation else x[:0]
    stacked[:, width : 2 * width] = x
    stacked[: max(rows - dilation, 0), 2 * width :] = x[dilation:]
    return stacked @ weight + bias


class ChineseTagger:
    """The loaded tagger: ``probabilities(text, words)`` is [characters, tags].

    :raises ChineseModelError: when a file is missing or fails its pinned hash.
    """

    def __init__(
        self,
        data_dir: Path = DATA_DIR,
        *,
        weights_sha256: str | None = None,
        vocab_sha256: str | None = None,
    ) -> None:
        from safetensors.numpy import load_file

        try:
            weights_path = verified(
                data_dir / WEIGHTS_FILE, weights_sha256 or WEIGHTS_SHA256, "the Chinese tagger's weights"
            )
            vocab_path = verified(
                data_dir / VOCAB_FILE, vocab_sha256 or VOCAB_SHA256, "the Chinese tagger's vocabulary"
            )
        except EnglishModelError as error:
            raise ChineseModelError(str(error)) from None
        characters = json.loads(vocab_path.read_text(encoding="utf-8"))["characters"]
        self.vocabulary = {ch: FIRST_CHAR_ID + i for i, ch in enumerate(characters)}
        weights = {k: v.astype(np.float32) for k, v in load_file(str(weights_path)).items()}
        self.chars = weights["chars"]
        self.segments = weights["segments"]
        self.convs = [
            (weights[f"conv{i}.weight"], weights[f"conv{i}.bias"], d) for i, d in enumerate(DILATIONS)
        ]
        self.head = (weights["head.weight"], weights["head.bias"])
        self._one_thread = _OneBlasThread()
        # The first convolution reads embeddings only, so its product with each embedding is a table
        # computed once here ([3, characters, hidden] and [3, segment features, hidden]): a record then
        # costs three lookups a position instead of its largest matrix product.
        first = self.convs[0][0].reshape(3, -1, self.convs[0][0].shape[1])
        width = self.chars.shape[1]
        self.char_tables = np.stack([self.chars @ first[k, :width] for k in range(3)])
        self.segment_tables = np.stack([self.segments @ first[k, width:] for k in range(3)])
        self._char_rows = np.ascontiguousarray(self.char_tables.transpose(1, 0, 2))
        self._segment_rows = np.ascontiguousarray(self.segment_tables.transpose(1, 0, 2))
        if self.chars.shape[0] != FIRST_CHAR_ID + len(characters) or self.head[0].shape[1] != len(TAGS):
            raise ChineseModelError("the Chinese tagger's weights do not match its vocabulary and tags")

    def probabilities(self, text: str, words: list[Word]) -> np.ndarray:
        """The tag distribution of each character of ``text`` ([len(text), len(TAGS)])."""
        result: np.ndarray = self._one_thread.run(self._probabilities, text, words)
        return result

    def _probabilities(self, text: str, words: list[Word]) -> np.ndarray:
        chars = char_ids(text, self.vocabulary)
        segments = segment_features(text, words)
        # The first convolution (dilation 1) from the tables: position t reads t-1, t and t+1.
        # The tables are kept [rows, 3, hidden]: a lookup takes whole contiguous rows.
        parts = self._char_rows[chars] + self._segment_rows[segments]
        h = parts[:, 1] + self.convs[0][1]
        h[1:] += parts[:-1, 0]
        h[:-1] += parts[1:, 2]
        h = np.maximum(h, 0.0)
        for weight, bias, dilation in self.convs[1:]:
            h = np.maximum(_conv(h, weight, bias, dilation), 0.0) + h
        logits = h @ self.head[0] + self.head[1]
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        result: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
        return result

    def tag(
        self,
        text: str,
        words: list[Word],
        *,
        min_probability: float = DEFAULT_MIN_PROBABILITY,
        min_score: float = MIN_SPAN_SCORE,
    ) -> list[tuple[int, int, str, float]]:
        """The spans the model tags: ``(start, end, type, mean probability)``."""
        return decode(self.probabilities(text, words), min_probability, min_score)


def decode(
    probabilities: np.ndarray, min_probability: float, min_score: float
) -> list[tuple[int, int, str, float]]:
    """Runs of tagged characters of one type; a B stronger than its I opens a new span."""
    entity = 1.0 - probabilities[:, 0]
    pairs = probabilities[:, 1:].reshape(len(probabilities), len(TYPES), 2)
    kinds = pairs.sum(axis=2).argmax(axis=1)
    begins = pairs[np.arange(len(kinds)), kinds, 0] > pairs[np.arange(len(kinds)), kinds, 1]
    # Python lists for the loop (a numpy scalar per character costs more than the rest of it); the
    # comparison with ``min_probability`` stays numpy's, in float32.
    tagged = (entity >= min_probability).tolist()
    kind_list = kinds.tolist()
    begin_list = begins.tolist()
    spans: list[tuple[int, int, str, float]] = []
    start = -1
    for position in range(len(tagged) + 1):
        inside = position < len(tagged) and tagged[position]
        opens = inside and (start < 0 or begin_list[position] or kind_list[position] != kind_list[start])
        if start >= 0 and (not inside or opens):
            score = float(entity[start:position].mean())
            if score >= min_score:
                spans.append((start, position, TYPES[kind_list[start]], score))
            start = -1
        if opens:
            start = position
    return spans


_LOCK = threading.Lock()
_STATE: dict[str, Any] = {}


def tagger() -> ChineseTagger:
    """This process's tagger, loaded on first use."""
    loaded = _STATE.get("tagger")
    if loaded is None:
        with _LOCK:
            loaded = _STATE.get("tagger")
            if loaded is None:
                loaded = _STATE["tagger"] = ChineseTagger()
    return loaded


# What a tagged span may hold: Han characters, digits (长安路88号, 7天酒店) and the middle dot of
# transliterated names. Latin text in a Chinese record is the English stages' (the tagger knows
# Latin letters only as a class).
_HAN_RUN: Final = re.compile(f"[{HAN_CLASS}·0-9０-９]+")
_HAN: Final = re.compile(f"[{HAN_CLASS}]")


@functools.cache
def common_ngrams() -> frozenset[str]:
    """The n-grams of ``data/zh_common_ngrams.txt`` (``#`` lines are its source note)."""
    lines = COMMON_NGRAMS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(g.strip() for g in lines if g.strip() and not g.startswith("#"))


def accepted(value: str) -> bool:
    """Whether a tagged run (``_han_runs``) is kept: not one of the train split's common n-grams."""
    return value not in common_ngrams()


def _han_runs(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """The parts of a tagged span that can be a name: runs of Han characters and digits (a middle
    dot inside) with a Han character, two characters at least (one-character names and places are
    34 of 3,000 on the train split, and most one-character tags are the tagger's noise)."""
    return [
        (m.start(), m.end())
        for m in _HAN_RUN.finditer(text, start, end)
        if m.end() - m.start() >= 2 and m.group().strip("·") == m.group() and _HAN.search(m.group())
    ]


_RECENT = threading.local()
_RECENT_SIZE = 4


def enabled() -> bool:
    """Whether the tagger runs: ``settings.DESENSITIZE_ZH_MODEL`` (on where Django is not set up)."""
    from django.conf import settings

    return not settings.configured or bool(getattr(settings, "DESENSITIZE_ZH_MODEL", True))


def entity_probabilities(text: str) -> np.ndarray:
    """Each character's tag distribution under the tagger, for the last few texts read (the
    tagger's recognizer and the rules it vets, ``zh_entities``, read the same record)."""
    recent: dict[str, np.ndarray] | None = getattr(_RECENT, "probabilities", None)
    if recent is None:
        recent = _RECENT.probabilities = {}
    found = recent.get(text)
    if found is None:
        found = tagger().probabilities(text, segment(text))
        if len(recent) >= _RECENT_SIZE:
            del recent[next(iter(recent))]
        recent[text] = found
    return found


def agreement(text: str, start: int, end: int) -> float:
    """The tagger's mean entity probability over ``text[start:end]`` (how much it agrees a rule's span
    is a name, place or organisation)."""
    probabilities = entity_probabilities(text)
    return float(1.0 - probabilities[start:end, 0].mean()) if end > start else 0.0


# Time words whose first character also ends given names (张伟明, 李晓今): a tagged name of three
# characters or more that ends in one of them, the word read on ("张伟明天下午来"), gives it back;
# so does one that took the reporting verb after it ("张总说下周一开会"; no given name ends in 说).
# Tenth round: no record of train or dev changes; a wider set of function characters (的, 了, 是 ...)
# cost train a name.
_TIME_WORD_ENDS: Final = {"明": "天日年早晚", "今": "天日年早晚", "昨": "天日晚", "前": "天", "后": "天"}
_TIME_WORDS: Final = frozenset(first + second for first, ends in _TIME_WORD_ENDS.items() for second in ends)


def _name_end(text: str, kind: str, start: int, end: int) -> int:
    """Where a tagged span ends once a time word it cut into, or a 说 it took, is given back."""
    if (
        kind == "PERSON"
        and end - start >= 3
        and (text[end - 1 : end + 1] in _TIME_WORDS or text[end - 1] == "说")
    ):
        return end - 1
    return end


class ChineseModelRecognizer(Recognizer):
    """Chinese PERSON / LOCATION / ORGANIZATION spans from the character tagger (``ChineseTagger``)."""

    name = SOURCE
    entities = TYPES
    languages = frozenset({"zh"})
    max_score = MODEL_SCORE

    def __init__(
        self,
        types: tuple[str, ...] = TYPES,
        score: float = MODEL_SCORE,
        min_probability: float = DEFAULT_MIN_PROBABILITY,
        min_span_score: float = MIN_SPAN_SCORE,
    ) -> None:
        self.types = frozenset(types)
        self.score = score
        self.min_probability = min_probability
        self.min_span_score = min_span_score

    def applies(self, view: TextView) -> bool:
        return view.has_han and enabled()

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        text = view.text
        return [
            Candidate(run_start, run_end, kind, self.score, self.name)
            for start, end, kind, _ in decode(
                entity_probabilities(text), self.min_probability, self.min_span_score
            )
            if kind in self.types
            for run_start, run_end in _han_runs(text, start, _name_end(text, kind, start, end))
            if accepted(text[run_start:run_end])
        ]
