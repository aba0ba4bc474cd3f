"""Tables for plans, customers, lines, staff and authentication."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Date, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from airtime.db.base import Base, BigId, UTCDateTime, partial_index


class ValidityRule:
    TOPUP_EXTENDS = "topup_extends"
    ACTIVITY_RESETS = "activity_resets"
    ALL = (TOPUP_EXTENDS, ACTIVITY_RESETS)


class LineState:
    PENDING_ACTIVATION = "pending_activation"
    ACTIVE = "active"
    GRACE = "grace"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"
    ALL = (PENDING_ACTIVATION, ACTIVE, GRACE, SUSPENDED, TERMINATED)


class Plan(Base):
    """A tariff a line is on, with its number-keeping (validity) rule."""

    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    name_zh: Mapped[str] = mapped_column(String(100), default="")
    currency: Mapped[str] = mapped_column(String(3))
    validity_rule: Mapped[str] = mapped_column(String(20), default=ValidityRule.TOPUP_EXTENDS)
    # topup_extends: [[amount_minor_from, days], ...] ascending; days added per credited top-up.
    validity_tiers: Mapped[list[Any]] = mapped_column(JSON, default=list)
    validity_days_max: Mapped[int] = mapped_column(Integer, default=365)
    # activity_resets: any chargeable event keeps the line alive this many days.
    activity_days: Mapped[int] = mapped_column(Integer, default=180)
    grace_days: Mapped[int] = mapped_column(Integer, default=30)
    suspension_days: Mapped[int] = mapped_column(Integer, default=60)
    quarantine_days: Mapped[int] = mapped_column(Integer, default=90)
    forfeit_balance_on_termination: Mapped[bool] = mapped_column(Boolean, default=True)
    # Charged from the top-up that brings a suspended line back (never more than its balance).
    reactivation_fee_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Customer(Base):
    """A subscriber's account: logs in, owns lines."""

    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    language: Mapped[str] = mapped_column(String(10), default="en")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    password_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Line(Base):
    """One subscriber number with its SIM, plan, lifecycle state, validity and ledger accounts.

    A terminated line keeps its row (history, care) and holds its number through quarantine;
    when the number is released it may be given to a new line, so a number is unique only
    among lines that still hold it.
    """

    __tablename__ = "lines"
    __table_args__ = (
        partial_index("uq_lines_msisdn_held", "msisdn", unique=True, where="number_released_at IS NULL"),
        # The lifecycle sweep looks lines up by state and validity date (active → grace) or
        # by state and the time it was entered (the later steps).
        Index("ix_lines_state_validity_date", "state", "validity_date"),
        Index("ix_lines_state_state_changed_at", "state", "state_changed_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True, nullable=True)
    msisdn: Mapped[str] = mapped_column(String(16), index=True)
    iccid: Mapped[str | None] = mapped_column(String(22), unique=True, nullable=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("plans.id"))
    state: Mapped[str] = mapped_column(String(20), default=LineState.PENDING_ACTIVATION)
    validity_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Set when quarantine ends after termination: the number is free for a new line.
    number_released_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Alert the subscriber when the main balance falls under this (None: no alert); the
    # alert is sent once per fall and re-armed when the balance is back at or above it.
    low_balance_threshold_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    low_balance_alerted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    main_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    bonus_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    nickname: Mapped[str] = mapped_column(String(60), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class StaffUser(Base):
    """An operator employee (care, supervisor, admin), or staff of an outlet or an agent."""

    __tablename__ = "staff_users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(20))
    outlet_id: Mapped[int | None] = mapped_column(ForeignKey("outlets.id"), nullable=True)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"), nullable=True)
    language: Mapped[str] = mapped_column(String(10), default="en")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AuthSession(Base):
    """A web session or API token; only the SHA-256 of the secret is stored."""

    __tablename__ = "auth_sessions"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(10))  # "web" or "api"
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True, nullable=True)
    staff_user_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"), index=True, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    ip_address: Mapped[str] = mapped_column(String(45), default="")
    user_agent: Mapped[str] = mapped_column(String(200), default="")


class PasswordResetToken(Base):
    """A single-use, expiring link sent by email; only its hash is stored."""

    __tablename__ = "password_reset_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RateLimitCounter(Base):
    """Failures per key (an email, an IP address) in a fixed time window."""

    __tablename__ = "rate_limit_counters"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger, default=0)
