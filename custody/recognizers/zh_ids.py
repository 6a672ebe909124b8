"""Chinese identifiers found by shape and context: passports, licence plates, card and account numbers.

- Passports: E or G and eight digits (or E, a letter and seven digits, the
  2019 format), and other countries' letter-and-digit numbers after 护照.
- Licence plates: a province's one-character abbreviation, the issuing
  office's letter, then five characters (or six on new-energy plates).
- Card and account numbers: digits written after 卡号, 账号, 账户 ... are a
  card or an account whatever their checksum: a mistyped card number still
  identifies the card holder, and account numbers have no checksum at all.
- Staff, student, patient and member numbers after 工号, 学号, 病历号, 会员号 ...,
  and QQ numbers.

Like ``chinese.py``, every pattern spells out its ASCII look-arounds: Chinese
writes identifiers directly against the text.
"""

from __future__ import annotations

import re
from typing import Final

from custody.recognizers.base import Candidate, Context, Recognizer, TextView

PASSPORT_SCORE: Final = 0.4
PASSPORT_BY_CONTEXT_SCORE: Final = 0.85
PLATE_SCORE: Final = 0.6
# As sure as a Luhn-valid card with context, so that the longer span wins an overlap.
CARD_BY_CONTEXT_SCORE: Final = 1.0
# The Chinese passport formats are specific enough to stand without context
# when the number follows Chinese text directly or stands alone.
_CN_PASSPORT: Final = re.compile(r"(?<![A-Za-z0-9])(?:[EG]\d{8}|E[A-HJ-NP-Z]\d{7})(?![A-Za-z0-9])")
_ANY_PASSPORT: Final = re.compile(r"(?<![A-Za-z0-9])[A-Z]{1,2}\d{6,9}(?![A-Za-z0-9])")
_PASSPORT_CONTEXT: Final = Context(en=("passport",), zh=("护照", "通行证", "旅行证"))
_PASSPORT_WINDOW: Final = 12

PLATE_PROVINCES: Final = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼使领"
_PLATE: Final = re.compile(
    rf"(?<![A-Za-z0-9])[{PLATE_PROVINCES}][A-HJ-NP-Z][·•・. \-]?"
    r"(?:[A-HJ-NP-Z0-9]{6}|[A-HJ-NP-Z0-9]{4}[A-HJ-NP-Z0-9挂学警港澳])(?![A-Za-z0-9])"
)
_PLATE_CONTEXT: Final = Context(
    en=("plate", "vehicle", "car"), zh=("车牌", "牌照", "车辆", "车主", "号牌", "违停", "违章")
)

_CARD_WORDS: Final = ("卡号", "银行卡", "储蓄卡", "借记卡", "信用卡", "银联卡", "工资卡", "社保卡", "卡")
_ACCOUNT_WORDS: Final = (
    "收款账号",
    "收款账户",
    "银行账号",
    "银行账户",
    "对公账户",
    "账号",
    "帐号",
    "账户",
    "帐户",
    "户号",
    "汇至",
    "转账至",
    "转账到",
    "打款到",
    "打到",
)


def _alternation(words: tuple[str, ...]) -> str:
    return "|".join(sorted(map(re.escape, words), key=len, reverse=True))


# A context word, then at most a few non-digit characters (是, 为, ：, 尾号不详的卡 ...), then the number.
_BY_CONTEXT: Final = re.compile(
    rf"(?:(?P<card>{_alternation(_CARD_WORDS)})|(?P<account>{_alternation(_ACCOUNT_WORDS)}))"
    r"[^0-9。！？；\n]{0,8}?"
    r"(?<![0-9A-Za-z])(?P<number>\d(?:[ \-]?\d){7,29})(?![0-9A-Za-z])"
)


# Numbers that a school, employer, hospital or insurer gives one person (工号A0031927, 学号2021013344,
# 病历号: 00482913): letters may open them. Eleventh round, from a walk.
_ID_WORDS: Final = (
    "工号",
    "员工号",
    "员工编号",
    "职工号",
    "学号",
    "学籍号",
    "考生号",
    "准考证号",
    "会员号",
    "会员编号",
    "病历号",
    "住院号",
    "门诊号",
    "就诊卡号",
    "社保号",
    "医保号",
    "社保卡号",
    "医保卡号",
    "档案号",
)
# A QQ number: 5 to 11 digits after QQ (QQ号是384756291, qq:10001). Eleventh round, from a walk.
_QQ: Final = re.compile(
    r"(?<![A-Za-z])(?:QQ|qq|Qq|扣扣)(?:号码|号)?[是为：:\s]{0,3}(?P<number>[1-9]\d{4,10})(?![0-9])"
)
_NUMBERED_ID: Final = re.compile(
    rf"(?:{_alternation(_ID_WORDS)})[^0-9A-Za-z。！？；\n]{{0,4}}?"
    r"(?<![0-9A-Za-z])(?P<number>[A-Za-z]{0,3}\d(?:[\-]?[0-9A-Za-z]){3,29})(?![0-9A-Za-z])"
)


