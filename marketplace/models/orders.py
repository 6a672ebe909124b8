"""Orders, licenses, escrow and settlement (see marketplace.services.orders)."""

from __future__ import annotations

__all__: list[str] = []
