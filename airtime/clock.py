"""The one source of "now", so tests can travel in time (time-machine patches it)."""

from __future__ import annotations

from datetime import UTC, date, datetime


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


def today() -> date:
    """Today's date in UTC; validity dates are UTC calendar dates."""
    return utcnow().date()
