"""Notices the operator publishes on the portal (promotions, price changes), in both languages."""
