"""Airtime: top-ups and number keeping for a prepaid mobile operator."""

__version__ = "0.1.0"
