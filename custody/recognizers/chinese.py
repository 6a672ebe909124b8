"""Chinese identifiers: resident ID numbers, mobile and landline numbers, unified social credit codes.

All validated (check characters, birth dates, number plans; a resident ID whose check digit
fails counts only after a context word), and all with
explicit digit look-arounds instead of ``\\b``: Chinese writes identifiers
directly against the text ("身份证号110101199003078515", "电话13812345678联系"),
where a Unicode word boundary does not exist.
"""

from __future__ import annotations

import re
from typing import Final

from custody.recognizers.base import Candidate, Context, Recognizer, TextView
from custody.recognizers.checksums import cn_resident_id_valid, plausible_birth_date, uscc_valid

_RESIDENT_ID: Final = re.compile(
    r"(?<![0-9])"
    r"([1-8]\d{5}) ?((?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])) ?(\d{3}[0-9Xx])"
    r"(?![0-9])"
)
# Issued before 1999: 15 digits, two-digit year, no check digit.
_RESIDENT_ID_15: Final = re.compile(
    r"(?<![0-9])[1-8]\d{5}(\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01]))\d{3}(?![0-9])"
)
_ID_CONTEXT: Final = Context(
    en=("identity", "resident", "citizen", "id card", "id number"),
    zh=("身份证", "身份号", "证件号", "公民身份", "身份证明", "居民身份"),
)


class CnResidentIdRecognizer(Recognizer):
    """Resident identity card numbers: 18 characters, ISO 7064 MOD 11-2 (or, after a context word, a
    plausible birth date with a wrong check digit); 15-digit legacy ones with context."""

    name = "CnResidentIdRecognizer"
    entities = ("CN_RESIDENT_ID",)
    languages = frozenset({"zh"})
    context = _ID_CONTEXT

    def applies(self, view: TextView) -> bool:
        return view.has_digit

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        text = view.text
        found = []
        for m in _RESIDENT_ID.finditer(text):
            if cn_resident_id_valid("".join(m.groups())):
                found.append(Candidate(m.start(), m.end(), "CN_RESIDENT_ID", 1.0, self.name))
            elif plausible_birth_date(m.group(2)):
                # A mistyped check digit still leaves the holder's birth date and place: with a
                # context word (身份证号 ...) it is an ID all the same (eleventh round, from a walk).
                found.append(self.scored(view, m.start(), m.end(), 0.3))
        for m in _RESIDENT_ID_15.finditer(text):
            if plausible_birth_date("19" + m.group(1)):
                # Below the default threshold unless a context word says what it is.
                found.append(self.scored(view, m.start(), m.end(), 0.3))
        return found


_MOBILE: Final = re.compile(r"(?<![0-9])(?:(?:\+|00)?86[ \-]?)?1[3-9]\d(?:[ \-]?\d{4}){2}(?![0-9])")
_LANDLINE: Final = re.compile(r"(?<![0-9])(?:\(0\d{2,3}\)|（0\d{2,3}）|0\d{2,3})[ \-]?[2-9]\d{6,7}(?![0-9])")
_PHONE_CONTEXT: Final = Context(
    en=("phone", "mobile", "cell", "tel", "call", "contact", "fax", "wechat", "whatsapp"),
    zh=("手机", "电话", "联系", "致电", "号码", "座机", "固话", "传真", "热线", "微信", "来电", "拨打"),
)


class CnMobileRecognizer(Recognizer):
    """Mainland mobile numbers: 11 digits starting 13-19, optionally with +86, grouped 3-4-4 or not."""

    name = "CnMobileRecognizer"
    entities = ("PHONE_NUMBER",)
    languages = frozenset({"zh"})
    context = _PHONE_CONTEXT

    def applies(self, view: TextView) -> bool:
        return view.has_digit

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        return [self.scored(view, m.start(), m.end(), 0.6) for m in _MOBILE.finditer(view.text)]


class CnLandlineRecognizer(Recognizer):
    """Mainland landline numbers (area code 0xx or 0xxx, 7-8 digits); only with a context word."""

    name = "CnLandlineRecognizer"
    entities = ("PHONE_NUMBER",)
    languages = frozenset({"zh"})
    context = _PHONE_CONTEXT

    def applies(self, view: TextView) -> bool:
        return view.has_digit and "0" in view.text

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        return [self.scored(view, m.start(), m.end(), 0.4) for m in _LANDLINE.finditer(view.text)]


_USCC: Final = re.compile(
    r"(?<![0-9A-Za-z])[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}(?![0-9A-Za-z])", re.IGNORECASE
)


class CnUsccRecognizer(Recognizer):
    """Unified social credit codes of organisations (GB 32100-2015, 18 characters with a check character).

    One random 18-digit number in 31 passes the check, so a code made of
    digits only needs a context word; one with letters is scored as found.
    """

    name = "CnUsccRecognizer"
    entities = ("CN_USCC",)
    languages = frozenset({"zh"})
    context = Context(
        en=("uscc", "credit code", "registration", "tax"),
        zh=("信用代码", "社会信用", "营业执照", "税号", "纳税人识别号", "注册号", "机构代码"),
    )

    def applies(self, view: TextView) -> bool:
        return view.has_digit

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        found = []
        for m in _USCC.finditer(view.text):
            code = m.group()
            if uscc_valid(code):
                score = 0.5 if code.isdigit() else 0.9
                found.append(self.scored(view, m.start(), m.end(), score))
        return found
