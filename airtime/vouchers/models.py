"""Tables for voucher batches, vouchers (PINs kept only as keyed hashes), their audited
events, redemption attempts and lockouts, and retail outlets."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Date, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from airtime.db.base import Base, BigId, UTCDateTime


class VoucherState:
    GENERATED = "generated"
    ACTIVE = "active"
    REDEEMED = "redeemed"
    EXPIRED = "expired"
    BLOCKED = "blocked"
    ALL = (GENERATED, ACTIVE, REDEEMED, EXPIRED, BLOCKED)


class Outlet(Base):
    """A shop that sells vouchers for cash, paying for them from its prepaid float."""

    __tablename__ = "outlets"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    currency: Mapped[str] = mapped_column(String(3))
    float_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class VoucherBatch(Base):
    __tablename__ = "voucher_batches"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    currency: Mapped[str] = mapped_column(String(3))
    face_value_minor: Mapped[int] = mapped_column(BigInteger)
    quantity: Mapped[int] = mapped_column(Integer)
    expires_on: Mapped[date] = mapped_column(Date)
    # None: the line's plan rule decides the validity a redemption grants.
    validity_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    outlet_id: Mapped[int | None] = mapped_column(ForeignKey("outlets.id"), nullable=True)
    distributor: Mapped[str] = mapped_column(String(120), default="")
    kind: Mapped[str] = mapped_column(String(10), default="printed")  # printed or epin
    serial_first: Mapped[int] = mapped_column(BigInteger)
    serial_last: Mapped[int] = mapped_column(BigInteger)
    created_by: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Voucher(Base):
    """One card or e-PIN. The PIN is never stored: only HMAC-SHA256(server secret, PIN)."""

    __tablename__ = "vouchers"
    __table_args__ = (Index("ix_vouchers_state_expires_on", "state", "expires_on"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("voucher_batches.id"), index=True)
    serial: Mapped[int] = mapped_column(BigInteger, unique=True)
    pin_hash: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(10), default=VoucherState.GENERATED)
    currency: Mapped[str] = mapped_column(String(3))
    face_value_minor: Mapped[int] = mapped_column(BigInteger)
    expires_on: Mapped[date] = mapped_column(Date)
    outlet_id: Mapped[int | None] = mapped_column(ForeignKey("outlets.id"), nullable=True)
    state_changed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # The state a blocked voucher returns to when an admin unblocks it.
    state_before_block: Mapped[str] = mapped_column(String(10), default="")
    redeemed_line_id: Mapped[int | None] = mapped_column(ForeignKey("lines.id"), nullable=True)
    redeemed_order_id: Mapped[int | None] = mapped_column(ForeignKey("topup_orders.id"), nullable=True)


class VoucherEvent(Base):
    """Every state change, with who and when (append-only)."""

    __tablename__ = "voucher_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    voucher_id: Mapped[int | None] = mapped_column(ForeignKey("vouchers.id"), index=True, nullable=True)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("voucher_batches.id"), nullable=True)
    serial_first: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    serial_last: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    event: Mapped[str] = mapped_column(String(20))
    from_state: Mapped[str] = mapped_column(String(10), default="")
    to_state: Mapped[str] = mapped_column(String(10), default="")
    count: Mapped[int] = mapped_column(Integer, default=1)
    actor: Mapped[str] = mapped_column(String(254))
    reason: Mapped[str] = mapped_column(String(300), default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class RedemptionAttempt(Base):
    """Each redemption attempt, failures included, per line, customer and IP."""

    __tablename__ = "voucher_attempts"
    __table_args__ = (Index("ix_voucher_attempts_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key: Mapped[str] = mapped_column(String(120))
    succeeded: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(String(20))
    channel: Mapped[str] = mapped_column(String(10))
    serial: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


class RedemptionLock(Base):
    """A key locked out after too many failures, until ``locked_until`` or care unlocks it."""

    __tablename__ = "voucher_locks"

    key: Mapped[str] = mapped_column(String(120), primary_key=True)
    locked_until: Mapped[datetime] = mapped_column(UTCDateTime)
    # Failures before this moment no longer count (set when care unlocks).
    forgiven_before: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    unlocked_by: Mapped[str] = mapped_column(String(254), default="")
