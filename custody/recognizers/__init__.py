"""Sealroom's own recognizers: what stock Presidio lacks or gets wrong.

Chinese identifiers (resident IDs, mobile and landline numbers, unified
social credit codes) and names, bank cards of any issuer, and e-mail
addresses, URLs and phone numbers found in any script. See
docs/desensitization.md for why each exists.
"""

from __future__ import annotations

from custody.recognizers.base import Candidate, Context, Recognizer, TextView
from custody.recognizers.chinese import (
    CnLandlineRecognizer,
    CnMobileRecognizer,
    CnResidentIdRecognizer,
    CnUsccRecognizer,
)
from custody.recognizers.generic import BankCardRecognizer, EmailRecognizer, PhoneRecognizer, UrlRecognizer
from custody.recognizers.names_zh import ChineseNameRecognizer


def sealroom_recognizers() -> list[Recognizer]:
    """Return one instance of each Sealroom recognizer."""
    return [
        EmailRecognizer(),
        UrlRecognizer(),
        PhoneRecognizer(),
        BankCardRecognizer(),
        CnResidentIdRecognizer(),
        CnMobileRecognizer(),
        CnLandlineRecognizer(),
        CnUsccRecognizer(),
        ChineseNameRecognizer(),
    ]


__all__ = [
    "BankCardRecognizer",
    "Candidate",
    "ChineseNameRecognizer",
    "CnLandlineRecognizer",
    "CnMobileRecognizer",
    "CnResidentIdRecognizer",
    "CnUsccRecognizer",
    "Context",
    "EmailRecognizer",
    "PhoneRecognizer",
    "Recognizer",
    "TextView",
    "UrlRecognizer",
    "sealroom_recognizers",
]
