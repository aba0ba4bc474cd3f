"""The audit log: one row per staff action, written in the action's own transaction.

There is deliberately no function here (or anywhere) that changes or deletes a row; the
database refuses both too (triggers made by the migration)."""

from __future__ import annotations

import json
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from airtime.care.models import AuditEntry
from airtime.clock import utcnow

PAGE_SIZE_MAX = 200


class Actor(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def email(self) -> str: ...


def _plain(values: dict[str, Any] | None) -> dict[str, Any]:
    """JSON-safe copies of the before/after values (dates and amounts as text or numbers)."""
    result: dict[str, Any] = json.loads(json.dumps(values or {}, default=str))
    return result


def record(
    session: Session,
    *,
    actor: Actor,
    action: str,
    subject_type: str,
    subject_id: object,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str = "",
) -> AuditEntry:
    """Append one audit row in the caller's transaction."""
    entry = AuditEntry(
        staff_user_id=actor.id,
        staff_email=actor.email[:254],
        action=action[:60],
        subject_type=subject_type[:40],
        subject_id=str(subject_id)[:80],
        before=_plain(before),
        after=_plain(after),
        reason=reason[:500],
        at=utcnow(),
    )
    session.add(entry)
    session.flush()
    return entry


def entries(
    session: Session, *, subject_type: str | None = None, subject_id: object = None, limit: int = 50
) -> list[AuditEntry]:
    """The newest audit rows, for one subject or for everything."""
    query = select(AuditEntry)
    if subject_type is not None:
        query = query.where(AuditEntry.subject_type == subject_type)
    if subject_id is not None:
        query = query.where(AuditEntry.subject_id == str(subject_id))
    return list(
        session.scalars(query.order_by(AuditEntry.id.desc()).limit(max(1, min(limit, PAGE_SIZE_MAX))))
    )
