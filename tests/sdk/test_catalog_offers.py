"""Search results carry each listing's offers and prices, so ordering needs no listing call."""

from __future__ import annotations

from sealroom import Client


def test_search_results_carry_offers_with_prices(trainer: Client, market):
    offer = market(price="fixed")
    [found] = trainer.search_catalog()
    [sold] = found.offers
    assert (sold.id, sold.price_model) == (offer.public_id, "fixed")
    assert sold.unit_price == trainer.get_listing(found.id).offers[0].unit_price > 0
