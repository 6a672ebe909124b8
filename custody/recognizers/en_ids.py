"""Identifiers named by the words before them, masked and unverified card numbers, passwords.

A passport, account, tax or licence number has no checksum that holds across
countries and issuers, so its shape alone proves nothing; the words just
before it do. These recognizers take a token of letters and digits (at least
five characters, at least three digits, or two digits and two letters) that
follows an identifier cue within a few words:

- ``passport`` (``passport no. X1234567``) gives ``PASSPORT``, 0.8;
- account, tax, licence, voter, patient, employee, member, policy, routing,
  IBAN, SSN, TIN, PAN, Aadhaar, student, staff, VIN, licence plate ... give
  ``ID_NUMBER``, 0.7;
- a UK registration (``LD19 XKE``) after ``reg``/``plate`` gives ``LICENSE_PLATE``, 0.8;
- ``card``/``card number`` followed by 12 to 19 digits that fail the Luhn
  check (a mistyped card number is still one) give ``CREDIT_CARD``, 0.6, as
  do printed cards with masked groups (``4532 **** **** 7890``);
- ``password``/``passcode``/``pwd`` and what follows it (a quoted string or
  one token) give ``PASSWORD``, 0.7.
"""

from __future__ import annotations

import re

from custody.recognizers.base import Candidate, Recognizer, TextView

_PASSPORT_CUE = re.compile(r"\bpassport(?:s)?\b", re.IGNORECASE)
_ID_CUE = re.compile(
    r"\b(?:account|acct|a/c|iban|routing|sort code|swift|tax|tin|ein|itin|ssn|social security|pan|aadhaa?r"
    r"|voter|licen[cs]e|driver'?s|dl|patient|mrn|medical record|employee|member|membership|policy|insurance"
    r"|customer|client|user ?id|login id|badge|national id|identity|id|identification|reference|ref"
    r"|student|staff|vin|vehicle identification|(?:licen[cs]e |number |registration )?plate)\b",
    re.IGNORECASE,
)
# What may stand between the cue and the number: a few words ("number",
# "no.", "is", "#", a colon, a quote).
_GAP = re.compile(
    r"(?:[ \t]*(?:number|numbers|num|no\.?|nr\.?|id|code|card"
    r"|is|was|of|:|#|=|-|ending in)[ \t]*){0,3}[ \t:'\"“(]*",
    re.IGNORECASE,
)
# A lower-case letter may open an identifier only before its digits ("student number s4412897").
_TOKEN = re.compile(r"(?:[A-Z0-9]|[a-z](?=\d))[A-Za-z0-9]*(?:[\-/ ][A-Za-z0-9]+){0,5}")
# The last digits of an account or card number ("account number ending in *456", "card ending with
# 7854"): a partial identifier, still one (train split, nano-synth; fifth round).
_ENDING_IN = re.compile(
    r"\b(account|acct|card|iban)\b(?:[ \t]+(?:number|no\.?|#))?[ \t]+(?:ending|ends)[ \t]+(?:in|with)"
    r"[ \t:]*([*xX•]*\d{3,6})(?!\w)",
    re.IGNORECASE,
)
# A UK registration after its word ("His reg is LD19 XKE", "plate: AB12 CDE"): the identifier's cue
# and ``_trim`` would keep only its digit half. Eleventh round, from a walk.
_UK_PLATE = re.compile(
    r"\b(?:reg(?:istration)?|(?:number |licen[cs]e )?plates?)(?:[ \t]+(?:is|was|no\.?|number))*[ \t:#]*"
    r"([A-Z]{2}\d{2}[ ]?[A-Z]{3})\b",
    re.IGNORECASE,
)
_CARD_CUE = re.compile(r"\b(?:card|cc|visa|mastercard|amex|credit|debit)\b", re.IGNORECASE)
_DIGITS_ONLY = re.compile(r"\d{4}(?:[ \-]?\d{2,4}){2,4}|\d{12,19}")
_MASKED_CARD = re.compile(
    r"(?<![\w*])(?=[\dXx*• \-]*\d{4})(?:\d{4}|[Xx*•]{4})(?:[ \-]?(?:\d{4}"
    r"|[Xx*•]{4})){2,3}(?:[ \-]?\d{1,4})?(?![\w*])"
)
_PHONE_CUE = re.compile(
    r"\b(?:phone|tel|telephone|mobile|cell|cellphone|fax|office"
    r"|home|work|call|text|ring|dial|whatsapp|reach|contact|answering"
    r"|(?:my|our|his|her|their|your) number|ph(?=[.:])|mob(?=[.:]))\b"
    # "call me on", "reach the desk at", "phone number is", "mobile no. changed to"
    r"(?:[ \t]+(?:me|us|him|her|them|(?:the|our|my|your|his|her|their)[ \t]+[a-z]+))?"
    r"(?:[ \t]*(?:number|no\.?|#))?"
    r"(?:[ \t]+(?:is|was|on|at|to|from|changed to|now))?[ \t:.]*",
    re.IGNORECASE,
)
# Digits and phone punctuation; "(+358) ...", "+(370) ...", "87/789-3287" included.
_PHONE_DIGITS = re.compile(r"(?:\(\+|\+\(|\+)?\(?\d[\d ()\-./]{4,22}\d")
# A number labelled after it, as in a signature or a contact card ("781 1704 office",
# "28-64-66-98 fax", "... is my cell"): a short local number that no numbering plan
# check accepts.
_PHONE_LABELLED = re.compile(
    r"(?<![\w+\-./])(\+?\(?\d[\d ()\-.]{4,22}\d)[ \t]*[(\[]?"
    # "... is my cell", "... - that's my landline"
    r"(?:[\-–:,]?[ \t]*(?:(?:that|it)['’]?s[ \t]+|is[ \t]+|was[ \t]+)?(?:my|our|his|her|their|the)[ \t]+)?"
    r"(?:office|fax|mobile|cell|home|work|tel|phone|landline|direct|main)\b",
    re.IGNORECASE,
)
_DATE_LIKE = re.compile(r"\d{4}[\-/.]\d{1,2}[\-/.]\d{1,2}|\d{1,2}[\-/.]\d{1,2}[\-/.]\d{2,4}")
_PHONE_PLUS = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}|\(\+\d{1,3}\)|\+\(\d{1,3}\))[ \-]?(?:\(\d{1,4}\)[ \-]?)?\d[\d \-]{5,16}\d(?!\d)"
    r"(?: ?(?:x|ext\.?) ?\d{1,6}(?!\d))?",
    re.IGNORECASE,
)
_PASSWORD = re.compile(
    r"\b(?:password|passwd|passcode|pwd|pw|pin)\b(?:[ \t]+(?:is|was|of))?[ \t]*[:=]?[ \t]*"
    r"(?:'([^'\s]{3,40})'|\"([^\"\s]{3,40})\"|([^\s'\",]{4,40}?))(?=[\s,;)]|[.!?](?:\s|$)|$)",
    re.IGNORECASE,
)
_PASSWORD_NOT: frozenset[str] = frozenset(
    {"reset", "change", "manager", "protected", "policy", "and", "for", "was"}
)


