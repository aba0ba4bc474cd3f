"""Tables for the audit log, balance adjustments (maker-checker) and disputes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from airtime.db.base import Base, BigId, UTCDateTime


class AuditEntry(Base):
    """One staff action: who, what, on what, before and after, why. Append-only: the code
    has no path that changes or deletes a row, and database triggers refuse both."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_subject_type_subject_id", "subject_type", "subject_id"),
        Index("ix_audit_log_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    staff_user_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"), nullable=True)
    staff_email: Mapped[str] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(60))
    subject_type: Mapped[str] = mapped_column(String(40))
    subject_id: Mapped[str] = mapped_column(String(80))
    before: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    after: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    reason: Mapped[str] = mapped_column(String(500), default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class AdjustmentStatus:
    PENDING = "pending"  # waits for a second person
    POSTED = "posted"  # in the ledger (approved, or under the threshold)
    REJECTED = "rejected"  # nothing was posted
    ALL = (PENDING, POSTED, REJECTED)


ADJUSTMENT_REASON_CODES = ("goodwill", "billing_error", "network_fault", "duplicate_charge", "other")


class BalanceAdjustment(Base):
    """A manual change of a line's main balance by care, with a reason code; above the
    configured amount it is posted only after a different supervisor or admin approves."""

    __tablename__ = "balance_adjustments"
    __table_args__ = (Index("ix_balance_adjustments_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("lines.id"), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    # Positive credits the line, negative debits it (never below its floor).
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    reason_code: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(20))
    maker_staff_id: Mapped[int] = mapped_column(ForeignKey("staff_users.id"))
    maker_email: Mapped[str] = mapped_column(String(254))
    checker_staff_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"), nullable=True)
    checker_email: Mapped[str] = mapped_column(String(254), default="")
    decision_note: Mapped[str] = mapped_column(String(500), default="")
    # The ledger transfer's id (its idempotency key), once posted.
    transfer_id: Mapped[str | None] = mapped_column(String(100), unique=True, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DisputeStatus:
    OPEN = "open"  # in the care queue
    RESOLVED = "resolved"  # the top-up was credited (by the system or by care)
    CLOSED = "closed"  # care answered without a credit (with a note)
    ALL = (OPEN, RESOLVED, CLOSED)


class Dispute(Base):
    """A subscriber's "I paid but got no credit" claim about one top-up (one per order)."""

    __tablename__ = "disputes"
    __table_args__ = (Index("ix_disputes_status_id", "status", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("topup_orders.id"), unique=True)
    status: Mapped[str] = mapped_column(String(20))
    # How it ended: "auto_credited", "care_credited", "closed".
    resolution: Mapped[str] = mapped_column(String(40), default="")
    note: Mapped[str] = mapped_column(String(500), default="")
    contact_email: Mapped[str] = mapped_column(String(254), default="")
    opened_at: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    resolved_by: Mapped[str] = mapped_column(String(254), default="")
