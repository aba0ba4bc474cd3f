"""Every lifecycle transition of a line, with its reason; written once, never changed."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from airtime.db.base import Base, BigId, UTCDateTime


class TransitionReason:
    VALIDITY_ENDED = "validity_ended"  # active → grace
    GRACE_ENDED = "grace_ended"  # grace → suspended
    SUSPENSION_ENDED = "suspension_ended"  # suspended → terminated
    QUARANTINE_ENDED = "quarantine_ended"  # terminated: the number is released
    TOPUP = "topup"  # grace / suspended / pending_activation → active
    VALIDITY_RESTORED = "validity_restored"  # grace / suspended → active after an extension
    ACTIVITY = "activity"  # a chargeable event under activity_resets
    CARE = "care"  # a staff action


class LineTransition(Base):
    __tablename__ = "line_transitions"
    __table_args__ = (Index("ix_line_transitions_line_id_id", "line_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("lines.id"))
    from_state: Mapped[str] = mapped_column(String(20))
    to_state: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str] = mapped_column(String(30))
    # The validity date the decision was taken on, and who took it ("system" for the sweep).
    validity_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    actor: Mapped[str] = mapped_column(String(254), default="system")
    at: Mapped[datetime] = mapped_column(UTCDateTime)