def _identifier_like(token: str) -> bool:
    digits = sum(c.isdigit() for c in token)
    letters = sum(c.isalpha() for c in token)
    return len(token) >= 5 and (digits >= 3 or (digits >= 2 and letters >= 2))


class ContextIdRecognizer(Recognizer):
    """Passport, account, tax, licence and other numbers, found by the cue word before them."""

    name = "ContextIdRecognizer"
    entities = ("ID_NUMBER", "PASSPORT", "CREDIT_CARD", "LICENSE_PLATE")

    def applies(self, view: TextView) -> bool:
        return view.has_digit

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        text = view.text
        found: list[Candidate] = []
        for cue, entity, score in (
            (_PASSPORT_CUE, "PASSPORT", 0.8),
            (_ID_CUE, "ID_NUMBER", 0.7),
            (_CARD_CUE, "CREDIT_CARD", 0.6),
        ):
            for m in cue.finditer(text):
                gap = _GAP.match(text, m.end())
                start = gap.end() if gap else m.end()
                token = _TOKEN.match(text, start)
                if token is None:
                    continue
                shift, value = _trim(token.group())
                start += shift
                if entity == "CREDIT_CARD":
                    card = _DIGITS_ONLY.match(value)
                    if card and 12 <= sum(c.isdigit() for c in card.group()) <= 19:
                        found.append(Candidate(start, start + card.end(), entity, score, self.name))
                    continue
                if _identifier_like(value):
                    found.append(Candidate(start, start + len(value), entity, score, self.name))
        for m in _UK_PLATE.finditer(text):
            plate = m.group(1)
            if plate.upper() == plate:
                found.append(Candidate(m.start(1), m.end(1), "LICENSE_PLATE", 0.8, self.name))
        for m in _ENDING_IN.finditer(text):
            entity = "CREDIT_CARD" if m.group(1).lower() == "card" else "ID_NUMBER"
            found.append(Candidate(m.start(2), m.end(2), entity, 0.6, self.name))
        for m in _MASKED_CARD.finditer(text):
            if any(c in "Xx*•" for c in m.group()):
                found.append(Candidate(m.start(), m.end(), "CREDIT_CARD", 0.6, self.name))
        return found


def _trim(value: str) -> tuple[int, str]:
    """Drop words without a digit around the identifier: after it ("A1234567 and") and before it
    ("customer Niranjan Mehta with account number SBIN0123", where the cue ``customer`` ran over a
    name up to the next cue's number). Returns the offset of what is kept in ``value`` and it."""
    parts = re.split(r"( )", value)
    while len(parts) > 1 and not any(c.isdigit() for c in parts[-1]):
        parts = parts[:-2]
    shift = 0
    while len(parts) > 1 and not any(c.isdigit() for c in parts[0]):
        shift += len(parts[0]) + len(parts[1])
        parts = parts[2:]
    return shift, "".join(parts)


