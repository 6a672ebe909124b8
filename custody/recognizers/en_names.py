"""English personal names the NER model misses: handles, titles, cue words, a first-name gazetteer.

The small English model finds capitalised names in edited prose; in tweets,
chat and lowercase text it misses most of them. These stages are exact and
cheap (compiled patterns and set look-ups) and run on every Latin record:

- ``@handles`` (``@jack_smith``, ``@priya.raman``; not ``@example.com``): an
  account names its holder: PERSON, 0.9;
- a title and what follows (``Mr. Smith``, ``Dr Helena Shaw``, ``mrs jones``):
  the name after the title, 0.85 (0.7 for one lowercase word);
- a cue that introduces a name (``my name is``, ``call me``, ``named``,
  ``Dear``, ``Hi``, ``thanks``): the capitalised words after it, 0.7; a
  lowercase word after it only when it is a known first name, or after the
  strongest cues (``my name is``, ``call me``, ``named``);
- a speaker introducing themself (``this is``, ``I'm``, ``it's``) and two or
  three capitalised words after it, none a stop word or a word the train
  split uses often outside names (``I'm In Love``, ``its Finally Friday``
  are not names): 0.6; so are one or two such words between a thank-you and
  the end of the sentence (``Thanks so much, Ines!``), and one or two after
  a greeting and before a comma (``Hey Mo,``); one lowercase word after a
  thank-you that ends the record (``thx, rahul``), 0.6;
- the words of a ``first.last`` e-mail address wherever they stand in the
  record (``"Okafor, Chidi" <chidi.okafor@example.org>``), 0.6;
- a known first name (the gazetteer) written capitalised, with the
  capitalised word after it as a surname: 0.6; first names that are also
  common English words (``Will``, ``May``, ``Grace``) need a surname or a cue.

The gazetteer is Faker's ``en_US`` first-name list (the US Social Security
Administration's popular baby names; Faker is MIT-licensed and already a
dependency, so nothing new is shipped or downloaded).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final

from custody.recognizers.base import Candidate, Recognizer, TextView, english_stop_words
from custody.recognizers.en_model import common_words
from custody.recognizers.offline import has_public_suffix

# A handle starts after white space or punctuation (not inside an e-mail
# address or a URL). Instagram, Slack and Reddit handles may hold dots
# ("@priya.raman"); a dotted one that ends in a public suffix is a host name
# ("@example.com", the URL stage's), not a handle (``HandleRecognizer.find``).
_HANDLE = re.compile(
    r"(?<![A-Za-z0-9_.@/#&])@([A-Za-z0-9_]{2,30}(?:\.[A-Za-z0-9_]+)*)(?![A-Za-z0-9_@])(?!\.[A-Za-z0-9])"
)
# A Reddit user ("u/throwaway_kat88", "/u/kat"): eleventh round, from a walk.
_REDDIT_USER = re.compile(r"(?<![\w/])/?u/([A-Za-z0-9_\-]{3,20})(?![\w/])")
# A chat log's nick after its timestamp ("[09:14] <jpark> anyone seen the logs?"; IRC, Matrix and
# Zulip exports): eleventh round, from a walk.
_CHAT_NICK = re.compile(
    r"(?:\[\d{1,2}:\d{2}(?::\d{2})?\]|\b\d{1,2}:\d{2}(?::\d{2})?)[ \t]*"
    r"<([A-Za-z_\[\]^`{|}][\w.\-\[\]^`{|}]{1,29})>"
)
_NAME_WORD = r"[A-Z][a-z'’\-]*[a-z](?:-[A-Z][a-z]+)?"
_INITIAL = r"[A-Z]\."
_SHORT_TITLES = "Mr|Mrs|Ms|Mx|Dr|Prof|Rev|Sgt|Capt|Det|Insp|Gov|Sen|Rep"
_LONG_TITLES = (
    "Miss|Mister|Doctor|Professor|Sir|Dame|Madam|Officer|Detective|Sergeant|Captain|Judge"
    "|Senator|Governor|President|Coach|Uncle|Auntie|Aunt|Nurse|Pastor|Father|Sister|Brother"
)
_TITLED = re.compile(rf"\b(?:{_SHORT_TITLES})\.?[ \t]+|\b(?:{_LONG_TITLES})[ \t]+")
# A title alone (what a title-and-name span keeps once the name is taken): any case, its dot optional.
_TITLE_ALONE = re.compile(rf"(?i:{_SHORT_TITLES})\.?|(?i:{_LONG_TITLES})")
_NAME_AFTER = re.compile(rf"(?:{_NAME_WORD}|{_INITIAL})(?:[ \t]+(?:{_NAME_WORD}|{_INITIAL})){{0,3}}")
_LOWER_WORD = re.compile(r"[a-z][a-z'\-]{1,20}\b")
_LOWER_TITLE = re.compile(r"(?<![A-Za-z])(?:mr|mrs|ms|dr|prof)\.?[ \t]+")
_STRONG_CUE = re.compile(
    r"\b(?:[Mm]y name(?: is|'s)|[Mm]y names|[Nn]ame:|[Nn]amed|[Cc]all me|[Cc]alls me|[Cc]alled me"
    r"|I am called|[Ii]t'?s me,?|[Ss]igned,?)[ \t]+"
)
_LOWER_AFTER = re.compile(r"[ \t]+[a-z]")
_WEAK_CUE = re.compile(
    r"(?:^|(?<=[\s(\"']))(?:[Dd]ear|[Hh]i|[Hh]ello|[Hh]ey|[Tt]hanks,|[Tt]hank you,|[Rr]egards,|[Ss]incerely,"
    r"|[Cc]heers,|[Ll]ove,|[Ii]nvite|[Ww]ith|[Mm]eet|[Aa]sk"
    r"|[Tt]ell|[Cc]all|[Tt]ext|[Mm]arried|[Dd]ating)[ \t]+"
)
# "Hello, this is Priya Raman.", "I'm Naomi Ryan": a first name and a surname (two or three
# capitalised words), each checked by _is_intro_word. One capitalised word after "I'm" is as often
# a mood in a title-case tweet as a name; the gazetteer takes known first names alone.
_INTRO_CUE = re.compile(
    rf"(?:^|(?<=[\s(\"'.,!?]))(?:[Tt]his is|[Ii]t'?s|[Ii]t’s|I'?m|I’m|I am)[ \t]+"
    rf"({_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{1,2}})\b"
)
# "Thanks so much, Ines!": one or two capitalised words between a thank-you and the end of the
# sentence address the reader by name (each checked by _is_intro_word: "Thanks, Everyone!" is not).
_THANKED = re.compile(
    rf"\b(?:[Tt]hanks|[Tt]hank you|[Tt]hx|[Cc]heers)(?: so much| again| a lot| very much)?,[ \t]+"
    rf"({_NAME_WORD}(?:[ \t]+{_NAME_WORD})?)[ \t]*(?=[!.?]|$)"
)
# "Hey Mo, the invoice is late.": a greeting, one or two capitalised words and a comma (or "!", ":")
# address the reader by name, a known first name or not (each word checked by _is_intro_word:
# "Hi Team," and "Dear Mam," are not names). The weak cue above takes only known first names.
_GREETED = re.compile(
    rf"(?:^|(?<=[\s(\"'.,!?]))(?:[Dd]ear|[Hh]i|[Hh]ello|[Hh]ey|[Hh]iya|[Mm]orning"
    rf"|[Gg]ood (?:morning|afternoon|evening))[ \t]+({_NAME_WORD}(?:[ \t]+{_NAME_WORD})?)[ \t]*(?=[,!:])"
)
# "thx, rahul": one lowercase word after a thank-you closes the record (a sign-off), unless it is a
# sign-off word itself (each word also checked by _is_intro_word). Tenth round, from a walk: no
# match in train or dev.
_THANKED_LOWER = re.compile(
    r"\b(?:[Tt]hanks|[Tt]hank you|[Tt]hx|[Cc]heers)(?: so much| again| a lot| very much)?,[ \t]+"
    r"([a-z][a-z'\-]{2,20})[ \t]*[!.]?[ \t]*$"
)
_SIGN_OFF_WORDS: Final = frozenset(
    {
        "bye",
        "appreciated",
        "tho",
        "btw",
        "xx",
        "xoxo",
        "fam",
        "hun",
        "hon",
        "mum",
        "bae",
        "ttyl",
        "cya",
        "later",
    }
)
# Words of an e-mail address's local part made of two parts or more ("chidi.okafor@…") name its
# holder wherever they stand in the record ('"Okafor, Chidi" <chidi.okafor@example.org>' left
# Chidi in clear). Tenth round, from a walk.
_EMAIL = re.compile(r"(?<![\w.+-])([A-Za-z][\w+-]*(?:\.[\w+-]+)+)@[\w-]+(?:\.[\w-]+)+")
_CAPITALISED = re.compile(r"\b[A-Z][a-z]{1,20}\b")
_SURNAME_AFTER = re.compile(rf"[ \t]+(?:{_INITIAL}[ \t]+)?({_NAME_WORD})")
# First names that are also ordinary English words, months or places: they
# need a surname or a cue before they count.
_AMBIGUOUS: Final = frozenset(
    [
        "will",
        "may",
        "june",
        "april",
        "august",
        "grace",
        "hope",
        "faith",
        "joy",
        "mark",
        "bill",
        "rose",
        "lily",
        "summer",
        "autumn",
        "dawn",
        "art",
        "pat",
        "sue",
        "don",
        "ray",
        "jack",
        "frank",
        "rob",
        "guy",
        "max",
        "van",
        "young",
        "king",
        "chase",
        "sky",
        "star",
        "ruby",
        "pearl",
        "iris",
        "ivy",
        "holly",
        "violet",
        "jade",
        "amber",
        "crystal",
        "page",
        "paige",
        "brook",
        "brooke",
        "river",
        "hunter",
        "mason",
        "carter",
        "parker",
        "taylor",
        "cooper",
        "tucker",
        "angel",
        "christian",
        "major",
        "miles",
        "rich",
        "lane",
        "reed",
        "dale",
        "glen",
        "sterling",
        "destiny",
        "harmony",
        "heaven",
        "genesis",
        "trinity",
        "unique",
        "precious",
        "marshall",
        "forrest",
        "penny",
        "sandy",
        "bob",
        "gene",
        "rod",
        "jean",
        "drew",
        "bud",
        "buck",
        "colt",
        "jordan",
        "georgia",
        "virginia",
        "carolina",
        "dakota",
        "austin",
        "dallas",
        "houston",
        "madison",
        "phoenix",
        "london",
        "paris",
        "sydney",
        "brooklyn",
        "china",
        "india",
        "kenya",
    ]
)


@lru_cache(maxsize=1)
def first_names() -> frozenset[str]:
    """Return the first-name gazetteer, lower-cased (Faker's en_US list, minus stop words)."""
    from faker.providers.person.en_US import Provider  # Faker is a dependency already

    stop = english_stop_words()
    names = {name.lower() for name in Provider.first_names}
    return frozenset(n for n in names if n not in stop and len(n) > 2)


# Capitalised words after a first name that are not its surname ("Lindsay Tonight", "Happy Harry
# Birthday", "Summer Friday Drink Specials"): days, months, times and occasions (fifth round, train
# split). The first name then stands alone, as any other.
_NOT_SURNAME_WORDS: Final = (
    "monday tuesday wednesday thursday friday saturday sunday january february march april may june "
    "july august september october november december today tonight tomorrow yesterday morning "
    "afternoon evening night weekend birthday day week christmas xmas halloween easter party show "
    "podcast live concert festival tour"
)
_NOT_SURNAMES: Final = frozenset(_NOT_SURNAME_WORDS.split())


def is_title(value: str) -> bool:
    """Whether ``value`` is a title alone (``Mr``, ``dr.``, ``Professor``), not a name."""
    return _TITLE_ALONE.fullmatch(value.strip()) is not None


# Whom a thank-you addresses when it is not a person's name.
_NOT_ADDRESSEES: Final = frozenset(
    {
        *("team", "all", "everyone", "everybody", "guys", "folks", "friends", "sir", "madam", "maam"),
        *("doc", "doctor", "boss", "mate", "man", "dude", "buddy", "bro", "sis", "babe", "love"),
        *("dear", "honey", "bud", "pal", "mam", "ma'am", "sweetie", "darling"),
    }
)


def _is_intro_word(word: str) -> bool:
    """Whether a word after an introduction cue or a thank-you can be part of a name: not a stop
    word, a number, a word the train split holds often outside names (en_model's common words) or
    a group or form of address ("Team", "Sir")."""
    lower = word.lower()
    return _is_name_word(word) and lower not in common_words() and lower not in _NOT_ADDRESSEES


def _is_name_word(word: str) -> bool:
    lower = word.lower()
    return lower not in english_stop_words() and not lower.isdigit()


class HandleRecognizer(Recognizer):
    """``@handles``, Reddit's ``u/`` users and chat-log nicks (``[09:14] <jpark>``): an account name
    identifies its holder."""

    name = "HandleRecognizer"
    entities = ("PERSON",)

    def applies(self, view: TextView) -> bool:
        return "@" in view.text or "<" in view.text or "u/" in view.text

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        return [
            Candidate(m.start(), m.end(), "PERSON", 0.9, self.name)
            for m in _HANDLE.finditer(view.text)
            if "." not in m.group(1) or not has_public_suffix(m.group(1))
        ] + [
            Candidate(m.start(1), m.end(1), "PERSON", 0.9, self.name)
            for pattern in (_CHAT_NICK, _REDDIT_USER)
            for m in pattern.finditer(view.text)
        ]


class EnglishNameRecognizer(Recognizer):
    """Names after titles and cue words, and capitalised known first names (with a surname)."""

    name = "EnglishNameRecognizer"
    entities = ("PERSON",)
    languages = frozenset({"en"})

    def applies(self, view: TextView) -> bool:
        return view.english

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        text = view.text
        found: list[Candidate] = []
        for m in _TITLED.finditer(text):
            name = _NAME_AFTER.match(text, m.end())
            if name and _is_name_word(name.group().split()[0]):
                found.append(Candidate(name.start(), name.end(), "PERSON", 0.85, self.name))
        for m in _LOWER_TITLE.finditer(text):
            word = _LOWER_WORD.match(text, m.end())
            if word and _is_name_word(word.group()):
                found.append(Candidate(word.start(), word.end(), "PERSON", 0.7, self.name))
        found.extend(self._after_cues(text))
        found.extend(self._gazetteer(text))
        found.extend(self._from_addresses(text))
        return found

    def _from_addresses(self, text: str) -> list[Candidate]:
        if "@" not in text:
            return []
        matches = list(_EMAIL.finditer(text))
        addresses = [(m.start(), m.end()) for m in matches]
        words = {
            part.lower()
            for m in matches
            for part in re.split(r"[._+-]", m.group(1))
            if len(part) >= 3 and part.isalpha() and _is_intro_word(part)
        }
        if not words:
            return []
        alternation = "|".join(map(re.escape, sorted(words)))
        return [
            Candidate(m.start(), m.end(), "PERSON", 0.6, self.name)
            for m in re.finditer(rf"(?<![\w@.])(?:{alternation})(?![\w@])", text, re.IGNORECASE)
            if not any(start <= m.start() < end for start, end in addresses)
        ]

    def _after_cues(self, text: str) -> list[Candidate]:
        found = []
        names = first_names()
        for strong, cue in ((True, _STRONG_CUE), (False, _WEAK_CUE)):
            for m in cue.finditer(text):
                name = _NAME_AFTER.match(text, m.end())
                if name and _is_name_word(name.group().split()[0]):
                    # "name: Build and test" labels a step, not a person: after the label form
                    # the line goes on in lower case (eleventh round).
                    if m.group().rstrip().endswith(":") and _LOWER_AFTER.match(text, name.end()):
                        continue
                    if strong or name.group().split()[0].lower() in names:
                        found.append(Candidate(name.start(), name.end(), "PERSON", 0.7, self.name))
                    continue
                word = _LOWER_WORD.match(text, m.end())
                if word and _is_name_word(word.group()) and (strong or word.group() in names):
                    end = word.end()
                    surname = _LOWER_WORD.match(text, end + 1) if text[end : end + 1] == " " else None
                    if strong and surname and _is_name_word(surname.group()):
                        end = surname.end()
                    found.append(Candidate(word.start(), end, "PERSON", 0.7 if strong else 0.6, self.name))
        for pattern in (_INTRO_CUE, _THANKED, _GREETED, _THANKED_LOWER):
            refused = _SIGN_OFF_WORDS if pattern is _THANKED_LOWER else frozenset()
            for m in pattern.finditer(text):
                words = m.group(1).split()
                if all(_is_intro_word(w) and w not in refused for w in words):
                    found.append(Candidate(m.start(1), m.end(1), "PERSON", 0.6, self.name))
        return found

    def _gazetteer(self, text: str) -> list[Candidate]:
        found = []
        names = first_names()
        for m in _CAPITALISED.finditer(text):
            lower = m.group().lower()
            if lower not in names or (m.start() and text[m.start() - 1] in "#@"):
                continue
            surname = _SURNAME_AFTER.match(text, m.end())
            if surname and _is_name_word(surname.group(1)) and surname.group(1).lower() not in _NOT_SURNAMES:
                found.append(Candidate(m.start(), surname.end(), "PERSON", 0.6, self.name))
            elif lower not in _AMBIGUOUS:
                found.append(Candidate(m.start(), m.end(), "PERSON", 0.55, self.name))
        return found
