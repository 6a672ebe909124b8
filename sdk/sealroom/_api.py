"""The server's API as this SDK knows it, in one place: paths, request bodies, amounts.

The API is still moving (amounts may become decimal strings in major units; jobs
may accept a license reference instead of a grant id). When it does, change this
module and the ``from_api`` constructors in ``models.py``; nothing else reads the
wire format.
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


def amount_from_api(value: Any, currency: str) -> int:
    """An amount as the server sends it, in minor units: integers are minor units already (today's
    API); decimal strings are major units (what the API may send later)."""
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
    grant_id: int,
    template: str,
    base_id: int,
    hyperparameters: dict[str, Any],
    dp: dict[str, Any] | None,
    label_field: str,
    purpose: str,
) -> dict[str, Any]:
    """The body of ``POST /training/jobs``: it wants the custody grant and base *ids*."""
    body: dict[str, Any] = {
        "grant": grant_id,
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