class ContextPhoneRecognizer(Recognizer):
    """Phone numbers of any country: after a phone cue, or written with a ``+`` country code.

    python-phonenumbers knows the numbering plans of the configured regions
    only; a number after ``phone:``, ``call`` or ``fax`` with six digits or
    more is a phone wherever it is from.
    """

    name = "ContextPhoneRecognizer"
    entities = ("PHONE_NUMBER",)

    def applies(self, view: TextView) -> bool:
        return view.has_digit

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        text = view.text
        found = []
        for m in _PHONE_CUE.finditer(text):
            number = _PHONE_DIGITS.match(text, m.end())
            if number:
                value = number.group().rstrip(" -.(/")
                if _DATE_LIKE.fullmatch(value):
                    continue
                if 6 <= sum(c.isdigit() for c in value) <= 15:
                    found.append(
                        Candidate(number.start(), number.start() + len(value), "PHONE_NUMBER", 0.6, self.name)
                    )
        for m in _PHONE_LABELLED.finditer(text):
            value = m.group(1)
            if 7 <= sum(c.isdigit() for c in value) <= 15 and not _DATE_LIKE.fullmatch(value):
                found.append(Candidate(m.start(1), m.end(1), "PHONE_NUMBER", 0.6, self.name))
        for m in _PHONE_PLUS.finditer(text):
            if 8 <= sum(c.isdigit() for c in m.group()) <= 15:
                found.append(Candidate(m.start(), m.end(), "PHONE_NUMBER", 0.55, self.name))
        return found


class PasswordRecognizer(Recognizer):
    """The string after ``password``/``passcode``/``pwd``: a credential is as sensitive as an identity."""

    name = "PasswordRecognizer"
    entities = ("PASSWORD",)

    def applies(self, view: TextView) -> bool:
        lower = view.lower
        return "pass" in lower or "pw" in lower or "pin" in lower

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        found = []
        for m in _PASSWORD.finditer(view.text):
            group = next(g for g in (1, 2, 3) if m.group(g) is not None)
            value = m.group(group)
            if group == 3 and (value.lower() in _PASSWORD_NOT or (value.isalpha() and value.islower())):
                continue
            found.append(Candidate(m.start(group), m.end(group), "PASSWORD", 0.7, self.name))
        return found


# A user name after its label ("Username: grizzlybear_88", "login = kpatel", "用户名：xiaoyu_2020") or in
# an SSH log line ("Accepted publickey for kwame from 10.2.3.44", "invalid user admin from ...").
# Without a colon or an equals sign the value needs a digit, "_" or "." ("username dev_user"), so
# "login attempts" and "user name field" are not names. Eleventh round, from a walk.
_USERNAME = re.compile(
    r"(?:\b(?:user[ \t]?name|login(?:[ \t]?name)?|log-in|user[ \t]?id|account[ \t]name|screen[ \t]?name)"
    r"|用户名|登录名|登录账号)"
    r"(?:[ \t]+(?:is|was))?[ \t]*([:=：])?[ \t]*"
    r"(?:'([^'\s]{2,40})'|\"([^\"\s]{2,40})\"|([A-Za-z0-9][\w.\-]{1,39}))",
    re.IGNORECASE,
)
_LOG_USER = re.compile(
    r"\b(?:(?:Accepted|Failed)[ \t]+[a-z\-/]+[ \t]+for(?:[ \t]+invalid[ \t]+user)?|[Ii]nvalid[ \t]+user|user)"
    r"[ \t]+([a-z_][a-z0-9_.\-]{1,31})[ \t]+from[ \t]+"
    r"\d{1,3}(?:\.\d{1,3}){3}\b"
)
_USERNAME_NOT: frozenset[str] = frozenset(
    {
        "and",
        "or",
        "for",
        "is",
        "was",
        "the",
        "field",
        "page",
        "screen",
        "attempts",
        "attempt",
        "details",
        "credentials",
        "credential",
        "id",
        "name",
        "failed",
        "info",
        "data",
        "portal",
        "required",
        "here",
        "below",
        "above",
        "with",
        "of",
        "to",
    }
)


class UsernameRecognizer(Recognizer):
    """User names after ``username:``/``login:`` and in SSH log lines: an account name names its holder."""

    name = "UsernameRecognizer"
    entities = ("PERSON",)

    def applies(self, view: TextView) -> bool:
        lower = view.lower
        return any(word in lower for word in ("user", "login", "log-in", "name", " from ", "用户名", "登录"))

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        text = view.text
        found = []
        for m in _USERNAME.finditer(text):
            group = next(g for g in (2, 3, 4) if m.group(g) is not None)
            value = m.group(group).rstrip(".")
            if value.lower() in _USERNAME_NOT:
                continue
            if group == 4 and m.group(1) is None and not any(c.isdigit() or c in "_." for c in value):
                continue
            found.append(Candidate(m.start(group), m.start(group) + len(value), "PERSON", 0.7, self.name))
        for m in _LOG_USER.finditer(text):
            found.append(Candidate(m.start(1), m.end(1), "PERSON", 0.7, self.name))
        return found
