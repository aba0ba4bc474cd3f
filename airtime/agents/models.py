"""Tables for agents (resellers), their API credentials, limits, sales and seen signatures."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import JSON, BigInteger, Boolean, Date, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from airtime.db.base import Base, BigId, UTCDateTime


class Agent(Base):
    """A reseller that tops up lines from its float and earns commission on each sale.

    Commission: ``commission_amounts`` (``{"1000": 50}``: a fixed amount per denomination,
    in minor units) wins for the amounts it names; every other amount earns
    ``commission_basis_points`` (350 = 3.5%). A sub-agent's parent earns the difference
    between its own commission on the sale and the sub-agent's.
    """

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    currency: Mapped[str] = mapped_column(String(3))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"), index=True, nullable=True)
    float_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    commission_basis_points: Mapped[int] = mapped_column(Integer, default=0)
    commission_amounts: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    rate_limit_per_minute: Mapped[int] = mapped_column(Integer, default=60)
    # None: no daily limit beyond the float itself.
    daily_limit_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AgentCredential(Base):
    """An API key. The secret is never stored: it is HMAC(key derived from the server
    secret, key id and salt), recomputed to check a signature (see airtime.agents.signing)."""

    __tablename__ = "agent_credentials"

    key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"), index=True)
    salt: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AgentDailyUsage(Base):
    """What an agent sold on one UTC day; the row is updated conditionally, so concurrent
    sales can never take it past the daily limit (and it orders one agent's sales)."""

    __tablename__ = "agent_daily_usage"

    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger, default=0)
    sales: Mapped[int] = mapped_column(Integer, default=0)


class AgentSignature(Base):
    """Signatures seen inside the replay window: an exact replay is refused."""

    __tablename__ = "agent_signatures"

    signature: Mapped[str] = mapped_column(String(64), primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"))
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class AgentSale(Base):
    """One top-up or bundle an agent sold: the order, the commission split, the request."""

    __tablename__ = "agent_sales"
    __table_args__ = (
        Index("ix_agent_sales_agent_id_id", "agent_id", "id"),
        Index("uq_agent_sales_agent_id_idempotency_key", "agent_id", "idempotency_key", unique=True),
        # The agent sales report reads a date range (migration 0010).
        Index("ix_agent_sales_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"))
    order_id: Mapped[int] = mapped_column(ForeignKey("topup_orders.id"), unique=True)
    transfer_id: Mapped[str] = mapped_column(String(100), unique=True)
    idempotency_key: Mapped[str] = mapped_column(String(100))
    request_hash: Mapped[str] = mapped_column(String(64))
    msisdn: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    # The selling agent's commission (kept from its float debit) and the operator's whole
    # commission cost for the sale (the selling agent's plus every parent's difference).
    commission_minor: Mapped[int] = mapped_column(BigInteger)
    commission_total_minor: Mapped[int] = mapped_column(BigInteger)
    float_debit_minor: Mapped[int] = mapped_column(BigInteger)
    staff_user_id: Mapped[int | None] = mapped_column(ForeignKey("staff_users.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
