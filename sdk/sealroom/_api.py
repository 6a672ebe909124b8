"""The server's API as this SDK knows it, in one place: paths, request bodies, amounts.

Amounts: the server sends each as a decimal string in the currency's major units
(``"amount": "150.00"``) with the same amount in integer minor units beside it
(``"amount_minor": 15000``), and takes decimal strings on the way in
(``amount_to_api``). When the wire format changes, change this module and the
``from_api`` constructors in ``models.py``; nothing else reads it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

PREFIX = "/api/v1"

ME = "/me"
TOKENS = "/tokens"
AUDIT_KEYS = "/audit/keys"

LISTINGS = "/catalog/listings"
LISTING = "/catalog/listings/{listing_id}"
OFFER = "/catalog/offers/{offer_id}"
OFFER_QUOTE = "/catalog/offers/{offer_id}/quote"

ORDERS = "/orders"
ORDER = "/orders/{ref}"
LICENSES = "/licenses"
LICENSE = "/licenses/{ref}"
BALANCES = "/balances"
PAYOUTS = "/payouts"

VERSION = "/versions/{version_id}"
VERSION_CONTRIBUTIONS = "/versions/{version_id}/contributions"
CONTRIBUTION = "/contributions/{contribution_id}"
CONTRIBUTION_PART = "/contributions/{contribution_id}/parts/{number}"
CONTRIBUTION_COMPLETE = "/contributions/{contribution_id}/complete"

TEMPLATES = "/training/templates"
BASES = "/training/bases"
JOBS = "/training/jobs"
JOB = "/training/jobs/{job_id}"
JOB_CANCEL = "/training/jobs/{job_id}/cancel"
JOB_METRICS = "/training/jobs/{job_id}/metrics"
JOB_ARTIFACT = "/training/jobs/{job_id}/artifact"
JOB_RECEIPT = "/training/jobs/{job_id}/receipt"

# POSTs that spend money or a license's allowance: the SDK sends an Idempotency-Key,
# generated once per call and kept across its retries. The server honours it on
# orders and payouts; jobs take it too once the server reads it there (a gap today).
IDEMPOTENT_POSTS = frozenset({ORDERS, PAYOUTS, JOBS})

# Job states: the release gate runs while a job is ``releasing``.
JOB_FINAL_STATES = frozenset({"succeeded", "failed", "cancelled"})
JOB_GATE_STATE = "releasing"

# Digits after the point for currencies that do not use two (ISO 4217).
_MINOR_DIGITS = {"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0, "BHD": 3, "KWD": 3, "JOD": 3, "OMR": 3}


def minor_digits(currency: str) -> int:
    return _MINOR_DIGITS.get(currency.upper(), 2)


def money_from_api(data: dict[str, Any], key: str, currency: str) -> int:
    """The amount ``key`` of a response, in minor units: ``<key>_minor`` when the server sends it
    (it does, beside every amount), else the decimal string ``<key>`` read exactly."""
    minor = data.get(f"{key}_minor")
    if isinstance(minor, int) and not isinstance(minor, bool):
        return minor
    return amount_from_api(data.get(key), currency)


def amount_to_api(minor: int, currency: str) -> str:
    """Minor units as the decimal string of major units the API takes (``15000`` EUR -> ``"150.00"``)."""
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError(f"an amount in minor units is an int, not {minor!r}")
    digits = minor_digits(currency)
    return f"{Decimal(minor).scaleb(-digits):.{digits}f}"


def amount_from_api(value: Any, currency: str) -> int:
    """An amount as the server sends it, in minor units: a decimal string is in major units
    (``"150.00"`` EUR is 15000 cents); an integer is taken as minor units (servers before the
    decimal strings sent those)."""
    if isinstance(value, bool):
        raise TypeError("an amount is not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip():
        # A decimal string is in major units ("150.00" EUR is 15000 cents).
        scaled = Decimal(value.strip()).scaleb(minor_digits(currency))
        if scaled != scaled.to_integral_value():
            raise ValueError(f"{value!r} has more digits than {currency} allows")
        return int(scaled)
    if value is None:
        return 0
    raise TypeError(f"unexpected amount {value!r}")


def job_body(
    *,
    license_ref: str,
    template: str,
    base_id: str,
    hyperparameters: dict[str, Any],
    dp: dict[str, Any] | None,
    label_field: str,
    purpose: str,
) -> dict[str, Any]:
    """The body of ``POST /training/jobs``: the license reference (``lic_…``) an order returned."""
    body: dict[str, Any] = {
        "license": license_ref,
        "template": template,
        "base": base_id,
        "hyperparameters": hyperparameters,
        "label_field": label_field,
        "purpose": purpose,
    }
    if dp is not None:
        body["dp"] = dp
    return body


def contribution_body(
    *,
    filename: str,
    size: int,
    format: str | None,
    text_fields: list[str] | None,
    metadata_fields: list[str] | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"filename": filename, "size": size}
    if format:
        body["format"] = format
    if text_fields:
        body["text_fields"] = text_fields
    if metadata_fields:
        body["metadata_fields"] = metadata_fields
    return body
