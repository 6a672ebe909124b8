"""Check digits of the identifiers we validate. Pure functions, no dependencies."""

from __future__ import annotations

import datetime
from typing import Final

_ID_WEIGHTS: Final = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK: Final = "10X98765432"
# GB 32100-2015: the unified social credit code's alphabet (no I, O, S, V, Z).
USCC_ALPHABET: Final = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_VALUE: Final = {c: i for i, c in enumerate(USCC_ALPHABET)}
_USCC_WEIGHTS: Final = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
# Resident ID area codes start with the province: 1-6 mainland regions, 8 for
# Hong Kong, Macao and Taiwan residents' permits.
_ID_PROVINCES: Final = frozenset("12345678")


def digits_only(value: str) -> str:
    """Return the value without spaces, dashes and dots."""
    return value.replace(" ", "").replace("-", "").replace(".", "")


def luhn_valid(number: str) -> bool:
    """Say whether a string of digits passes the Luhn check."""
    if not number.isdigit():
        return False
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = ord(char) - 48
        if index % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def luhn_check_digit(partial: str) -> str:
    """Return the digit that makes ``partial + digit`` pass the Luhn check."""
    for digit in "0123456789":
        if luhn_valid(partial + digit):
            return digit
    raise ValueError("not a string of digits")  # pragma: no cover - unreachable for digits


def cn_resident_id_check_char(first17: str) -> str:
    """Return the ISO 7064 MOD 11-2 check character of a resident ID's first 17 digits."""
    total = sum((ord(c) - 48) * w for c, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


def plausible_birth_date(yyyymmdd: str, *, today: datetime.date | None = None) -> bool:
    """Say whether ``YYYYMMDD`` is a real date between 1900 and today."""
    try:
        born = datetime.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:8]))
    except ValueError:
        return False
    return datetime.date(1900, 1, 1) <= born <= (today or datetime.date.today())


def cn_resident_id_valid(value: str) -> bool:
    """Say whether an 18-character value is a well-formed Chinese resident ID.

    Checks the province digit, the birth date (a real date, 1900 to today) and
    the ISO 7064 MOD 11-2 check character (``X`` stands for 10).
    """
    value = value.upper()
    if len(value) != 18 or not value[:17].isdigit() or value[0] not in _ID_PROVINCES:
        return False
    if not plausible_birth_date(value[6:14]):
        return False
    return cn_resident_id_check_char(value[:17]) == value[17]


def uscc_check_char(first17: str) -> str:
    """Return the check character of a unified social credit code's first 17 characters."""
    total = sum(_USCC_VALUE[c] * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def uscc_valid(value: str) -> bool:
    """Say whether an 18-character value is a unified social credit code with a valid check character."""
    value = value.upper()
    if len(value) != 18 or any(c not in _USCC_VALUE for c in value):
        return False
    if not value[2:8].isdigit():
        return False
    return uscc_check_char(value[:17]) == value[17]


def nhs_valid(value: str) -> bool:
    """Say whether ten digits pass the NHS number's modulus 11 check."""
    digits = digits_only(value)
    if len(digits) != 10 or not digits.isdigit():
        return False
    total = sum((ord(c) - 48) * w for c, w in zip(digits[:9], range(10, 1, -1), strict=True))
    check = 11 - total % 11
    if check == 11:
        check = 0
    return check != 10 and check == ord(digits[9]) - 48
