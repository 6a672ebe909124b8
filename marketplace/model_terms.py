"""Model listing terms (issue 16): what a licensee of a custody model may do, and the model share.

The document (validated by ``model_terms_validate``; docs/models.md explains it)::

    {"purposes": ["research"],
     "inference": {"allowed": true, "price_per_million_tokens": "2.50", "currency": "EUR",
                   "max_tokens_per_call": 256, "cap_tokens": 1000000},
     "distillation_allowed": false, "generation_allowed": false, "fine_tune_allowed": false,
     "model_share_bps": 3000, "term_days": 30}

``model_share_bps`` is the trainer's share of each release; the data's holders share the
rest as the version's allocation in force says (``model_shares``). One permission check per
use (``model_use_allowed``) reads the grant snapshot, so training asks custody's grant, never
marketplace (``custody.services.models_custody.model_use_allowed``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from common.exceptions import FieldError
from common.money import MoneyInvalid, parse_money
from marketplace.exceptions import TermsInvalid
from marketplace.terms import PURPOSES

BASIS_POINTS = 10_000
MAX_TOKENS_PER_CALL = 4096
MAX_CAP_TOKENS = 10**12
MAX_TERM_DAYS = 3650
_FLAGS = ("distillation_allowed", "generation_allowed", "fine_tune_allowed")
_KEYS = {"purposes", "inference", "model_share_bps", "term_days", *_FLAGS}
_INFERENCE_KEYS = {"allowed", "price_per_million_tokens", "currency", "max_tokens_per_call", "cap_tokens"}


def _err(pointer: str, code: str, detail: str) -> FieldError:
    return {"pointer": pointer, "code": code, "detail": detail}


def _int(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _inference_errors(raw: Any, currency: str) -> tuple[list[FieldError], dict[str, Any]]:
    p = "/terms/inference"
    if not isinstance(raw, Mapping):
        return [_err(p, "required", "An object with allowed, price_per_million_tokens, ...")], {}
    errors = [_err(f"{p}/{k}", "unknown", f"Unknown term {k}.") for k in sorted(set(raw) - _INFERENCE_KEYS)]
    if not isinstance(raw.get("allowed"), bool):
        errors.append(_err(f"{p}/allowed", "invalid", "true or false."))
    if raw.get("currency", currency) != currency:
        errors.append(_err(f"{p}/currency", "invalid", f"The listing's currency is {currency}."))
    price = 0
    try:
        price = parse_money(raw.get("price_per_million_tokens"), currency, allow_zero=True)
    except MoneyInvalid as exc:
        errors.append(_err(f"{p}/price_per_million_tokens", exc.code, exc.message))
    if not _int(raw.get("max_tokens_per_call"), 1, MAX_TOKENS_PER_CALL):
        errors.append(
            _err(f"{p}/max_tokens_per_call", "out_of_range", f"An integer 1..{MAX_TOKENS_PER_CALL}.")
        )
    cap = raw.get("cap_tokens")
    if cap is not None and not _int(cap, 1, MAX_CAP_TOKENS):
        errors.append(_err(f"{p}/cap_tokens", "out_of_range", f"null or an integer 1..{MAX_CAP_TOKENS}."))
    clean = {
        "allowed": raw.get("allowed"),
        "price_per_million_tokens": raw.get("price_per_million_tokens"),
        "price_minor": price,
        "currency": currency,
        "max_tokens_per_call": raw.get("max_tokens_per_call"),
        "cap_tokens": cap,
    }
    return errors, clean


def model_terms_validate(raw: Any, *, currency: str) -> dict[str, Any]:
    """The terms, checked and normalised (``inference.price_minor`` added, in minor units).

    :raises TermsInvalid: with a JSON pointer per problem.
    """
    if not isinstance(raw, Mapping):
        raise TermsInvalid(
            "The terms must be a JSON object.", errors=[_err("/terms", "invalid", "An object.")]
        )
    errors = [_err(f"/terms/{k}", "unknown", f"Unknown term {k}.") for k in sorted(set(raw) - _KEYS)]
    purposes = raw.get("purposes")
    if (
        not isinstance(purposes, list)
        or not purposes
        or any(p not in PURPOSES for p in purposes)
        or len(set(purposes)) != len(purposes)
    ):
        errors.append(_err("/terms/purposes", "invalid", f"A non-empty list of {', '.join(PURPOSES)}."))
    inference_errors, inference = _inference_errors(raw.get("inference"), currency)
    errors += inference_errors
    for flag in _FLAGS:
        if not isinstance(raw.get(flag, False), bool):
            errors.append(_err(f"/terms/{flag}", "invalid", "true or false."))
    if not _int(raw.get("model_share_bps"), 0, BASIS_POINTS):
        errors.append(_err("/terms/model_share_bps", "out_of_range", "An integer 0..10000 (basis points)."))
    if not _int(raw.get("term_days", 30), 1, MAX_TERM_DAYS):
        errors.append(_err("/terms/term_days", "out_of_range", f"An integer 1..{MAX_TERM_DAYS}."))
    if errors:
        raise TermsInvalid(errors[0]["detail"], errors=errors)
    return {
        "kind": "model",
        "purposes": list(purposes),  # type: ignore[arg-type]
        "inference": inference,
        **{flag: bool(raw.get(flag, False)) for flag in _FLAGS},
        "model_share_bps": int(raw["model_share_bps"]),
        "term_days": int(raw.get("term_days", 30)),
    }


def model_shares(*, data_shares: Mapping[int, int], trainer_id: int, model_share_bps: int) -> dict[int, int]:
    """The release weights of a model license: the trainer's ``model_share_bps`` of every release,
    the rest split among the data's holders as their allocation (``data_shares``, bps) says.

    Exact: weights are integers whose ratios are the shares (trainer ``m·10⁴``, holder
    ``bps·(10⁴ − m)``), reduced by their gcd; the ledger's largest-remainder split turns them
    into minor units that sum to the amount. A trainer that also holds data gets both.
    """
    weights: dict[int, int] = {}
    if model_share_bps:
        weights[trainer_id] = model_share_bps * BASIS_POINTS
    rest = BASIS_POINTS - model_share_bps
    if rest:
        for holder, bps in data_shares.items():
            weights[int(holder)] = weights.get(int(holder), 0) + int(bps) * rest
    weights = {k: v for k, v in weights.items() if v > 0}
    divisor = math.gcd(*weights.values()) if weights else 1
    return {k: v // divisor for k, v in sorted(weights.items())}
