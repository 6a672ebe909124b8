"""Marketplace models: the ledger, the catalog (listings, offers, rights) and orders."""

from marketplace.models.catalog import *  # noqa: F403
from marketplace.models.ledger import *  # noqa: F403
from marketplace.models.orders import *  # noqa: F403
