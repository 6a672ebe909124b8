"""Dates written with a month name, and years after a preposition (English).

With the English tagger on, spaCy's NER read nothing but dates, and only in sentences holding a
digit: a pass of the whole model for dates a grammar can read. This recognizer replaces that pass
(the engine skips spaCy unless a policy asks for nationalities, ``NRP``):

- a month name (``January``, ``Jan``, ``Sept.``) with a day, a year or both, in either order and
  with an optional weekday before it: ``December 15, 2014``, ``January 08 , 2015``, ``Monday,
  February 2nd``, ``the 5th of May``, ``15 Dec 2014``, ``July 2010``, ``Sept '09``;
- a year (1800-2099) after a preposition or an article: ``founded in 1977``, ``since 1990``,
  ``a 1973 film``, ``the Act of 2002``.

Weekdays, months and relative days alone are not dates (docs/desensitization.md). ``May`` and
``March`` written in lowercase are verbs; those need a capital. Scored as spaCy's dates were (0.85).
"""

from __future__ import annotations

import re
from typing import Final

from custody.recognizers.base import Candidate, Recognizer, TextView

WORD_DATE_SCORE: Final = 0.85
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DAY = r"(?:3[01]|[12]\d|0?[1-9])(?:st|nd|rd|th)?"
_YEAR = r"(?:(?:1[89]|20)\d\d|['’] ?\d\d)"
_WEEKDAY = r"(?:(?:mon|tue|tues|wed|wednes|thu|thur|thurs|fri|sat|satur|sun)(?:day)?\.?[ \t]*,?[ \t]*)"
_SEP = r"[ \t]*,?[ \t]*"
_WORD_DATE = re.compile(
    rf"(?<![\w'’])(?:{_WEEKDAY})?(?:"
    # December 15, 2014 / Oct 22 / July 4th , 2015
    rf"(?P<m1>{_MONTH})[ \t]*{_DAY}(?![\d:])(?:{_SEP}{_YEAR})?"
    # 15 December 2014 / the 5th of May, 2014
    rf"|(?:the[ \t]+)?{_DAY}(?:[ \t]+of)?[ \t]+(?P<m2>{_MONTH})(?:{_SEP}{_YEAR})?"
    # July 2010 / Sept '09
    rf"|(?P<m3>{_MONTH})[ \t]*,?[ \t]*{_YEAR}"
    rf")(?![\w'’])",
    re.IGNORECASE,
)
_YEAR_AFTER_WORD = re.compile(
    r"\b(?:in|of|since|from|until|till|by|a|an|year|circa|around|before|after|during|throughout"
    r"|early|late|mid|spring|summer|autumn|fall|winter)[ \t]"
    r"(?P<year>(?:1[89]|20)\d\d)(?![\w%$€£.,]\d|[\w%])",
    re.IGNORECASE,
)
_LOWERCASE_VERBS: Final = frozenset({"may", "march", "mar"})


class WordDateRecognizer(Recognizer):
    """Dates with a month name (and a day or a year), and years after a preposition."""

    name = "WordDateRecognizer"
    entities = ("DATE_TIME",)
    languages = frozenset({"en"})
    max_score = WORD_DATE_SCORE

    def applies(self, view: TextView) -> bool:
        return view.english and view.has_digit

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        text = view.text
        found = []
        for m in _WORD_DATE.finditer(text):
            month = m.group("m1") or m.group("m2") or m.group("m3") or ""
            if month.rstrip(".") in _LOWERCASE_VERBS:
                continue
            found.append(Candidate(m.start(), m.end(), "DATE_TIME", WORD_DATE_SCORE, self.name))
        for m in _YEAR_AFTER_WORD.finditer(text):
            found.append(Candidate(m.start("year"), m.end("year"), "DATE_TIME", WORD_DATE_SCORE, self.name))
        return found
