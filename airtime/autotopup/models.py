"""Tables for auto top-up: saved payment methods (tokens only), rules per line, attempts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from airtime.db.base import Base, BigId, UTCDateTime


class MethodStatus:
    PENDING = "pending"  # the customer is at the provider's page
    ACTIVE = "active"
    FAILED = "failed"  # the customer cancelled, or the provider refused
    REMOVED = "removed"


class SavedPaymentMethod(Base):
    """A payment method kept by a provider for off-session charges. We hold the provider's
    token and a label (brand, last four digits) only: never card data."""

    __tablename__ = "saved_payment_methods"
    __table_args__ = (
        UniqueConstraint("provider", "setup_reference", name="uq_saved_payment_methods_setup_reference"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    provider: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default=MethodStatus.PENDING)
    # The provider's "save a method" flow (a Checkout Session in setup mode at Stripe).
    setup_reference: Mapped[str | None] = mapped_column(String(120), nullable=True)
    token: Mapped[str] = mapped_column(String(120), default="")
    # The provider's customer record the token belongs to (Stripe needs it to charge).
    provider_customer: Mapped[str] = mapped_column(String(120), default="")
    label: Mapped[str] = mapped_column(String(60), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RuleState:
    """Why a rule is or is not running, for the customer's page."""

    ACTIVE = "active"
    OFF = "off"  # turned off by the customer
    DISABLED = "disabled"  # turned off by us after repeated declines, or its method was removed


class AutoTopupRule(Base):
    """One line's rule: when balance < X and/or N days before validity ends, top up Y,
    never more than a monthly cap of successful auto top-ups."""

    __tablename__ = "auto_topup_rules"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("lines.id"), unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), index=True)
    payment_method_id: Mapped[int] = mapped_column(ForeignKey("saved_payment_methods.id"), index=True)
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    balance_below_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    days_before_validity: Mapped[int | None] = mapped_column(Integer, nullable=True)
    monthly_cap_minor: Mapped[int] = mapped_column(BigInteger)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Set when we turned the rule off ("declined", "method_removed"); the page says why.
    disabled_reason: Mapped[str] = mapped_column(String(30), default="")
    consecutive_declines: Mapped[int] = mapped_column(Integer, default=0)
    # After a decline: no new attempt before this time (backoff).
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    # The balance trigger fires once per fall below X: a success re-arms it only when the
    # balance is back at X or above, and the round number goes into the idempotency key.
    balance_round: Mapped[int] = mapped_column(Integer, default=0)
    balance_armed: Mapped[bool] = mapped_column(Boolean, default=True)
    # Every attempt takes the next number, so no two attempts of a rule share a key.
    attempts_made: Mapped[int] = mapped_column(Integer, default=0)
    # The calendar month (YYYY-MM) whose cap stopped the rule, so the notice goes once.
    cap_reached_month: Mapped[str] = mapped_column(String(7), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AttemptStatus:
    CHARGING = "charging"  # claimed; the charge is being made (or its outcome is unknown)
    PENDING = "pending"  # the provider has not decided yet
    SUCCEEDED = "succeeded"
    DECLINED = "declined"
    ABANDONED = "abandoned"  # the outcome never became known; no money was kept
    # What counts against the monthly cap: money taken or possibly being taken.
    HOLDING_CAP = (CHARGING, PENDING, SUCCEEDED)


class AutoTopupAttempt(Base):
    """One charge of a rule for one occasion ("validity:2026-12-01", "balance:3").

    ``idempotency_key`` is unique per rule: it is the order's idempotency key and the key the
    provider sees, so a re-run or a second process can never charge the same attempt twice.
    """

    __tablename__ = "auto_topup_attempts"
    __table_args__ = (
        UniqueConstraint("rule_id", "idempotency_key", name="uq_auto_topup_attempts_rule_id"),
        Index("ix_auto_topup_attempts_rule_id_cap_month", "rule_id", "cap_month"),
        Index("ix_auto_topup_attempts_status_created_at", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    rule_id: Mapped[int] = mapped_column(ForeignKey("auto_topup_rules.id"))
    occasion: Mapped[str] = mapped_column(String(40))
    idempotency_key: Mapped[str] = mapped_column(String(100))
    order_id: Mapped[int | None] = mapped_column(ForeignKey("topup_orders.id"), nullable=True, index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    cap_month: Mapped[str] = mapped_column(String(7))
    status: Mapped[str] = mapped_column(String(20), default=AttemptStatus.CHARGING)
    failure_code: Mapped[str] = mapped_column(String(40), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
