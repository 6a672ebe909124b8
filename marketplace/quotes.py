"""Prices and quotes: what a license costs for a given usage, before anyone orders.

Three price models (``PriceModel``): fixed per license; metered per million
platform tokens, escrowed up to the terms' token cap (``max_tokens``); and
per period (``period_days`` long), escrowed one period at a time. Amounts are
integer minor units; a metered price rounds up to the next minor unit. A price
arrives as a decimal string in the listing currency's major units
(``"150.00"``), read by ``common.money.parse_money`` like every other amount.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common.exceptions import FieldError
from common.money import MoneyInvalid, format_money, parse_money
from common.numbers import MAX_AMOUNT, parse_integer
from marketplace.exceptions import PriceInvalid, QuoteInvalid

if TYPE_CHECKING:
    from marketplace.models import OfferTerms

TOKENS_PER_UNIT = 1_000_000
# A price above this (minor units) is a typo, not a price.
MAX_UNIT_PRICE = MAX_AMOUNT
PRICE_MODELS = ("fixed", "metered", "period")


@dataclass(frozen=True)
class Quote:
    """The price of a usage under one terms row; ``escrow`` is what an order holds up front."""

    amount: int
    currency: str
    price_model: str
    escrow: int
    breakdown: str


@dataclass(frozen=True)
class Price:
    model: str
    unit_price: int
    period_days: int | None


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def metered_amount(unit_price: int, tokens: int) -> int:
    """The price of ``tokens`` platform tokens at ``unit_price`` per million, rounded up."""
    return _ceil_div(unit_price * tokens, TOKENS_PER_UNIT)


def _price_error(pointer: str, code: str, detail: str) -> PriceInvalid:
    errors: list[FieldError] = [{"pointer": pointer, "code": code, "detail": detail}]
    return PriceInvalid(f"The price is not valid: {detail}", errors=errors)


def _integer(value: Any) -> int | None:
    return parse_integer(value)


def price_validate(document: Any, *, currency: str, pointer: str = "/price") -> Price:
    """Parse ``{"model", "unit_price", "period_days"}``; ``unit_price`` is a decimal string of
    ``currency``'s major units (``"150.00"``), zero allowed (a free offer).

    :raises PriceInvalid: unknown model or field, a price that is not an exact amount of the
        currency (negative, a number, too many decimals), a period without days.
    """
    if not isinstance(document, dict):
        raise _price_error(pointer, "invalid", "Expected an object with model and unit_price.")
    unknown = sorted(set(document) - {"model", "unit_price", "period_days"})
    if unknown:
        raise _price_error(f"{pointer}/{unknown[0]}", "unknown_field", f"Unknown field {unknown[0]!r}.")
    model = document.get("model")
    if model not in PRICE_MODELS:
        raise _price_error(f"{pointer}/model", "invalid", f"Use one of {', '.join(PRICE_MODELS)}.")
    try:
        unit_price = parse_money(
            document.get("unit_price"), currency, allow_zero=True, max_minor=MAX_UNIT_PRICE
        )
    except MoneyInvalid as error:
        raise _price_error(f"{pointer}/unit_price", error.code, error.message) from error
    period_days = document.get("period_days")
    if model == "period":
        days = _integer(period_days)
        if days is None or days < 1 or days > 36_500:
            raise _price_error(f"{pointer}/period_days", "invalid", "A period of 1 to 36,500 days.")
        return Price(model=model, unit_price=unit_price, period_days=days)
    if period_days is not None:
        raise _price_error(f"{pointer}/period_days", "not_allowed", "Only a period price has period_days.")
    return Price(model=model, unit_price=unit_price, period_days=None)


def _quote_error(pointer: str, code: str, detail: str) -> QuoteInvalid:
    errors: list[FieldError] = [{"pointer": pointer, "code": code.rsplit(".", 1)[-1], "detail": detail}]
    return QuoteInvalid(detail, code=code, errors=errors)


def _money(amount: int, currency: str) -> str:
    return format_money(amount, currency)


def quote(terms_row: OfferTerms, *, tokens: int | None = None, periods: int | None = None) -> Quote:
    """The price of a usage under ``terms_row``; metered needs ``tokens`` (default: the cap).

    :raises QuoteInvalid: tokens above the cap or below 1, periods outside the term, or a usage
        the price model does not take.
    """
    currency = terms_row.offer.listing.currency
    constraint = terms_row.terms["constraint"]
    unit = terms_row.unit_price
    model = terms_row.price_model
    if model == "fixed":
        if tokens is not None or periods is not None:
            raise _quote_error(
                "/tokens", "marketplace.quote_usage_not_priced", "A fixed price takes no usage."
            )
        return Quote(unit, currency, model, unit, f"Fixed price per license: {_money(unit, currency)}.")
    if model == "metered":
        if periods is not None:
            raise _quote_error(
                "/periods", "marketplace.quote_usage_not_priced", "A metered price has no periods."
            )
        cap = int(constraint["max_tokens"])
        used = cap if tokens is None else tokens
        if isinstance(used, bool) or not isinstance(used, int) or used < 1:
            raise _quote_error(
                "/tokens", "marketplace.quote_tokens_invalid", "Tokens must be a positive integer."
            )
        if used > cap:
            raise _quote_error(
                "/tokens",
                "marketplace.quote_tokens_above_cap",
                f"The license caps platform tokens at {cap:,}.",
            )
        amount, escrow = metered_amount(unit, used), metered_amount(unit, cap)
        return Quote(
            amount,
            currency,
            model,
            escrow,
            f"{used:,} platform tokens at {_money(unit, currency)} per million = {_money(amount, currency)}; "
            f"escrowed at order: the cap of {cap:,} tokens, {_money(escrow, currency)}; the unused rest "
            "is refunded.",
        )
    if tokens is not None:
        raise _quote_error("/tokens", "marketplace.quote_usage_not_priced", "A period price has no tokens.")
    days = int(terms_row.period_days or 1)
    most = _ceil_div(int(constraint["term_days"]), days)
    count = 1 if periods is None else periods
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= most:
        raise _quote_error(
            "/periods",
            "marketplace.quote_periods_invalid",
            f"Periods must be 1 to {most} (the license term).",
        )
    amount = unit * count
    return Quote(
        amount,
        currency,
        model,
        unit,
        f"{count} period{'s' if count != 1 else ''} of {days} days at {_money(unit, currency)} = "
        f"{_money(amount, currency)}; escrowed one period at a time.",
    )