class CnPassportRecognizer(Recognizer):
    """Passport numbers: Chinese formats, and other letter-and-digit numbers after a passport word."""

    name = "CnPassportRecognizer"
    entities = ("PASSPORT",)
    languages = frozenset({"zh"})
    context = _PASSPORT_CONTEXT

    def applies(self, view: TextView) -> bool:
        return view.has_digit

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        text = view.text
        found = [self._scored(view, m.start(), m.end(), 0.5) for m in _CN_PASSPORT.finditer(text)]
        taken = {(c.start, c.end) for c in found}
        for m in _ANY_PASSPORT.finditer(text):
            if (m.start(), m.end()) not in taken:
                found.append(self._scored(view, m.start(), m.end(), 0.0))
        return [c for c in found if c.score > 0.0]

    def _scored(self, view: TextView, start: int, end: int, score: float) -> Candidate:
        window = view.text[max(0, start - _PASSPORT_WINDOW) : start]
        if any(word in window for word in _PASSPORT_CONTEXT.zh) or "passport" in window.lower():
            score = PASSPORT_BY_CONTEXT_SCORE
        return Candidate(start, end, "PASSPORT", score, self.name)


class CnLicensePlateRecognizer(Recognizer):
    """Mainland licence plates: 京A12345, 粤B·D12345 (new energy), 沪C1234学."""

    name = "CnLicensePlateRecognizer"
    entities = ("LICENSE_PLATE",)
    languages = frozenset({"zh"})
    context = _PLATE_CONTEXT

    def applies(self, view: TextView) -> bool:
        return view.has_digit and view.has_han

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        found = []
        for m in _PLATE.finditer(view.text):
            tail = m.group()[2:]
            # A plate's serial has at least two digits (the rest may be letters); "京AB" words do not.
            if sum(c.isdigit() for c in tail) >= 2:
                found.append(self.scored(view, m.start(), m.end(), PLATE_SCORE))
        return found


class CnAccountNumberRecognizer(Recognizer):
    """Card and account numbers written after 卡号, 账号, 账户 ..., whatever their checksum, and the
    numbers after 工号, 学号, 病历号 ... (``_ID_WORDS``) and QQ numbers."""

    name = "CnAccountNumberRecognizer"
    entities = ("BANK_CARD", "ID_NUMBER")
    languages = frozenset({"zh"})

    def applies(self, view: TextView) -> bool:
        return view.has_digit and view.has_han

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        found = []
        for m in _BY_CONTEXT.finditer(view.text):
            digits = sum(c.isdigit() for c in m.group("number"))
            # "转账到卡号6222...": a card word anywhere before the number makes it a card.
            card = m.group("card") is not None or "卡" in m.group()
            if card and 13 <= digits <= 19:
                entity = "BANK_CARD"
            elif m.group("account") and digits >= 8:
                entity = "ID_NUMBER"
            elif card and digits >= 8 and m.group("card") != "卡":
                entity = "BANK_CARD"
            else:
                continue
            found.append(
                Candidate(m.start("number"), m.end("number"), entity, CARD_BY_CONTEXT_SCORE, self.name)
            )
        for m in _QQ.finditer(view.text):
            found.append(Candidate(m.start("number"), m.end("number"), "ID_NUMBER", 0.85, self.name))
        for m in _NUMBERED_ID.finditer(view.text):
            if sum(c.isdigit() for c in m.group("number")) >= 4:
                found.append(Candidate(m.start("number"), m.end("number"), "ID_NUMBER", 0.85, self.name))
        return found


_CN_DIGIT: Final = "0-9０-９〇零一二三四五六七八九"
_CN_DATE: Final = re.compile(
    rf"(?<![0-9])(?:(?:[12][0-9]{{3}}|[{_CN_DIGIT}]{{4}})年)?"
    rf"(?:1[0-2]|0?[1-9]|十[一二]?|[一二三四五六七八九])月"
    rf"(?:3[01]|[12][0-9]|0?[1-9]|[二三]?十[一二三四五六七八九]?|[一二三四五六七八九])[日号]"
)
_ISO_DATE: Final = re.compile(
    r"(?<![0-9])[12][0-9]{3}[-/.](?:1[0-2]|0?[1-9])[-/.](?:3[01]|[12][0-9]|0?[1-9])(?![0-9])"
)
DATE_SCORE: Final = 0.6


class CnDateRecognizer(Recognizer):
    """Calendar dates written the Chinese way (2027年10月21日, 3月5号, 二〇二四年五月一日) or as 2027-10-21.

    A year alone (1956年) is no one's date of birth or appointment: only a
    month and a day make a date here.
    """

    name = "CnDateRecognizer"
    entities = ("DATE_TIME",)
    languages = frozenset({"zh"})

    def applies(self, view: TextView) -> bool:
        return view.has_han and ("月" in view.text or view.has_digit)

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        text = view.text
        found = [
            Candidate(m.start(), m.end(), "DATE_TIME", DATE_SCORE, self.name) for m in _CN_DATE.finditer(text)
        ]
        found.extend(
            Candidate(m.start(), m.end(), "DATE_TIME", DATE_SCORE, self.name)
            for m in _ISO_DATE.finditer(text)
        )
        return found
