"""Ledger tables: accounts, transfers (id = idempotency key) and their entries."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
)
from sqlalchemy.orm import Mapped, mapped_column

from airtime.db.base import Base, BigId, UTCDateTime


class AccountKind:
    """What an account holds; the code says whose it is."""

    CUSTOMER_MAIN = "customer_main"
    CUSTOMER_BONUS = "customer_bonus"
    PAYMENT_CLEARING = "payment_clearing"
    VOUCHER_LIABILITY = "voucher_liability"
    PROMOTION_EXPENSE = "promotion_expense"
    COMMISSION_EXPENSE = "commission_expense"
    REVENUE = "revenue"
    BREAKAGE = "breakage"
    AGENT_FLOAT = "agent_float"
    OPERATOR_EQUITY = "operator_equity"
    REFUND_LOSS = "refund_loss"

    OPERATOR_KINDS = (
        PAYMENT_CLEARING,
        VOUCHER_LIABILITY,
        PROMOTION_EXPENSE,
        COMMISSION_EXPENSE,
        REVENUE,
        BREAKAGE,
        OPERATOR_EQUITY,
        REFUND_LOSS,
    )
    ALL = (
        CUSTOMER_MAIN,
        CUSTOMER_BONUS,
        PAYMENT_CLEARING,
        VOUCHER_LIABILITY,
        PROMOTION_EXPENSE,
        COMMISSION_EXPENSE,
        REVENUE,
        BREAKAGE,
        AGENT_FLOAT,
        OPERATOR_EQUITY,
        REFUND_LOSS,
    )


class LedgerAccount(Base):
    """One balance. ``balance_minor`` is kept only where ``balance_tracked`` (guarded accounts).

    Operator accounts (clearing, liability, revenue...) are touched by almost every transfer;
    keeping a balance row for them would make one hot row serialise all top-ups, so their
    balance is derived from entries instead.
    """

    __tablename__ = "ledger_accounts"
    # The service checks floors first; this constraint is the database's own last word.
    __table_args__ = (
        CheckConstraint(
            "floor_minor IS NULL OR balance_minor >= floor_minor",
            name="balance_above_floor",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(120), unique=True)
    kind: Mapped[str] = mapped_column(String(40))
    currency: Mapped[str] = mapped_column(String(3))
    name: Mapped[str] = mapped_column(String(200), default="")
    balance_tracked: Mapped[bool] = mapped_column(Boolean, default=False)
    # The lowest balance allowed; None means unbounded (operator accounts), 0 means prepaid,
    # a negative number is a credit limit.
    floor_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    balance_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Transfer(Base):
    """A balanced movement of money; its id is the client's idempotency key."""

    __tablename__ = "ledger_transfers"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))
    currency: Mapped[str] = mapped_column(String(3))
    content_hash: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(200), default="")
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class Entry(Base):
    """One leg of a transfer: a signed amount on one account (positive raises its balance)."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index("ix_ledger_entries_account_id_id", "account_id", "id"),
        # Reports sum an operator account's entries over a date range (breakage, promotions).
        Index("ix_ledger_entries_account_id_created_at", "account_id", "created_at"),
        CheckConstraint("amount_minor <> 0", name="amount_not_zero"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    transfer_id: Mapped[str] = mapped_column(ForeignKey("ledger_transfers.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
