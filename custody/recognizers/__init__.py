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
from custody.recognizers.en_ids import (
    ContextIdRecognizer,
    ContextPhoneRecognizer,
    PasswordRecognizer,
    UsernameRecognizer,
)
from custody.recognizers.en_names import EnglishNameRecognizer, HandleRecognizer
from custody.recognizers.en_orgs import OrganizationPatternRecognizer
from custody.recognizers.en_places import AddressRecognizer, PlaceGazetteerRecognizer
from custody.recognizers.fields import FieldRecognizer
from custody.recognizers.generic import (
    BankCardRecognizer,
    DateTimeRecognizer,
    EmailRecognizer,
    PhoneRecognizer,
    UrlRecognizer,
)
from custody.recognizers.names_zh import ChineseNameRecognizer
from custody.recognizers.zh_address import ChineseAddressRecognizer
from custody.recognizers.zh_entities import ChineseEntityRecognizer, ChineseHandleRecognizer
from custody.recognizers.zh_ids import (
    CnAccountNumberRecognizer,
    CnDateRecognizer,
    CnLicensePlateRecognizer,
    CnPassportRecognizer,
)
from custody.recognizers.zh_model import ChineseModelRecognizer


def sealroom_recognizers() -> list[Recognizer]:
    """Return one instance of each Sealroom recognizer."""
    return [
        EmailRecognizer(),
        UrlRecognizer(),
        PhoneRecognizer(),
        BankCardRecognizer(),
        DateTimeRecognizer(),
        HandleRecognizer(),
        EnglishNameRecognizer(),
        AddressRecognizer(),
        PlaceGazetteerRecognizer(),
        OrganizationPatternRecognizer(),
        ContextIdRecognizer(),
        ContextPhoneRecognizer(),
        PasswordRecognizer(),
        UsernameRecognizer(),
        FieldRecognizer(),
        CnResidentIdRecognizer(),
        CnMobileRecognizer(),
        CnLandlineRecognizer(),
        CnUsccRecognizer(),
        ChineseNameRecognizer(),
        ChineseEntityRecognizer(),
        ChineseHandleRecognizer(),
        ChineseAddressRecognizer(),
        ChineseModelRecognizer(),
        CnPassportRecognizer(),
        CnLicensePlateRecognizer(),
        CnAccountNumberRecognizer(),
        CnDateRecognizer(),
    ]


__all__ = [
    "AddressRecognizer",
    "BankCardRecognizer",
    "Candidate",
    "ChineseAddressRecognizer",
    "ChineseEntityRecognizer",
    "ChineseHandleRecognizer",
    "ChineseModelRecognizer",
    "ChineseNameRecognizer",
    "CnAccountNumberRecognizer",
    "CnDateRecognizer",
    "CnLandlineRecognizer",
    "CnLicensePlateRecognizer",
    "CnMobileRecognizer",
    "CnPassportRecognizer",
    "CnResidentIdRecognizer",
    "CnUsccRecognizer",
    "Context",
    "ContextIdRecognizer",
    "ContextPhoneRecognizer",
    "DateTimeRecognizer",
    "EmailRecognizer",
    "EnglishNameRecognizer",
    "FieldRecognizer",
    "HandleRecognizer",
    "OrganizationPatternRecognizer",
    "PasswordRecognizer",
    "PhoneRecognizer",
    "PlaceGazetteerRecognizer",
    "Recognizer",
    "TextView",
    "UrlRecognizer",
    "UsernameRecognizer",
    "sealroom_recognizers",
]
