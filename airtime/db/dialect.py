"""The few statements whose spelling differs between SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_ignoring_conflicts(session: Session, table: Table | Any) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` for the session's database."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def upsert(session: Session, table: Table | Any) -> Any:
    """An ``INSERT`` whose ``on_conflict_do_update`` the caller completes."""
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"
