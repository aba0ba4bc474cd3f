""" "Nothing moved": a fingerprint of every table to compare before and after a refusal."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from airtime.db.models import metadata
from airtime.db.session import unit_of_work

# Tables that may legitimately change on a refused request (counted failures).
COUNTERS = {"rate_limit_counters"}


def fingerprint(factory: sessionmaker[Session], *, ignore: set[str] = COUNTERS) -> dict[str, Any]:
    """Row count of every table, plus every kept balance and every customer's password hash
    and language, so a refused request that changed anything is caught."""
    with unit_of_work(factory) as session:
        result: dict[str, Any] = {
            table.name: session.scalar(select(func.count()).select_from(table))
            for table in metadata.sorted_tables
            if table.name not in ignore
        }
        result["balances"] = session.execute(
            text("SELECT id, balance_minor FROM ledger_accounts ORDER BY id")
        ).all()
        result["customers"] = session.execute(
            text("SELECT id, email, password_hash, language FROM customers ORDER BY id")
        ).all()
        result["sessions"] = session.execute(
            text("SELECT token_hash, revoked_at FROM auth_sessions ORDER BY token_hash")
        ).all()
        result["reset_tokens"] = session.execute(
            text("SELECT token_hash, used_at FROM password_reset_tokens ORDER BY token_hash")
        ).all()
    return result
