"""Values named by their field: JSON pairs, ``key=value``, ``Key: value`` lines, CSV and Markdown tables.

A record that is data rather than prose says what each value is: ``"full_name": "Chidi Okafor"``,
``email=…``, a line ``Name: Lê Thị Hương``, a CSV column headed ``last_name``. The field's name is
stronger evidence than any reading of the value, and the prose stages read such lines badly (the
English tagger took ``Okafor`` and left ``Chidi`` in a JSON value, ran a CSV cell into the next
row's number, and took only ``Lê`` of a Vietnamese name). Eleventh round of issue 12, from a walk.

- **Pairs**: a quoted key and a quoted value (JSON, Python, JavaScript), ``key=value`` (query
  strings, logs) and ``Key: value`` (forms, e-mail headers, YAML; the key is the one to three
  words before the colon, or the end of a Chinese word: 我的电话：…).
- **Tables**: a header line of field names split by ``,``, ``;``, a tab or ``|`` (Markdown), then
  the rows under it, cell by cell (quoted cells included), while they have the header's width.

Only fields in ``FIELDS`` count, and each value must look like its type (a phone has six digits, a
date a digit, an address a house number); ``name`` alone, which also names jobs, packages and
files, needs one to four capitalised words (not acronyms). Names and places score 0.9 (above the
name rules and the taggers); phones, e-mail addresses, dates and identifiers 0.55, so that a
checked recognizer's more precise type (``US_SSN``, a phone by its numbering plan) keeps the value
where both find it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

from custody.recognizers.base import Candidate, Recognizer, TextView

SCORE: Final = 0.9

_PERSON_FIELDS: Final = (
    "fullname firstname lastname surname familyname givenname forename middlename maidenname "
    "customername clientname contactname patientname employeename username user login author "
    "nickname displayname screenname owner holder accountholder cardholder recipient sender "
    "姓名 名字 用户名 昵称 联系人 收件人 客户 客户姓名"
)
_LOCATION_FIELDS: Final = (
    "address address1 address2 addressline1 addressline2 streetaddress street homeaddress "
    "mailingaddress billingaddress shippingaddress city town zip zipcode postcode postalcode "
    "住址 地址 家庭住址 收货地址 通讯地址"
)
_FIELDS_BY_TYPE: Final = {
    "PERSON": _PERSON_FIELDS,
    "LOCATION": _LOCATION_FIELDS,
    "PHONE_NUMBER": "phone phonenumber mobile mobilephone cell cellphone tel telephone fax 电话 手机 手机号",
    "EMAIL_ADDRESS": "email emailaddress mail 邮箱 电子邮箱",
    "DATE_TIME": "dob dateofbirth birthdate birthday born 出生日期 生日",
    "ID_NUMBER": "ssn socialsecuritynumber nationalid idnumber taxid passport passportnumber "
    "licensenumber driverslicense accountnumber iban 身份证 身份证号",
    "PASSWORD": "password passwd pwd passcode secret apikey accesstoken token 密码",
    "IP_ADDRESS": "ip ipaddress clientip remoteaddr remoteip",
}
FIELDS: Final = {key: kind for kind, keys in _FIELDS_BY_TYPE.items() for key in keys.split()}
# Fields of a town or a code: any value (an address needs a house number, below).
_PLACE_FIELDS: Final = frozenset(["city", "town", "zip", "zipcode", "postcode", "postalcode"])
# Accounts: one token ("the user: he said no" is prose).
_ACCOUNT_FIELDS: Final = frozenset(["username", "user", "login", "screenname", "用户名"])
# "name" alone: a person only when the value is one to four capitalised words.
_NAME_FIELD: Final = "name"

_EMPTY: Final = frozenset(
    {"", "null", "none", "nil", "n/a", "na", "-", "--", "unknown", "true", "false", "redacted", "***", "xxx"}
)
_QUOTED_PAIR: Final = re.compile(
    r"""(["'])([A-Za-z\u4e00-\u9fff][\w \-]{0,30})\1[ \t]*:[ \t]*(["'])([^"'\n]{1,160})\3"""
)
_EQUALS_PAIR: Final = re.compile(r"(?<![\w.\-])([A-Za-z][\w\-]{0,30})=([^\s&;,\"'<>]{1,160})")
# "Key: value": the key is the one to three words before a colon (for Chinese, the end of the
# word: 我的电话 is 电话); the value ends at the line's end, a separator, a quote (not an
# apostrophe: O'Neill, de l'interieur) or the next "key:" on the line ("电话：138… 邮箱：…"), and
# at a comma unless it is an address.
_COLON: Final = re.compile(r"[ \t]*[:：][ \t]*")
_VALUE: Final = re.compile(
    r"(?:[^\n\"'，；;|\t]|(?<=[A-Za-z])'(?=[A-Za-z])){1,160}?"
    r"(?=[ \t]*(?:$|[\n\"，；;|\t]|'(?![A-Za-z]))|[ \t]+[A-Za-z\u4e00-\u9fff][\w\-]{0,20}[:：])"
)
_HAN_WORD: Final = re.compile(r"[\u4e00-\u9fff]+$")
# A pair's value is cut to its type's shape: "phone: +1-555-0100) but the driver" is a number.
_SHAPES: Final = {
    "PHONE_NUMBER": re.compile(r"\+?[\d \t().\-/]+"),
    "EMAIL_ADDRESS": re.compile(r"\S+"),
    "IP_ADDRESS": re.compile(r"\S+"),
    "ID_NUMBER": re.compile(r"\S+"),
    "PASSWORD": re.compile(r"\S+"),
}
# Checked identifiers (US_SSN, a phone by its numbering plan, an e-mail address ...) keep their own,
# more precise type where they find the same value: the field only adds what they miss.
_SCORES: Final = {
    "PHONE_NUMBER": 0.55,
    "EMAIL_ADDRESS": 0.55,
    "IP_ADDRESS": 0.55,
    "ID_NUMBER": 0.55,
    "DATE_TIME": 0.55,
}
_DELIMITERS: Final = (",", "\t", ";", "|")
_SEPARATOR_ROW: Final = re.compile(r"^[ \t|:\-]+$")


def _normal(key: str) -> str:
    """``full_name``, ``Full Name`` and ``full-name`` are one field: ``fullname``."""
    return re.sub(r"[\s_\-]", "", key.lower())


def is_field_name(value: str) -> bool:
    """Whether ``value`` names a known field (``City``, ``first_name``, ``name``)."""
    normal = _normal(value)
    return normal in FIELDS or normal == _NAME_FIELD


def field_type(key: str, value: str) -> str | None:
    """The entity a field's value is, or None: the field is not a known one or the value does not
    look like its type."""
    normal = _normal(key)
    value = value.strip()
    if value.lower() in _EMPTY or (value.startswith("<") and value.endswith(">")):
        return None
    if normal == _NAME_FIELD:
        words = value.split()
        # capitalised, not all capitals ("name: CI" names a workflow)
        if 1 <= len(words) <= 4 and all(
            w[0].isupper() and any(c.islower() for c in w) and w.replace("-", "").replace("'", "").isalpha()
            for w in words
        ):
            return "PERSON"
        return None
    kind = FIELDS.get(normal)
    digits = sum(c.isdigit() for c in value)
    if kind is None:
        return None
    if normal in _ACCOUNT_FIELDS and len(value.split()) > 1:
        return None
    if kind == "PHONE_NUMBER" and digits < 6:
        return None
    if kind in ("DATE_TIME", "ID_NUMBER", "IP_ADDRESS") and digits == 0:
        return None
    if kind == "EMAIL_ADDRESS" and "@" not in value:
        return None
    # An address block often opens with its holder's name ("Billing address: Sara Schwarz"): an
    # address without a digit is left to the name stages. A city needs none.
    if kind == "LOCATION" and normal not in _PLACE_FIELDS and digits == 0:
        return None
    # 地址 is also a web address ("下载地址：http://…").
    if kind == "LOCATION" and ("://" in value or "@" in value or value.startswith("www.")):
        return None
    return kind


def _key_before(text: str, colon: int) -> str | None:
    """The known field whose name ends at ``colon`` (up to three words back on its line), or None.

    Plain string work, no regular expression: a pattern over the words before every colon
    backtracked badly on long runs of word characters before ``) :`` (1.5 s for 10 kB)."""
    line = text[max(text.rfind("\n", 0, colon) + 1, colon - 48) : colon]
    parts: list[str] = []
    end = len(line)
    while len(parts) < 3:
        start = end
        while start > 0 and _is_key_char(line[start - 1]):
            start -= 1
        if start == end:
            break
        parts.insert(0, line[start:end])
        end = start
        while end > 0 and line[end - 1] in " \t":
            end -= 1
        if end == start:  # no blank before the word: it is glued to what precedes it
            break
    for count in range(len(parts), 0, -1):
        key = " ".join(parts[-count:])
        if is_field_name(key):
            return key
    han = _HAN_WORD.search(parts[-1]) if parts else None
    if han:
        word = han.group()
        for start in range(len(word) - 1):
            if is_field_name(word[start:]):
                return word[start:]
    return None


def _is_key_char(ch: str) -> bool:
    return ch.isalnum() or ch in "_-"


def _cells(line: str, delimiter: str) -> list[tuple[int, int]]:
    """Each cell's content as offsets into ``line``: quotes and surrounding blanks left out, a
    delimiter inside double quotes no end (``"Okafor, Chidi"``)."""
    cells = []
    start, quoted = 0, False
    for i, ch in enumerate(line):
        if ch == '"':
            quoted = not quoted
        elif ch == delimiter and not quoted:
            cells.append((start, i))
            start = i + 1
    cells.append((start, len(line)))
    trimmed = []
    for a, b in cells:
        while a < b and line[a] in " \t":
            a += 1
        while b > a and line[b - 1] in " \t":
            b -= 1
        if b - a >= 2 and line[a] == line[b - 1] and line[a] in "\"'":
            a, b = a + 1, b - 1
        trimmed.append((a, b))
    return trimmed


def _lines(text: str) -> list[tuple[int, str]]:
    """Each line with its offset (a carriage return before the break left out)."""
    lines, offset = [], 0
    for line in text.split("\n"):
        lines.append((offset, line.removesuffix("\r")))
        offset += len(line) + 1
    return lines


def _header(line: str) -> tuple[str, list[str]] | None:
    """The delimiter and field names of a table's header line, or None."""
    for delimiter in _DELIMITERS:
        if line.count(delimiter) < (2 if delimiter == "|" else 1):
            continue
        names = [line[a:b] for a, b in _cells(line, delimiter)]
        if delimiter == "|":
            names = names[1:-1] if line.strip().startswith("|") else names
        if not all(len(n) <= 30 and len(n.split()) <= 3 and not any(c.isdigit() for c in n) for n in names):
            continue
        if any(is_field_name(n) for n in names):
            return delimiter, names
    return None


