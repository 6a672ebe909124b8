"""Marketplace services: catalog (listings, offers, rights) and money (orders, escrow, settlement)."""
