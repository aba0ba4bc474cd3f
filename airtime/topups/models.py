"""Tables for top-up orders, amount rules, bundles, allowances and promotions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from airtime.db.base import Base, BigId, UTCDateTime, partial_index


class OrderStatus:
    CREATED = "created"
    AWAITING_PAYMENT = "awaiting_payment"
    PAID = "paid"
    CREDITED = "credited"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REFUNDED = "refunded"
    ALL = (CREATED, AWAITING_PAYMENT, PAID, CREDITED, FAILED, CANCELLED, REFUNDED)
    # Where a payment can still arrive from (a late success wins over an expiry).
    PAYABLE = (CREATED, AWAITING_PAYMENT, FAILED, CANCELLED)
    # Orders that credited their line (a refund does not make it a first top-up again).
    CREDITED_ONCE = (CREDITED, REFUNDED)
    # On their way: what reconciliation and care look for by age.
    OPEN = (CREATED, AWAITING_PAYMENT, PAID)


def _status_in(statuses: tuple[str, ...]) -> str:
    return "status IN ({})".format(", ".join(f"'{status}'" for status in statuses))


# The same as SQL, for the partial index of credited orders and the queries that use it.
CREDITED_ONCE_WHERE = _status_in(OrderStatus.CREDITED_ONCE)
OPEN_WHERE = _status_in(OrderStatus.OPEN)


class Channel:
    WEB = "web"
    QUICK = "quick"
    API = "api"
    VOUCHER = "voucher"
    USSD = "ussd"
    IVR = "ivr"
    AGENT = "agent"
    OUTLET = "outlet"
    CARE = "care"
    AUTO = "auto"
    ALL = (WEB, QUICK, API, VOUCHER, USSD, IVR, AGENT, OUTLET, CARE, AUTO)


class TopupOrder(Base):
    """One attempt to add credit to a line, from any channel, through to its receipt."""

    __tablename__ = "topup_orders"
    __table_args__ = (
        UniqueConstraint("idempotency_scope", "idempotency_key", name="uq_topup_orders_idempotency"),
        UniqueConstraint("payment_provider", "payment_reference", name="uq_topup_orders_payment_reference"),
        # Open orders by age (reconciliation, care). Partial on PostgreSQL, so an order
        # leaves it when it is credited instead of adding an entry (SQLite would not use it
        # for "status = 'paid'", so it keeps every order there).
        Index("ix_topup_orders_status_created_at", "status", "created_at", postgresql_where=text(OPEN_WHERE)),
        Index("ix_topup_orders_line_id_id", "line_id", "id"),
        # Reports read orders by the day they were made and by the day they were credited.
        Index("ix_topup_orders_created_at", "created_at"),
        partial_index("ix_topup_orders_credited_at", "credited_at", where="credited_at IS NOT NULL"),
        # A customer's orders; most orders have no customer (quick top-ups, vouchers, phone).
        partial_index("ix_topup_orders_customer_id", "customer_id", where="customer_id IS NOT NULL"),
        # "Has this line ever been credited?" (first-top-up promotions) is one probe of this
        # index, whatever the statistics say; a join of the line and status indexes read
        # every credited order's entry.
        partial_index("ix_topup_orders_line_id_credited", "line_id", where=CREDITED_ONCE_WHERE),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    idempotency_scope: Mapped[str] = mapped_column(String(80))
    idempotency_key: Mapped[str] = mapped_column(String(100))
    request_hash: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(10))
    line_id: Mapped[int] = mapped_column(ForeignKey("lines.id"))
    msisdn: Mapped[str] = mapped_column(String(16))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), nullable=True)
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    bundle_id: Mapped[int | None] = mapped_column(ForeignKey("bundles.id"), nullable=True)
    bonus_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    promotion_id: Mapped[int | None] = mapped_column(ForeignKey("promotions.id"), nullable=True)
    payment_provider: Mapped[str] = mapped_column(String(20))
    payment_reference: Mapped[str | None] = mapped_column(String(120), nullable=True)
    payment_redirect_url: Mapped[str | None] = mapped_column(String(500), nullable=True)
    payment_method: Mapped[str] = mapped_column(String(40), default="")
    status: Mapped[str] = mapped_column(String(20), default=OrderStatus.CREATED)
    failure_code: Mapped[str] = mapped_column(String(40), default="")
    receipt_number: Mapped[str | None] = mapped_column(String(30), unique=True, nullable=True)
    receipt_email: Mapped[str] = mapped_column(String(254), default="")
    language: Mapped[str] = mapped_column(String(10), default="en")
    balance_after_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    validity_after: Mapped[str | None] = mapped_column(String(10), nullable=True)
    refunded_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    refund_shortfall_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    awaiting_payment_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    credited_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    refunded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AmountRule(Base):
    """What a top-up in one currency may be: fixed denominations, a range, custom or not."""

    __tablename__ = "topup_amount_rules"

    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    denominations: Mapped[list[int]] = mapped_column(JSON, default=list)
    amount_min_minor: Mapped[int] = mapped_column(BigInteger)
    amount_max_minor: Mapped[int] = mapped_column(BigInteger)
    custom_allowed: Mapped[bool] = mapped_column(Boolean, default=True)


class Bundle(Base):
    """A package of allowances with its own validity, bought directly or from balance."""

    __tablename__ = "bundles"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    name_zh: Mapped[str] = mapped_column(String(100), default="")
    currency: Mapped[str] = mapped_column(String(3))
    price_minor: Mapped[int] = mapped_column(BigInteger)
    data_mb: Mapped[int] = mapped_column(Integer, default=0)
    voice_minutes: Mapped[int] = mapped_column(Integer, default=0)
    sms_count: Mapped[int] = mapped_column(Integer, default=0)
    validity_days: Mapped[int] = mapped_column(Integer)
    zone: Mapped[str] = mapped_column(String(40), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class LineAllowance(Base):
    """Allowances granted to a line by one bundle purchase, with their own expiry."""

    __tablename__ = "line_allowances"
    __table_args__ = (Index("ix_line_allowances_line_id_expires_at", "line_id", "expires_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    line_id: Mapped[int] = mapped_column(ForeignKey("lines.id"))
    bundle_id: Mapped[int] = mapped_column(ForeignKey("bundles.id"))
    # Exactly one grant per purchase: the purchase's transfer id.
    source: Mapped[str] = mapped_column(String(100), unique=True)
    data_mb_remaining: Mapped[int] = mapped_column(Integer)
    voice_minutes_remaining: Mapped[int] = mapped_column(Integer)
    sms_remaining: Mapped[int] = mapped_column(Integer)
    zone: Mapped[str] = mapped_column(String(40), default="")
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PromotionKind:
    PERCENT = "percent"
    FIXED = "fixed"


class Promotion(Base):
    """A bonus rule: credited to the bonus balance in the same transfer as the top-up."""

    __tablename__ = "promotions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    name_zh: Mapped[str] = mapped_column(String(100), default="")
    kind: Mapped[str] = mapped_column(String(10))
    # Basis points for percent (1000 = 10%), minor units for fixed.
    value: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    amount_min_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    bonus_max_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    first_topup_only: Mapped[bool] = mapped_column(Boolean, default=False)
    channels: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: every channel
    active: Mapped[bool] = mapped_column(Boolean, default=True)