def _table_values(text: str) -> Iterator[tuple[int, int, str]]:
    lines = _lines(text)
    i = 0
    while i < len(lines):
        found = _header(lines[i][1])
        if found is None:
            i += 1
            continue
        delimiter, names = found
        j = i + 1
        while j < len(lines):
            offset, line = lines[j]
            if delimiter == "|" and _SEPARATOR_ROW.match(line):
                j += 1
                continue
            cells = _cells(line, delimiter)
            if delimiter == "|" and line.strip().startswith("|"):
                cells = cells[1:-1]
            if not line.strip() or len(cells) != len(names):
                break
            for name, (a, b) in zip(names, cells, strict=True):
                kind = field_type(name, line[a:b])
                if kind:
                    yield offset + a, offset + b, kind
            j += 1
        i = j


class FieldRecognizer(Recognizer):
    """Values of known fields in JSON, ``key=value``, ``Key: value`` lines and tables with a header."""

    name = "FieldRecognizer"
    entities = tuple(_FIELDS_BY_TYPE)
    max_score = SCORE

    def applies(self, view: TextView) -> bool:
        text = view.text
        return ":" in text or "=" in text or "\n" in text or "：" in text

    def find(self, view: TextView, min_score: float = 0.0) -> list[Candidate]:
        text = view.text
        found: list[Candidate] = []
        for m in _QUOTED_PAIR.finditer(text):
            self._add(found, m.group(2), m.start(4), m.end(4), text)
        for m in _EQUALS_PAIR.finditer(text):
            self._add(found, m.group(1), m.start(2), m.end(2), text)
        for m in _COLON.finditer(text):
            key = _key_before(text, m.start())
            value = _VALUE.match(text, m.end()) if key else None
            if key and value:
                end = value.end()
                if FIELDS.get(_normal(key)) != "LOCATION" and "," in value.group():
                    end = value.start() + value.group().index(",")
                self._add(found, key, value.start(), end, text)
        if "\n" in text:
            found.extend(Candidate(a, b, kind, SCORE, self.name) for a, b, kind in _table_values(text))
        return found

    def _add(self, found: list[Candidate], key: str, start: int, end: int, text: str) -> None:
        kind = field_type(key, text[start:end])
        if kind is None:
            return
        shape = _SHAPES.get(kind)
        if shape is not None:
            m = shape.match(text, start, end)
            if m is None:
                return
            end = m.end()
            while end > start and (
                text[end - 1] in " .-(" or (text[end - 1] == ")" and "(" not in text[start:end])
            ):
                end -= 1
            if end == start:
                return
        found.append(Candidate(start, end, kind, _SCORES.get(kind, SCORE), self.name))
