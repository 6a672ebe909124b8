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

import logging
import threading
from typing import TYPE_CHECKING, NamedTuple

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
    for piece in tokenizer.cut(text, HMM=True):
        end = pos + len(piece)
        words.append(Word(pos, end, piece, tags.get(piece, "")))
        pos = end
    return words


def word_flag(word: str) -> str:
    """Return a word's dictionary flag, or "" when the dictionary does not know it."""
    return segmenter()[1].get(word, "")


def word_frequency(word: str) -> int:
    """Return a word's count in jieba's dictionary (0 when unknown)."""
    return segmenter()[0].FREQ.get(word) or 0
