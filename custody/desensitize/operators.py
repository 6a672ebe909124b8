"""Operators: what replaces a detected span (redact, tag, mask, keyed pseudonym, surrogate)."""

from __future__ import annotations

import hashlib
import hmac
import random
import re
import string
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Final

from custody.language import has_han
from custody.recognizers.checksums import USCC_ALPHABET, luhn_check_digit, uscc_check_char

if TYPE_CHECKING:
    from faker import Faker

    from custody.desensitize.policy import OperatorSpec

PSEUDONYM_HEX: Final = 8
# Identifiers compared by their characters alone: "138-1234-5678" and
# "13812345678" are the same number, so they get the same pseudonym.
_IDENTIFIER_TYPES: Final = frozenset(
    {
        "PHONE_NUMBER",
        "CREDIT_CARD",
        "BANK_CARD",
        "IBAN_CODE",
        "US_SSN",
        "US_ITIN",
        "US_BANK_NUMBER",
        "UK_NHS",
        "CN_RESIDENT_ID",
        "CN_USCC",
    }
)
_SEPARATORS: Final = re.compile(r"[\s\-().+/]")
_NATIONALITIES: Final = (
    *("American", "British", "Canadian", "French", "German", "Italian", "Spanish", "Mexican", "Brazilian"),
    *(
        "Indian",
        "Japanese",
        "Korean",
        "Australian",
        "Irish",
        "Dutch",
        "Swedish",
        "Polish",
        "Greek",
        "Turkish",
    ),
)


def normalize(entity_type: str, value: str) -> str:
    """Return the form of a value that pseudonyms and surrogates are keyed on."""
    value = unicodedata.normalize("NFKC", value).casefold()
    if entity_type in _IDENTIFIER_TYPES:
        value = _SEPARATORS.sub("", value)
        if entity_type == "PHONE_NUMBER" and len(value) == 13 and value.startswith("861"):
            value = value[2:]  # +86 mobile numbers, with and without the country code
        return value
    return " ".join(value.split())


def keyed_digest(key: bytes, purpose: str, entity_type: str, value: str) -> bytes:
    """Return HMAC-SHA256 of the normalized value under the version's key, separated by purpose and type."""
    message = f"{purpose}\x00{entity_type}\x00{normalize(entity_type, value)}".encode()
    return hmac.new(key, message, hashlib.sha256).digest()


def pseudonym(key: bytes, entity_type: str, value: str) -> str:
    """Return ``<TYPE_xxxxxxxx>``: the same for the same value under one key, unrelated under another."""
    return f"<{entity_type}_{keyed_digest(key, 'pseudonym', entity_type, value).hex()[:PSEUDONYM_HEX]}>"


def mask(value: str, mask_char: str, keep_last: int) -> str:
    """Return the value masked but for its last ``keep_last`` characters (all, if that would show all)."""
    if keep_last <= 0 or keep_last >= len(value):
        return mask_char * len(value)
    return mask_char * (len(value) - keep_last) + value[-keep_last:]


@lru_cache(maxsize=2)
def _faker(locale: str) -> Faker:
    from faker import Faker  # only when a policy asks for surrogates

    return Faker(locale)


def _shape_like(value: str, rng: random.Random) -> str:
    """Return a value of the same shape: digits for digits, letters for letters, the rest kept."""
    out = []
    for char in value:
        if char.isdigit():
            out.append(rng.choice(string.digits))
        elif char.isascii() and char.isalpha():
            letter = rng.choice(string.ascii_lowercase)
            out.append(letter.upper() if char.isupper() else letter)
        else:
            out.append(char)
    return "".join(out)


def _bank_card(value: str, rng: random.Random) -> str:
    length = max(13, min(19, sum(c.isdigit() for c in value)))
    partial = "62" + "".join(rng.choice(string.digits) for _ in range(length - 3))
    return partial + luhn_check_digit(partial)


def _uscc(rng: random.Random) -> str:
    body = "91" + "".join(rng.choice(string.digits) for _ in range(6))
    body += "".join(rng.choice(USCC_ALPHABET) for _ in range(9))
    return body + uscc_check_char(body)


def _surrogate_for(entity_type: str, value: str, rng: random.Random) -> str:
    chinese = has_han(value)
    en, zh = _faker("en_US"), _faker("zh_CN")
    for fake in (en, zh):
        fake.seed_instance(rng.getrandbits(64))
    generators: dict[str, Callable[[], str]] = {
        "PERSON": zh.name if chinese else en.name,
        "LOCATION": zh.city if chinese else en.city,
        "ORGANIZATION": zh.company if chinese else en.company,
        "EMAIL_ADDRESS": en.safe_email,
        "URL": en.url,
        "IP_ADDRESS": en.ipv6 if ":" in value else en.ipv4_private,
        "DATE_TIME": zh.date if chinese else en.date,
        "NRP": lambda: rng.choice(_NATIONALITIES),
        "CREDIT_CARD": en.credit_card_number,
        "BANK_CARD": lambda: _bank_card(value, rng),
        "IBAN_CODE": en.iban,
        "US_SSN": en.ssn,
        "CN_RESIDENT_ID": zh.ssn,
        "CN_USCC": lambda: _uscc(rng),
        "MAC_ADDRESS": en.mac_address,
        "UUID": lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    }
    if entity_type == "PHONE_NUMBER":
        digits = _SEPARATORS.sub("", value)
        mainland_mobile = len(digits) >= 11 and digits[-11] == "1" and digits[-10] in "3456789"
        generators["PHONE_NUMBER"] = zh.phone_number if mainland_mobile else en.phone_number
    if entity_type == "PERSON" and value.startswith("@"):
        generators["PERSON"] = lambda: "@" + en.user_name()
    generate = generators.get(entity_type, lambda: _shape_like(value, rng))
    return str(generate())


def surrogate(key: bytes, entity_type: str, value: str) -> str:
    """Return a realistic fake of the same type, seeded by the keyed digest (stable within a version)."""
    digest = keyed_digest(key, "surrogate", entity_type, value)
    rng = random.Random(int.from_bytes(digest, "big"))
    for _ in range(4):
        fake = _surrogate_for(entity_type, value, rng)
        if fake != value:
            return fake
    return _shape_like(value, rng)  # pragma: no cover - four collisions in a row


class Replacer:
    """Applies a policy's operators under one pseudonym key, remembering what it replaced."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._surrogate = lru_cache(maxsize=65536)(self._make_surrogate)

    def _make_surrogate(self, entity_type: str, value: str) -> str:
        return surrogate(self._key, entity_type, value)

    def replacement(self, spec: OperatorSpec, entity_type: str, value: str) -> str:
        """Return what replaces ``value`` under the operator ``spec``."""
        kind = spec.kind
        if kind == "tag":
            return f"<{entity_type}>"
        if kind == "redact":
            return ""
        if kind == "mask":
            return mask(value, spec.mask_char, spec.keep_last)
        if kind == "pseudonym":
            return pseudonym(self._key, entity_type, value)
        return self._surrogate(entity_type, value)

    def apply(
        self, text: str, spans: Sequence[tuple[int, int, str]], spec_for: Callable[[str], OperatorSpec]
    ) -> str:
        """Return the text with each ``(start, end, entity_type)`` span (sorted, disjoint) replaced."""
        if not spans:
            return text
        parts = []
        cursor = 0
        for start, end, entity_type in spans:
            parts.append(text[cursor:start])
            parts.append(self.replacement(spec_for(entity_type), entity_type, text[start:end]))
            cursor = end
        parts.append(text[cursor:])
        return "".join(parts)
