"""Chinese word segmentation with part-of-speech flags: jieba's dictionary, loaded once per process.

jieba ships its dictionary (about 350,000 words with frequencies and flags)
inside its package, so nothing is downloaded. Two of its habits are avoided:

- it caches the parsed dictionary as a pickle in the system temporary
  directory; here the dictionary is parsed in memory and no file is written
  (about 2 s once per process, the price of writing nothing);
- ``jieba.posseg`` tags unknown words with a character-level HMM that is
  fifteen times slower than segmentation itself; here words are cut with the
  plain segmenter (its HMM still joins unknown names into words) and flagged
  from the dictionary, leaving unknown words flagged ``""`` for the
  recognizers to judge.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final, NamedTuple

if TYPE_CHECKING:
    from jieba import Tokenizer  # type: ignore[import-untyped]

_LOCK = threading.Lock()
_STATE: dict[str, object] = {}


class Word(NamedTuple):
    """One segmented word: offsets into the text, the word, its dictionary flag ("" when unknown)."""

    start: int
    end: int
    text: str
    flag: str


def _load() -> tuple[Tokenizer, dict[str, str]]:
    import jieba  # heavy: only inside the engine
    from jieba.posseg import POSTokenizer  # type: ignore[import-untyped]

    logging.getLogger("jieba").setLevel(logging.WARNING)
    tokenizer = jieba.Tokenizer()
    # What Tokenizer.initialize does, minus reading and writing its pickle cache.
    tokenizer.FREQ, tokenizer.total = tokenizer.gen_pfdict(tokenizer.get_dict_file())
    tokenizer.initialized = True
    tags = POSTokenizer(tokenizer).word_tag_tab
    return tokenizer, tags


def segmenter() -> tuple[Tokenizer, dict[str, str]]:
    """Return this process's tokenizer and word-flag table, loading them on first use."""
    loaded = _STATE.get("segmenter")
    if loaded is None:
        with _LOCK:
            loaded = _STATE.get("segmenter")
            if loaded is None:
                loaded = _STATE["segmenter"] = _load()
    return loaded  # type: ignore[return-value]


# The last texts cut, per thread: the entity recognizer and the tagger (zh_model.py) read the same
# segmentation of one record, which is cut once.
_RECENT = threading.local()
_RECENT_SIZE = 4


def segment(text: str) -> list[Word]:
    """Cut the text into words with their dictionary flags (nr person, ns place, nt organisation).

    The caller must not change the returned list (the last few are shared).
    """
    recent: dict[str, list[Word]] | None = getattr(_RECENT, "words", None)
    if recent is None:
        recent = _RECENT.words = {}
    words = recent.get(text)
    if words is None:
        words = _cut(text)
        if len(recent) >= _RECENT_SIZE:
            del recent[next(iter(recent))]
        recent[text] = words
    return words


def _cut(text: str) -> list[Word]:
    tokenizer, tags = segmenter()
    words = []
    pos = 0
    for piece in _pieces(text, tokenizer):
        end = pos + len(piece)
        words.append(Word(pos, end, piece, tags.get(piece, "")))
        pos = end
    return words


# jieba's own ``Tokenizer.cut(text, HMM=True)``, the same words from the same dictionary, cheaper
# (sixth round, docs/desensitization.md): its ``get_DAG`` and ``calc`` are one backward pass here,
# without the DAG dictionary, the generator of tuples ``max`` reads, or a ``log`` per edge (each
# word's ``log(frequency) - log(total)`` is computed once per process and kept). The scores are
# the same floats, added in the same order, and ties go to the longer word as in jieba's ``max``
# over ``(score, end)``: ``tests/custody/test_recognizers_zh.py`` compares both on the dev split.
_LOG_PROBABILITY: dict[str, float] = {}
# The value kept for a dictionary entry of frequency 0 (a prefix of longer words, not a word):
# a log probability is never above 0.
_PREFIX_ONLY: Final = 1.0


def _log_probability(word: str, tokenizer: Tokenizer) -> float:
    """``log(FREQ[word]) - log(total)`` as jieba's ``calc`` computes it, or ``_PREFIX_ONLY`` (cached:
    only dictionary entries are kept, so the cache never outgrows the dictionary)."""
    frequency = tokenizer.FREQ[word]
    value = _LOG_PROBABILITY[word] = (
        math.log(frequency) - math.log(tokenizer.total) if frequency else _PREFIX_ONLY
    )
    return value


def _route(sentence: str, tokenizer: Tokenizer) -> list[int]:
    """For each position, the end (exclusive) of the word jieba's best path takes there."""
    freq = tokenizer.FREQ
    cached = _LOG_PROBABILITY
    # A character that starts no word: ``log(FREQ.get(char) or 1) - log(total)`` is ``0.0 - log(total)``.
    alone = math.log(1) - math.log(tokenizer.total)
    n = len(sentence)
    scores = [0.0] * (n + 1)
    ends = [0] * (n + 1)
    for start in range(n - 1, -1, -1):
        best = 0.0
        best_end = -1
        i = start
        fragment = sentence[start]
        while i < n:
            logp = cached.get(fragment)
            if logp is None:
                if fragment not in freq:
                    break
                logp = _log_probability(fragment, tokenizer)
            if logp != _PREFIX_ONLY:
                score = logp + scores[i + 1]
                # jieba takes ``max`` over ``(score, end)``: on a tie, the later end.
                if best_end < 0 or score >= best:
                    best, best_end = score, i
            i += 1
            fragment = sentence[start : i + 1]
        if best_end < 0:
            best, best_end = alone + scores[start + 1], start
        scores[start] = best
        ends[start] = best_end + 1
    return ends


