"""A price suggestion on the listing draft, from the owner's valuation of the version (issue 15).

Formula (docs/training.md "Price suggestion"):

- ``value`` is the valuation's total: the sum of every record's KNN-Shapley value as the runner
  publishes it (scaled by N, so a record of average worth counts the whole set's accuracy gain on
  the validation set). ``value per million tokens`` = value × 1,000,000 / the version's platform
  tokens.
- A money figure needs an exchange rate between value and price. It is taken from the market:
  every *other* published listing in the same currency whose version has an owner's valuation
  (since sealing) with a positive value and an active metered offer gives a rate, its lowest
  metered price per million tokens ÷ its value per million tokens. The suggestion is the median
  rate × this version's value per million tokens, rounded half-up to the minor unit.
- No valuation, a value of zero or below, or no comparable listing: no money figure, and the page
  says which.

Limits: values are relative to the validation set and the label field each owner chose, so two
versions' values compare only roughly; a few comparables make a noisy median; the suggestion never
sets a price (the provider does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from statistics import median

from custody.models import DatasetVersion, ValuationSummary
from custody.services.valuation_summary import valuation_summary_latest
from marketplace.models import Listing, ListingState, OfferState, OfferTerms, PriceModel

__all__ = ["Comparable", "PriceSuggestion", "price_suggestion", "value_per_million_tokens"]

MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Comparable:
    listing_id: str
    price_per_million: int  # minor units
    value_per_million: Decimal


@dataclass(frozen=True)
class PriceSuggestion:
    valuation: ValuationSummary | None
    value_per_million: Decimal | None = None
    # Minor units per million platform tokens; None when there is no money figure (see ``reason``).
    suggested_price: int | None = None
    rate: Decimal | None = None
    comparables: list[Comparable] = field(default_factory=list)
    reason: str = ""

    @property
    def rate_per_thousand_value(self) -> int | None:
        """The market rate for display: whole minor units per 1,000 units of value (half-up)."""
        if self.rate is None:
            return None
        return int((self.rate * 1000).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def value_per_million_tokens(summary: ValuationSummary) -> Decimal | None:
    """The valuation's total value per million platform tokens; None without tokens or a total."""
    total = summary.summary.get("sum")
    if summary.tokens <= 0 or not isinstance(total, int | float):
        return None
    return Decimal(str(total)) * MILLION / Decimal(summary.tokens)


def _lowest_metered_price(listing: Listing) -> int | None:
    prices = []
    for offer in listing.offers.filter(state=OfferState.ACTIVE):
        terms = OfferTerms.objects.filter(offer=offer).order_by("-number").first()
        if terms is not None and terms.price_model == PriceModel.METERED:
            prices.append(terms.unit_price)
    return min(prices) if prices else None


def _comparables(version: DatasetVersion, currency: str) -> list[Comparable]:
    found = []
    listings = (
        # Only listings whose version was valued at all (the rest cannot give a rate).
        Listing.objects.filter(
            state=ListingState.PUBLISHED, currency=currency, version__valuation_summaries__isnull=False
        )
        .exclude(version=version)
        .distinct()
        .select_related("version")
        .order_by("pk")
    )
    for listing in listings:
        summary = valuation_summary_latest(version=listing.version)
        value = value_per_million_tokens(summary) if summary is not None else None
        price = _lowest_metered_price(listing)
        if value is None or value <= 0 or price is None:
            continue
        found.append(Comparable(listing.public_id, price, value))
    return found


def price_suggestion(*, listing: Listing) -> PriceSuggestion:
    """What the valuation says about ``listing``'s price (see the module's docstring)."""
    summary = valuation_summary_latest(version=listing.version)
    if summary is None:
        return PriceSuggestion(None, reason="This version has no valuation since it was sealed.")
    value = value_per_million_tokens(summary)
    if value is None or value <= 0:
        return PriceSuggestion(
            summary, value, reason="The valuation found no positive value, so there is no price to suggest."
        )
    comparables = _comparables(listing.version, listing.currency)
    if not comparables:
        return PriceSuggestion(
            summary,
            value,
            reason=(
                f"No other published listing in {listing.currency} has both a valuation and a metered "
                "price yet, so there is no rate to turn value into money."
            ),
        )
    rate = Decimal(median(c.price_per_million / c.value_per_million for c in comparables))
    suggested = int((rate * value).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    return PriceSuggestion(summary, value, suggested, rate, comparables)
