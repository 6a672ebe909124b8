"""Per-record script detection: which text the English NER model may see.

Sealroom only has an English NER model offline, so what matters is the
script, not the language proper: Latin text goes to the English model, Han
text to the Chinese recognizers (validated patterns and a surname list), and
nothing else goes to NER at all. Pure Python and cheap: the ingest pipeline
calls it on every record.
"""

from __future__ import annotations

import re
from typing import Final, Literal

Language = Literal["en", "zh", "mixed", "other"]
LANGUAGES: Final[tuple[str, ...]] = ("en", "zh", "mixed", "other")

# CJK Unified Ideographs (with extension A, the compatibility block and the
# supplementary planes' extensions B onwards).
HAN_CLASS: Final = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_HAN = re.compile(f"[{HAN_CLASS}]")
_LATIN_LETTER = re.compile("[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff]")
_LATIN_WORD = re.compile("[A-Za-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u024f\u1e00-\u1eff]{2,}")
_ASCII_LETTER = re.compile("[A-Za-z]")
_ANY_LETTER = re.compile(r"[^\W\d_]")
# Everything the English model must not see in a mixed record: Han, kana,
# hangul, CJK punctuation and full-width forms. Blanked to spaces of the same
# length, so offsets into the NER text are offsets into the record.
_CJK_ANY = re.compile(
    "[\u2e80-\u2fff\u3000-\u9fff\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef"
    "\U00020000-\U0003134f]+"
)


def detect_language(text: str) -> Language:
    """Say which script family a record is written in: ``en``, ``zh``, ``mixed`` or ``other``.

    ``en``: Latin letters and no Han. ``zh``: Han, and no Latin word of two
    letters or more. ``mixed``: Han and Latin words (the English model then
    sees only the Latin runs). ``other``: no Han, and Latin letters are not
    the main script (Cyrillic, Arabic, kana, digits only, empty).
    """
    if text.isascii():
        return "en" if _ASCII_LETTER.search(text) else "other"
    han = len(_HAN.findall(text))
    latin = len(_LATIN_LETTER.findall(text))
    if han:
        letters = len(_ANY_LETTER.findall(text))
        # Japanese and Korean mix Han with kana or hangul: not Chinese.
        if letters - han - latin > han:
            return "other"
        return "mixed" if _LATIN_WORD.search(text) else "zh"
    if not latin:
        return "other"
    letters = len(_ANY_LETTER.findall(text))
    return "en" if latin * 2 >= letters else "other"


def has_han(text: str) -> bool:
    """Say whether the text holds at least one Han character."""
    return not text.isascii() and _HAN.search(text) is not None


def has_letter(text: str) -> bool:
    """Whether ``text`` holds a letter of any script (not a digit, not ``_``)."""
    return _ANY_LETTER.search(text) is not None


def latin_view(text: str) -> str:
    """Return the text with every CJK character blanked to a space (same length, same offsets)."""
    if text.isascii():
        return text
    return _CJK_ANY.sub(lambda m: " " * len(m.group()), text)


def cjk_free_segments(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Split ``text[start:end]`` at CJK characters, returning the stripped non-empty pieces."""
    piece = text[start:end]
    if piece.isascii() or _CJK_ANY.search(piece) is None:
        return [(start, end)]
    pieces = []
    cursor = start
    for match in _CJK_ANY.finditer(piece):
        pieces.append((cursor, start + match.start()))
        cursor = start + match.end()
    pieces.append((cursor, end))
    out = []
    for s, e in pieces:
        while s < e and text[s].isspace():
            s += 1
        while e > s and text[e - 1].isspace():
            e -= 1
        if e > s and _ANY_LETTER.search(text, s, e):
            out.append((s, e))
    return out