def _unknown(buf: str, tokenizer: Tokenizer) -> Iterator[str]:
    """What jieba's ``__cut_DAG`` yields for a run of single characters."""
    if len(buf) == 1:
        yield buf
    elif not tokenizer.FREQ.get(buf):
        yield from _hmm_cut(buf)
    else:
        yield from buf


def _hmm_cut(sentence: str) -> Iterator[str]:
    """jieba's ``finalseg.cut``: unknown runs cut by its character HMM (B, M, E, S tags)."""
    from jieba import finalseg

    for block in finalseg.re_han.split(sentence):
        if finalseg.re_han.match(block):
            tags = _viterbi(block)
            begin = following = 0
            for i, char in enumerate(block):
                tag = tags[i]
                if tag == "B":
                    begin = i
                elif tag == "E":
                    yield from _unless_split(block[begin : i + 1], finalseg.Force_Split_Words)
                    following = i + 1
                elif tag == "S":
                    yield from _unless_split(char, finalseg.Force_Split_Words)
                    following = i + 1
            if following < len(block):
                yield from _unless_split(block[following:], finalseg.Force_Split_Words)
        else:
            yield from (piece for piece in finalseg.re_skip.split(block) if piece)


def _unless_split(word: str, force_split: set[str]) -> Iterator[str]:
    if word in force_split:
        yield from word
    else:
        yield word


@functools.cache
def _hmm_table() -> tuple[tuple[str, dict[str, float], str, float, str, float], ...]:
    """Per tag: its emission table, and its two possible previous tags with their transition
    log probabilities (jieba's ``PrevStatus`` order), read once per process."""
    from jieba.finalseg import MIN_FLOAT, PrevStatus, emit_P, trans_P  # type: ignore[import-untyped]

    return tuple(
        (
            tag,
            emit_P[tag],
            PrevStatus[tag][0],
            trans_P[PrevStatus[tag][0]].get(tag, MIN_FLOAT),
            PrevStatus[tag][1],
            trans_P[PrevStatus[tag][1]].get(tag, MIN_FLOAT),
        )
        for tag in "BMES"
    )


def _viterbi(obs: str) -> list[str]:
    """jieba's ``finalseg.viterbi`` over ``BMES``: the same sums in the same order and the same ties
    (``max`` over ``(probability, previous tag)``: the later tag wins a tie), with back-pointers
    instead of a copied path per tag and position."""
    from jieba.finalseg import MIN_FLOAT, emit_P, start_P

    table = _hmm_table()
    scores = {tag: start_P[tag] + emit_P[tag].get(obs[0], MIN_FLOAT) for tag in "BMES"}
    back: list[dict[str, str]] = []
    for char in obs[1:]:
        now: dict[str, float] = {}
        pointers: dict[str, str] = {}
        for tag, emit, first, first_p, second, second_p in table:
            em = emit.get(char, MIN_FLOAT)
            a = scores[first] + first_p + em
            b = scores[second] + second_p + em
            if b > a or (b == a and second > first):
                now[tag], pointers[tag] = b, second
            else:
                now[tag], pointers[tag] = a, first
        scores = now
        back.append(pointers)
    tag = "S" if scores["S"] >= scores["E"] else "E"
    tags = [tag]
    for pointers in reversed(back):
        tag = pointers[tag]
        tags.append(tag)
    tags.reverse()
    return tags


def _cut_block(sentence: str, tokenizer: Tokenizer) -> Iterator[str]:
    """jieba's ``Tokenizer.__cut_DAG`` (HMM on) over one block of Han, Latin and digits."""
    ends = _route(sentence, tokenizer)
    x = 0
    buf = ""
    n = len(sentence)
    while x < n:
        y = ends[x]
        if y - x == 1:
            buf += sentence[x]
        else:
            if buf:
                yield from _unknown(buf, tokenizer)
                buf = ""
            yield sentence[x:y]
        x = y
    if buf:
        yield from _unknown(buf, tokenizer)


def _pieces(text: str, tokenizer: Tokenizer) -> Iterator[str]:
    """jieba's ``Tokenizer.cut(text, HMM=True)``: its blocks, cut as it cuts them."""
    from jieba import re_han_default, re_skip_default

    for block in re_han_default.split(text):
        if not block:
            continue
        if re_han_default.match(block):
            yield from _cut_block(block, tokenizer)
        else:
            for piece in re_skip_default.split(block):
                if re_skip_default.match(piece):
                    yield piece
                else:
                    yield from piece


def word_flag(word: str) -> str:
    """Return a word's dictionary flag, or "" when the dictionary does not know it."""
    return segmenter()[1].get(word, "")


def word_frequency(word: str) -> int:
    """Return a word's count in jieba's dictionary (0 when unknown)."""
    return segmenter()[0].FREQ.get(word) or 0
