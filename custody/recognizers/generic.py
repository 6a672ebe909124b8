"""Script-neutral recognizers: e-mail addresses, URLs, phone numbers and bank cards.

They replace Presidio's stock e-mail, URL and phone recognizers because those
rely on ``\\b`` word boundaries, and in Unicode regular expressions there is
no boundary between a Han character and a digit or a Latin letter:
"邮箱zhang@example.com" or "电话+1 212 555 0143" would be missed. Here the
boundaries are spelled out as ASCII look-arounds, so an identifier written
directly against Chinese text is found.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import ClassVar, Final

from custody.recognizers.base import Candidate, Context, Recognizer, TextView
from custody.recognizers.checksums import luhn_valid
from custody.recognizers.offline import has_public_suffix

# Characters that end a URL or an address: white space, quotes and brackets,
# and anything CJK (punctuation, Han, full-width forms).
_STOP_CHARS: Final = "\\s<>\"'()\\[\\]{}\u3000-\u303f\u3400-\u9fff\uf900-\ufaff\uff00-\uffef"

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-])"
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+)*"
    r"@((?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z][A-Za-z0-9\-]{0,61}[A-Za-z0-9])"
    r"(?![A-Za-z0-9\-])"
)


class EmailRecognizer(Recognizer):
    """E-mail addresses whose domain ends in a public suffix (checked offline)."""

    name = "EmailRecognizer"
    entities = ("EMAIL_ADDRESS",)

    def applies(self, view: TextView) -> bool:
        return "@" in view.text

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        found = []
        for m in _EMAIL.finditer(view.text):
            end = m.end() if has_public_suffix(m.group(1)) else _glued_end(m.group(1), m.start(1))
            if end is not None:
                found.append(Candidate(m.start(), end, "EMAIL_ADDRESS", 1.0, self.name))
        return found


_GLUE = re.compile(r"(?<=[a-z])(?=[A-Z0-9])|(?<=[A-Z])(?=[0-9])")


def _glued_end(domain: str, offset: int) -> int | None:
    """Return where an address ends when text is glued to it ("ann@example.comPhone: ..."), or None.

    The last label is cut where its case changes or digits begin; the cut
    counts only if what is left ends in a public suffix.
    """
    head, _, last = domain.rpartition(".")
    for cut in _GLUE.finditer(last):
        if cut.start() >= 2 and has_public_suffix(f"{head}.{last[: cut.start()]}"):
            return offset + len(head) + 1 + cut.start()
    return None


# A scheme starts a URL even when text is glued to it ("E12http://t.cn/x", "@annhttp://..."):
# posts written without spaces put links straight after a word or a handle.
_URL_SCHEME = re.compile(rf"(?:https?|ftp)://[^{_STOP_CHARS}]+", re.IGNORECASE)
_URL_BARE = re.compile(
    r"(?<![A-Za-z0-9@._\-/])"
    r"((?:www\d{0,3}\.)?(?:[a-z0-9](?:[a-z0-9\-]{0,61}[a-z0-9])?\.)+[a-z]{2,24})"
    rf"(?![a-z0-9@\-])(?::\d{{2,5}})?(?:/[^{_STOP_CHARS}]*)?",
    re.IGNORECASE,
)
_URL_TRAILING = ".,;:!?"
_URL_HINT = re.compile(r"[a-z0-9]\.[a-z]|://", re.IGNORECASE)


# A URL with a scheme, or a host name starting "www.", is nothing else: it
# outranks the model's guesses (0.85) and the address patterns that overlap
# it ("Sept 18 http://is.gd/x" read as a date, "11am - www" as a street).
URL_CERTAIN_SCORE: Final = 0.9


class UrlRecognizer(Recognizer):
    """URLs with a scheme, and bare host names ending in a public suffix (checked offline)."""

    name = "UrlRecognizer"
    entities = ("URL",)
    context = Context(
        en=("url", "website", "link", "site", "web"), zh=("网址", "网站", "链接", "官网", "主页")
    )

    def applies(self, view: TextView) -> bool:
        return _URL_HINT.search(view.text) is not None

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        text = view.text
        found: list[Candidate] = []
        taken: list[tuple[int, int]] = []
        for m in _URL_SCHEME.finditer(text):
            end = _strip_trailing(text, m.start(), m.end())
            taken.append((m.start(), end))
            found.append(Candidate(m.start(), end, "URL", URL_CERTAIN_SCORE, self.name))
        for m in _URL_BARE.finditer(text):
            start, end = m.start(), _strip_trailing(text, m.start(), m.end())
            if any(s <= start < e for s, e in taken) or not has_public_suffix(m.group(1)):
                continue
            if m.group(1)[:4].lower() == "www.":
                found.append(Candidate(start, end, "URL", URL_CERTAIN_SCORE, self.name))
            else:
                found.append(self.scored(view, start, end, 0.5))
        return found


def scheme_urls(text: str) -> Iterator[tuple[int, int]]:
    """Where each URL with a scheme is in ``text`` (``http://t.cn/SXLy39``; what ``UrlRecognizer``
    takes whole at ``URL_CERTAIN_SCORE``), as ``(start, end)``; its trailing punctuation included."""
    if "://" in text:
        for m in _URL_SCHEME.finditer(text):
            yield m.start(), m.end()


def _strip_trailing(text: str, start: int, end: int) -> int:
    while end > start + 1 and text[end - 1] in _URL_TRAILING:
        end -= 1
    return end


# A run of digits and phone punctuation holding a possible phone number; the
# phonenumbers matcher then looks inside it. Looking only at such windows is
# what makes phone detection cheap on text without numbers.
_PHONE_WINDOW = re.compile(
    r"(?<![\d+])(?:\+ ?|00)?\(?\d[\d ().\-/\u00a0]{5,40}\d"
    r"(?: ?(?:x|ext\.?|extension) ?\d{1,6})?(?!\d)",
    re.IGNORECASE,
)
# Written like a North American number ("(212) 555-0143", "+1 212.555.0143",
# "001-212-555-0143 x12"): a phone, even when the area code is not assigned.
_NANP_SHAPE = re.compile(
    r"(?<![\d+])(?:(?:\+|00)1[ .\-]?|1[ .\-])?(?:\(\d{3}\) ?|\d{3}[ .\-])\d{3}[ .\-]\d{4}"
    r"(?: ?(?:x|ext\.?) ?\d{1,6})?(?!\d)",
    re.IGNORECASE,
)
# Written with a trunk 0 and in groups ("010-1234-5678", "08-123 45 67", "03-1234567"):
# a national number of a country outside the configured regions.
_TRUNK_GROUPED = re.compile(r"(?<![\w+\-./])0\d{1,4}(?:[ \-.]\d{2,8}){1,4}(?![\w\-/]|\.\d)")
# Three or more short groups ("17 46 81 45", "22 383 47 01", "8 (877) 893-28-79"): how
# phone numbers are written, and not how amounts are ("1 234 567": thousands groups).
_GROUPED = re.compile(
    r"(?<![\w+\-./,])(?:\d{1,4}[ \-.])?(?:\(\d{2,4}\)[ \-]?)?\d{2,4}(?:[ \-.]\d{2,4}){2,4}(?![\w\-/]|[.,]\d)"
)
# An area code in brackets ("(72) 754-186", "(0123) 456789"): a phone in every plan.
_BRACKETED = re.compile(r"(?<![\w)])\(\d{1,4}\)[ \-]?\d{2,5}(?:[ \-.]?\d{2,5}){0,2}(?![\w\-/]|[.,]\d)")
_THOUSANDS = re.compile(r"\d{1,3}(?:([ .,])\d{3})(?:\1\d{3})*|(?:(?:19|20)\d\d[ \-.]?)+")
# An extension written after the number ("... 4567 x123", "ext. 12").
_EXTENSION = re.compile(r" ?(?:x|ext\.?|extension) ?\d{1,6}(?!\d)", re.IGNORECASE)
# Left to CnMobileRecognizer when Chinese recognizers run.
_CN_MOBILE = re.compile(r"(?:(?:\+|00)?86[ \-]?)?1[3-9]\d(?:[ \-]?\d{4}){2}")
# Windows that python-phonenumbers would reject anyway, after a costly look:
# IPv4 addresses, dates, card numbers, long digit runs (identifiers).
_NOT_A_PHONE = re.compile(
    r"\d{1,3}(?:\.\d{1,3}){3}|\d{4}([\-/.])\d{1,2}\1\d{1,2}|\d{1,2}([\-/.])\d{1,2}\2\d{2,4}"
    r"|\d{4}(?:[ \-]\d{4}){3,4}|\d{16,}"
)
_INTERNATIONAL = re.compile(r"^(?:\+|00)|\(")
_SEPARATED = re.compile(r"\d[ .\-]\d")


class PhoneRecognizer(Recognizer):
    """Phone numbers valid for the configured regions (python-phonenumbers), in any script.

    Presidio's regions by default, scored like Presidio (0.4, raised by
    context); a number written with an international prefix, brackets or
    separators scores 0.6, since order numbers rarely look like that.
    Each window of digits is tried only against the regions whose numbers it
    could spell: a "+" number carries its own country code, a leading 0 is a
    trunk prefix (Europe, Israel, India, Brazil), no 0 is North American (or
    an Indian mobile, or a Brazilian number without its 0).
    """

    name = "PhoneRecognizer"
    entities = ("PHONE_NUMBER",)
    REGIONS: ClassVar[tuple[str, ...]] = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR")
    _TRUNK_ZERO: ClassVar[frozenset[str]] = frozenset({"GB", "DE", "FR", "IL", "IN", "BR"})
    _NO_ZERO: ClassVar[frozenset[str]] = frozenset({"US", "CA", "IN", "BR"})
    context = Context(
        en=("phone", "number", "telephone", "cell", "cellphone", "mobile", "call", "tel", "fax"),
        zh=("电话", "手机", "联系", "致电", "号码", "座机", "传真", "热线"),
    )

    def __init__(self, regions: tuple[str, ...] | None = None, leniency: int = 1) -> None:
        import phonenumbers  # loaded with the engine only

        self._phonenumbers = phonenumbers
        self.regions = regions or self.REGIONS
        self.leniency = leniency
        # "US" and "CA" share the North American plan: one of them finds both.
        nanp = [r for r in self.regions if r in ("US", "CA")][:1]
        self._international = tuple(nanp or self.regions[:1])
        self._trunk_zero = tuple(r for r in self.regions if r in self._TRUNK_ZERO or r not in self._NO_ZERO)
        self._no_zero = tuple(
            dict.fromkeys(nanp + [r for r in self.regions if r in self._NO_ZERO and r not in ("US", "CA")])
        ) + tuple(r for r in self.regions if r not in self._TRUNK_ZERO and r not in self._NO_ZERO)

    def applies(self, view: TextView) -> bool:
        return view.has_digit

    def _regions_for(self, chunk: str) -> tuple[str, ...]:
        first = chunk.lstrip("(")
        if first.startswith("+"):
            return self._international
        if first.startswith("0"):
            return self._trunk_zero
        return self._no_zero

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        text = view.text
        spans: dict[tuple[int, int], float] = {}
        for window in _PHONE_WINDOW.finditer(text):
            chunk = window.group()
            if sum(c.isdigit() for c in chunk) < 7 or _NOT_A_PHONE.fullmatch(chunk):
                continue
            if "zh" in view.languages and _CN_MOBILE.fullmatch(chunk):
                continue
            offset = window.start()
            for region in self._regions_for(chunk):
                for match in self._phonenumbers.PhoneNumberMatcher(chunk, region, leniency=self.leniency):
                    raw = chunk[match.start : match.end]
                    score = 0.6 if _looks_formatted(raw) else 0.4
                    end = match.end
                    extension = _EXTENSION.match(chunk, end)
                    if extension:
                        end = extension.end()
                    key = (offset + match.start, offset + end)
                    spans[key] = max(score, spans.get(key, 0.0))
        for m in _NANP_SHAPE.finditer(text):
            spans[m.span()] = max(0.5, spans.get(m.span(), 0.0))
        for m in itertools.chain(_GROUPED.finditer(text), _BRACKETED.finditer(text)):
            chunk = m.group()
            if (
                8 <= sum(c.isdigit() for c in chunk) <= 12
                and not _NOT_A_PHONE.fullmatch(chunk)
                and not _THOUSANDS.fullmatch(chunk)
                and not chunk.startswith(("(19", "(20"))
            ):
                spans[m.span()] = max(0.5, spans.get(m.span(), 0.0))
        for m in _TRUNK_GROUPED.finditer(text):
            chunk = m.group()
            if 8 <= sum(c.isdigit() for c in chunk) <= 12 and not _NOT_A_PHONE.fullmatch(chunk):
                spans[m.span()] = max(0.5, spans.get(m.span(), 0.0))
        return [self.scored(view, s, e, score) for (s, e), score in spans.items()]


def _looks_formatted(raw: str) -> bool:
    """Say whether a number is written like a phone number: +, brackets, or 10+ digits in groups."""
    if _INTERNATIONAL.search(raw):
        return True
    return _SEPARATED.search(raw) is not None and sum(c.isdigit() for c in raw) >= 10


_CARD = re.compile(
    r"(?<![\d])(?:\d{13,19}|\d{4}(?:[ \-]\d{4}){2,3}(?:[ \-]\d{1,3})?"
    r"|\d{6}[ \-]\d{10,13}|\d{4}[ \-]\d{6}[ \-]\d{4,5})(?![\d])"
)


class BankCardRecognizer(Recognizer):
    """Bank card numbers of any issuer: 13 to 19 digits passing the Luhn check, grouped or not.

    Presidio's credit card recognizer knows only the card networks' prefixes
    and up to 17 digits, so 19-digit UnionPay debit cards escape it. A Luhn
    check alone passes one number in ten, so the score stays low without a
    card context word, a UnionPay prefix (62) or the grouping of a printed card.
    """

    name = "BankCardRecognizer"
    entities = ("BANK_CARD",)
    context = Context(
        en=("card", "bank", "account", "acct", "debit", "credit", "visa", "mastercard", "unionpay", "iban"),
        zh=(
            "卡号",
            "银行",
            "账号",
            "帐号",
            "账户",
            "帐户",
            "开户",
            "储蓄卡",
            "借记卡",
            "信用卡",
            "银联",
            "卡",
        ),
    )

    def applies(self, view: TextView) -> bool:
        return view.has_digit

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        found = []
        for m in _CARD.finditer(view.text):
            raw = m.group()
            digits = raw.replace(" ", "").replace("-", "")
            if not 13 <= len(digits) <= 19 or not luhn_valid(digits) or len(set(digits)) == 1:
                continue
            grouped = raw != digits
            score = 0.5 if digits.startswith("62") or (grouped and len(digits) in (16, 19)) else 0.4
            found.append(self.scored(view, m.start(), m.end(), score))
        return found


# A calendar date in digits followed by a time of day: "1978-04-13 12:20:39",
# "2024-05-01T08:30:00Z", "4/5/1992 3:45 PM", "13.04.1978, 12:20". Presidio's
# date patterns and the model stop at the date, leaving the time in clear, and
# the phone windows read "2018-01-14 03" as a number; the whole stamp is one span.
_DAY: Final = r"(?:3[01]|[12]\d|0?[1-9])"
_MONTH: Final = r"(?:1[0-2]|0?[1-9])"
_NUMERIC_DATE: Final = (
    rf"(?:[12]\d{{3}}([\-/.]){_MONTH}\1{_DAY}"  # 1978-04-13, 1978/4/13
    rf"|{_DAY}([\-/.]){_DAY}\2(?:[12]\d{{3}}|\d{{2}}))"  # 13.04.1978, 4/5/1992, 04-13-78
)
_TIME_OF_DAY: Final = (
    r"(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:[.,]\d{1,9})?)?"
    r"(?: ?[AaPp]\.?[Mm]\.?(?![A-Za-z]))?"
    r"(?:Z|[+\-](?:[01]\d|2[0-3]):?[0-5]\d| ?(?:UTC|GMT)(?:[+\-]\d{1,2}(?::?\d{2})?)?)?"
)
_DATE_TIME: Final = re.compile(
    rf"(?<![\d/.\-]){_NUMERIC_DATE}(?:T|,? (?:at )?|,){_TIME_OF_DAY}(?![\d:])", re.IGNORECASE
)
# Certain, as a time stamp is nothing else; it must also beat the date part alone,
# which Presidio's date pattern scores 0.95 after a context word ("Date: ...").
DATE_TIME_SCORE: Final = 1.0


class DateTimeRecognizer(Recognizer):
    """Time stamps: a date in digits and the time of day after it, as one span, in any script."""

    name = "DateTimeRecognizer"
    entities = ("DATE_TIME",)

    def applies(self, view: TextView) -> bool:
        return view.has_digit and ":" in view.text

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        return [
            Candidate(m.start(), m.end(), "DATE_TIME", DATE_TIME_SCORE, self.name)
            for m in _DATE_TIME.finditer(view.text)
        ]
