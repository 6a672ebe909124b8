"""Model listing terms (issue 16): what a licensee of a custody model may do, and the model share.

The document (validated by ``model_terms_validate``; docs/models.md explains it)::

    {"purposes": ["research"],
     "inference": {"allowed": true, "price_per_million_tokens": "2.50", "currency": "EUR",
                   "max_tokens_per_call": 256, "cap_tokens": 1000000},
     "distillation_allowed": false, "generation_allowed": false, "fine_tune_allowed": false,
     "model_share_bps": 3000, "distill_share_bps": 2000, "term_days": 30}

``model_share_bps`` is the trainer's share of each release; the data's holders share the
rest as the version's allocation in force says (``model_shares``). ``distill_share_bps``
(optional) is what a student distilled from the model owes the model's holders of each of its
own releases (``model_rights_exact``; the student's job records the default otherwise).
A model trained on several versions splits its data side across them by the tokens read from
each (``mixed_data_shares``). One permission check per
use (``model_use_allowed``) reads the grant snapshot, so training asks custody's grant, never
marketplace (``custody.services.models_custody.model_use_allowed``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
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
_KEYS = {"purposes", "inference", "model_share_bps", "distill_share_bps", "term_days", *_FLAGS}
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
    distill_share = raw.get("distill_share_bps")
    if distill_share is not None and not _int(distill_share, 0, BASIS_POINTS):
        errors.append(
            _err("/terms/distill_share_bps", "out_of_range", "null or an integer 0..10000 (basis points).")
        )
    if not _int(raw.get("term_days", 30), 1, MAX_TERM_DAYS):
        errors.append(_err("/terms/term_days", "out_of_range", f"An integer 1..{MAX_TERM_DAYS}."))
    if errors:
        raise TermsInvalid(errors[0]["detail"], errors=errors)
    clean = {
        "kind": "model",
        "purposes": list(purposes),  # type: ignore[arg-type]
        "inference": inference,
        **{flag: bool(raw.get(flag, False)) for flag in _FLAGS},
        "model_share_bps": int(raw["model_share_bps"]),
        "term_days": int(raw.get("term_days", 30)),
    }
    if distill_share is not None:
        clean["distill_share_bps"] = int(distill_share)
    return clean


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


# --- the rights of a model with several versions or a teacher (issue 16), exact as fractions ----


def mixed_data_shares(versions: Sequence[tuple[int, Mapping[int, int]]]) -> dict[int, Fraction]:
    """The data side of a model trained on several versions, as fractions summing to 1.

    ``versions``: (weight, allocation in bps) per version, the weight being the tokens the job read
    from it (or its mixing weight); each version's part is split as its allocation says. A version
    of weight 0 pays nothing. :raises ValueError: no positive weight.
    """
    total = sum(weight for weight, _ in versions)
    if total <= 0 or any(weight < 0 for weight, _ in versions):
        raise ValueError("a model's versions need non-negative weights, one of them positive")
    shares: dict[int, Fraction] = {}
    for weight, allocation in versions:
        part = Fraction(weight, total)
        allocated = sum(allocation.values())
        for holder, bps in allocation.items():
            if weight and bps:
                shares[int(holder)] = shares.get(int(holder), Fraction(0)) + part * Fraction(bps, allocated)
    return shares


def model_rights_exact(
    *,
    data: Mapping[int, Fraction],
    trainer_id: int,
    model_share_bps: int,
    teacher: Mapping[int, Fraction] | None = None,
    teacher_share_bps: int = 0,
) -> dict[int, Fraction]:
    """Each holder's exact fraction of a model's releases (they sum to 1).

    The teacher's holders (``teacher``: the teacher's own rights, any positive scale) take
    ``teacher_share_bps`` of every release, split as the teacher's rights are; the trainer takes
    ``model_share_bps`` of the rest and the data's holders (``data``, summing to 1) the remainder.
    """
    own: dict[int, Fraction] = {}
    model_share = Fraction(model_share_bps, BASIS_POINTS)
    if model_share:
        own[trainer_id] = model_share
    for holder, part in data.items():
        own[holder] = own.get(holder, Fraction(0)) + part * (1 - model_share)
    teacher_total = sum((teacher or {}).values(), Fraction(0))
    if not teacher or teacher_total <= 0 or not teacher_share_bps:
        return own
    share = Fraction(teacher_share_bps, BASIS_POINTS)
    rights = {holder: part * (1 - share) for holder, part in own.items()}
    for holder, part in teacher.items():
        rights[holder] = rights.get(holder, Fraction(0)) + share * Fraction(part) / teacher_total
    return rights


def integer_weights(exact: Mapping[int, Fraction]) -> dict[int, int]:
    """Exact fractions as the smallest integer weights with the same ratios (zeros dropped),
    which the ledger's largest-remainder split turns into minor units summing to the amount."""
    positive = {int(k): Fraction(v) for k, v in exact.items() if v > 0}
    if not positive:
        return {}
    scale = math.lcm(*(value.denominator for value in positive.values()))
    weights = {k: int(v * scale) for k, v in positive.items()}
    divisor = math.gcd(*weights.values())
    return {k: v // divisor for k, v in sorted(weights.items())}
