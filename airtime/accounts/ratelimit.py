"""Fixed-window failure counters kept in the database, so every app process shares them."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from airtime.accounts.models import RateLimitCounter
from airtime.clock import utcnow
from airtime.db.dialect import upsert

_counters = cast(Table, RateLimitCounter.__table__)


def window_start(now: datetime, window_minutes: int) -> datetime:
    """The start of the fixed window containing ``now`` (windows align to the epoch)."""
    seconds = window_minutes * 60
    return datetime.fromtimestamp(int(now.timestamp()) // seconds * seconds, tz=now.tzinfo)


def failures(session: Session, key: str, *, window_minutes: int) -> tuple[int, datetime]:
    """How many failures ``key`` has in the current window, and when that window ends."""
    start = window_start(utcnow(), window_minutes)
    count = session.execute(
        select(_counters.c.count).where(_counters.c.key == key, _counters.c.window_start == start)
    ).scalar()
    return int(count or 0), start + timedelta(minutes=window_minutes)


def record_failure(session: Session, key: str, *, window_minutes: int) -> int:
    """Count one failure for ``key`` atomically; returns the count in the window."""
    start = window_start(utcnow(), window_minutes)
    statement = upsert(session, _counters).values(key=key, window_start=start, count=1)
    statement = statement.on_conflict_do_update(
        index_elements=[_counters.c.key, _counters.c.window_start],
        set_={"count": _counters.c.count + 1},
    ).returning(_counters.c.count)
    return int(session.execute(statement).scalar_one())
