"""The reports' queries: each one set-based statement over an indexed range, grouped in the
database, returning a bounded number of rows (per day and group, never per order).

Days are UTC calendar days, like validity dates. Dates in and out are ``datetime.date``
on both databases (SQLite returns text for ``date()``; it is parsed here).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Integer, and_, case, cast, func, or_, select
from sqlalchemy.orm import Session

from airtime.accounts.models import Line, LineState
from airtime.agents.models import Agent, AgentSale
from airtime.db.dialect import is_postgresql
from airtime.ledger.models import AccountKind, Entry, LedgerAccount
from airtime.topups.models import OrderStatus, Promotion, TopupOrder
from airtime.vouchers.models import Outlet, Voucher

_orders = TopupOrder.__table__
_lines = Line.__table__
_entries = Entry.__table__
_accounts = LedgerAccount.__table__
_vouchers = Voucher.__table__
_outlets = Outlet.__table__
_promotions = Promotion.__table__
_agents = Agent.__table__
_agent_sales = AgentSale.__table__


@dataclass(frozen=True)
class Period:
    """Whole UTC days from ``first_day`` to ``last_day``, both included."""

    first_day: date
    last_day: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first_day, time(), tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The first moment after the period (exclusive bound, so an index range scan)."""
        return datetime.combine(self.last_day + timedelta(days=1), time(), tzinfo=UTC)

    def days(self) -> list[date]:
        return [
            self.first_day + timedelta(days=offset)
            for offset in range((self.last_day - self.first_day).days + 1)
        ]


def utc_day(session: Session, column: Any) -> ColumnElement[Any]:
    """The UTC calendar day of a timestamp column, in the session's SQL dialect."""
    if is_postgresql(session):
        return func.date(func.timezone("UTC", column))
    # SQLite keeps UTC timestamps as ISO text ("2026-11-24 10:00:00.000000").
    return func.date(column)


def as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


@dataclass(frozen=True)
class TopupDayRow:
    day: date
    channel: str
    provider: str
    credited_count: int
    credited_amount_minor: int
    failed_count: int
    cancelled_count: int


def topups_by_day(session: Session, *, period: Period, currency: str) -> list[TopupDayRow]:
    """Orders made each day by channel and provider: credited (ever, refunds included), failed,
    cancelled. Orders still under way count in none of them."""
    day = utc_day(session, _orders.c.created_at).label("day")
    credited = _orders.c.credited_at.is_not(None)
    statement = (
        select(
            day,
            _orders.c.channel,
            _orders.c.payment_provider,
            func.count().filter(credited),
            func.coalesce(func.sum(_orders.c.amount_minor).filter(credited), 0),
            func.count().filter(_orders.c.status == OrderStatus.FAILED),
            func.count().filter(_orders.c.status == OrderStatus.CANCELLED),
        )
        .where(
            _orders.c.created_at >= period.start,
            _orders.c.created_at < period.end,
            _orders.c.currency == currency,
        )
        .group_by(day, _orders.c.channel, _orders.c.payment_provider)
        .order_by(day, _orders.c.channel, _orders.c.payment_provider)
    )
    return [
        TopupDayRow(as_date(row[0]), row[1], row[2], int(row[3]), int(row[4]), int(row[5]), int(row[6]))
        for row in session.execute(statement)
    ]


@dataclass(frozen=True)
class CreditTimeRow:
    day: date
    credited_count: int
    p50_seconds: float
    p95_seconds: float


PERCENTILES = (0.5, 0.95)


def _interpolated(sorted_pair: dict[int, float], count: int, fraction: float) -> float:
    """percentile_cont: linear interpolation between the two ranks around fraction × (n − 1)."""
    position = fraction * (count - 1)
    lower = int(position)
    low_value = sorted_pair[lower + 1]
    if lower + 1 >= count:
        return low_value
    return low_value + (position - lower) * (sorted_pair[lower + 2] - low_value)


def credit_times(session: Session, *, period: Period, channel: str | None = None) -> list[CreditTimeRow]:
    """Seconds from payment to credit, median and 95th percentile, per day of crediting.

    PostgreSQL computes ``percentile_cont`` itself. SQLite has no ordered-set aggregates,
    so a window function ranks each day's durations and only the (at most four) rows around
    each percentile's position come back; Python interpolates them the same way, so both
    databases give the same figures.
    """
    conditions = [
        _orders.c.credited_at >= period.start,
        _orders.c.credited_at < period.end,
        _orders.c.paid_at.is_not(None),
    ]
    if channel:
        conditions.append(_orders.c.channel == channel)
    day = utc_day(session, _orders.c.credited_at).label("day")
    if is_postgresql(session):
        seconds = func.extract("epoch", _orders.c.credited_at - _orders.c.paid_at)
        statement = (
            select(
                day,
                func.count(),
                *(func.percentile_cont(fraction).within_group(seconds) for fraction in PERCENTILES),
            )
            .where(*conditions)
            .group_by(day)
            .order_by(day)
        )
        return [
            CreditTimeRow(as_date(row[0]), int(row[1]), max(0.0, float(row[2])), max(0.0, float(row[3])))
            for row in session.execute(statement)
        ]
    duration = ((func.julianday(_orders.c.credited_at) - func.julianday(_orders.c.paid_at)) * 86400.0).label(
        "seconds"
    )
    durations = select(day, duration).where(*conditions).subquery()
    ranked = select(
        durations.c.day,
        durations.c.seconds,
        func.row_number().over(partition_by=durations.c.day, order_by=durations.c.seconds).label("rank"),
        func.count().over(partition_by=durations.c.day).label("n"),
    ).subquery()
    wanted = []
    for fraction in PERCENTILES:
        lower = cast(fraction * (ranked.c.n - 1), Integer)
        wanted += [ranked.c.rank == lower + 1, ranked.c.rank == lower + 2]
    rows = session.execute(
        select(ranked.c.day, ranked.c.n, ranked.c.rank, ranked.c.seconds)
        .where(or_(*wanted))
        .order_by(ranked.c.day, ranked.c.rank)
    ).all()
    by_day: dict[date, tuple[int, dict[int, float]]] = {}
    for day_value, count, rank, value in rows:
        entry = by_day.setdefault(as_date(day_value), (int(count), {}))
        entry[1][int(rank)] = max(0.0, float(value))
    return [
        CreditTimeRow(
            day_value,
            count,
            *(_interpolated(values, count, fraction) for fraction in PERCENTILES),
        )
        for day_value, (count, values) in sorted(by_day.items())
    ]


@dataclass(frozen=True)
class VoucherStockRow:
    outlet: str  # outlet code, "" for vouchers held by the operator
    state: str
    count: int
    face_value_minor: int


def voucher_stock(session: Session, *, currency: str) -> list[VoucherStockRow]:
    """Vouchers now in each state, per outlet, with their face value."""
    statement = (
        select(
            func.coalesce(_outlets.c.code, ""),
            _vouchers.c.state,
            func.count(),
            func.coalesce(func.sum(_vouchers.c.face_value_minor), 0),
        )
        .select_from(_vouchers.outerjoin(_outlets, _outlets.c.id == _vouchers.c.outlet_id))
        .where(_vouchers.c.currency == currency)
        .group_by(_outlets.c.code, _vouchers.c.state)
        .order_by(_outlets.c.code, _vouchers.c.state)
    )
    return [VoucherStockRow(row[0], row[1], int(row[2]), int(row[3])) for row in session.execute(statement)]


def lines_by_state(session: Session) -> dict[str, int]:
    """How many lines are in each lifecycle state now (an index-only scan on PostgreSQL)."""
    counts = dict.fromkeys(LineState.ALL, 0)
    for state, count in session.execute(select(_lines.c.state, func.count()).group_by(_lines.c.state)):
        counts[state] = int(count)
    return counts


def lines_expiring(session: Session, *, first_day: date, last_day: date) -> dict[date, int]:
    """Active lines whose validity date falls on each day from ``first_day`` to ``last_day``."""
    statement = (
        select(_lines.c.validity_date, func.count())
        .where(
            _lines.c.state == LineState.ACTIVE,
            _lines.c.validity_date >= first_day,
            _lines.c.validity_date <= last_day,
        )
        .group_by(_lines.c.validity_date)
    )
    return {as_date(day): int(count) for day, count in session.execute(statement)}


def _operator_account_ids(session: Session, *, kind: str, currency: str) -> list[int]:
    return list(
        session.scalars(
            select(_accounts.c.id).where(_accounts.c.kind == kind, _accounts.c.currency == currency)
        )
    )


@dataclass(frozen=True)
class BreakageRow:
    day: date
    source: str  # "lines" (balance forfeited at termination) or "vouchers" (expired unused)
    amount_minor: int


def breakage_by_day(session: Session, *, period: Period, currency: str) -> list[BreakageRow]:
    """What the breakage accounts took in each day (net of any correction), by source."""
    account_ids = _operator_account_ids(session, kind=AccountKind.BREAKAGE, currency=currency)
    if not account_ids:
        return []
    day = utc_day(session, _entries.c.created_at).label("day")
    source = case((_entries.c.transfer_id.like("voucher-expiry:%"), "vouchers"), else_="lines").label(
        "source"
    )
    statement = (
        select(day, source, func.sum(_entries.c.amount_minor))
        .where(
            _entries.c.account_id.in_(account_ids),
            _entries.c.created_at >= period.start,
            _entries.c.created_at < period.end,
        )
        .group_by(day, source)
        .order_by(day, source)
    )
    return [BreakageRow(as_date(row[0]), row[1], int(row[2])) for row in session.execute(statement)]


@dataclass(frozen=True)
class PromotionDayRow:
    day: date
    granted_minor: int
    clawed_back_minor: int


def promotion_cost_by_day(session: Session, *, period: Period, currency: str) -> list[PromotionDayRow]:
    """Bonus granted (debits of the promotion expense account) and clawed back by refunds
    (its credits), per day, from the ledger."""
    account_ids = _operator_account_ids(session, kind=AccountKind.PROMOTION_EXPENSE, currency=currency)
    if not account_ids:
        return []
    day = utc_day(session, _entries.c.created_at).label("day")
    amount = _entries.c.amount_minor
    statement = (
        select(
            day,
            func.coalesce(func.sum(-amount).filter(amount < 0), 0),
            func.coalesce(func.sum(amount).filter(amount > 0), 0),
        )
        .where(
            _entries.c.account_id.in_(account_ids),
            _entries.c.created_at >= period.start,
            _entries.c.created_at < period.end,
        )
        .group_by(day)
        .order_by(day)
    )
    return [PromotionDayRow(as_date(row[0]), int(row[1]), int(row[2])) for row in session.execute(statement)]


@dataclass(frozen=True)
class PromotionRow:
    code: str
    name: str
    orders: int
    bonus_minor: int


def bonus_by_promotion(session: Session, *, period: Period, currency: str) -> list[PromotionRow]:
    """Bonus of the orders credited in the period, per promotion (largest first)."""
    statement = (
        select(
            _promotions.c.code,
            _promotions.c.name,
            func.count(),
            func.sum(_orders.c.bonus_minor),
        )
        .select_from(_orders.join(_promotions, _promotions.c.id == _orders.c.promotion_id))
        .where(
            and_(
                _orders.c.credited_at >= period.start,
                _orders.c.credited_at < period.end,
                _orders.c.currency == currency,
                _orders.c.bonus_minor > 0,
            )
        )
        .group_by(_promotions.c.code, _promotions.c.name)
        .order_by(func.sum(_orders.c.bonus_minor).desc(), _promotions.c.code)
    )
    return [PromotionRow(row[0], row[1], int(row[2]), int(row[3])) for row in session.execute(statement)]


@dataclass(frozen=True)
class AgentTotalsRow:
    agent_id: int
    code: str
    name: str
    parent_code: str  # "" for an agent without a parent
    sales: int
    amount_minor: int
    commission_minor: int  # kept by the selling agent
    commission_total_minor: int  # the operator's whole cost: the seller's plus its parents' shares


def agent_sales_by_agent(session: Session, *, period: Period, currency: str) -> list[AgentTotalsRow]:
    """Sales in the period per selling agent, with the commission booked on them (most sold first)."""
    parents = _agents.alias("parents")
    amount = func.sum(_agent_sales.c.amount_minor)
    totals = (
        select(
            _agent_sales.c.agent_id,
            func.count().label("sales"),
            amount.label("amount_minor"),
            func.sum(_agent_sales.c.commission_minor).label("commission_minor"),
            func.sum(_agent_sales.c.commission_total_minor).label("commission_total_minor"),
        )
        .where(
            _agent_sales.c.created_at >= period.start,
            _agent_sales.c.created_at < period.end,
            _agent_sales.c.currency == currency,
        )
        .group_by(_agent_sales.c.agent_id)
        .subquery()
    )
    # Grouped first, then joined: one agents lookup per agent, not per sale.
    statement = (
        select(
            totals.c.agent_id,
            _agents.c.code,
            _agents.c.name,
            func.coalesce(parents.c.code, ""),
            totals.c.sales,
            totals.c.amount_minor,
            totals.c.commission_minor,
            totals.c.commission_total_minor,
        )
        .select_from(
            totals.join(_agents, _agents.c.id == totals.c.agent_id).outerjoin(
                parents, parents.c.id == _agents.c.parent_id
            )
        )
        .order_by(totals.c.amount_minor.desc(), _agents.c.code)
    )
    return [
        AgentTotalsRow(
            int(row[0]), row[1], row[2], row[3], int(row[4]), int(row[5]), int(row[6]), int(row[7])
        )
        for row in session.execute(statement)
    ]


@dataclass(frozen=True)
class AgentDayRow:
    day: date
    agent_id: int | None  # None: every agent not in ``agent_ids`` together
    sales: int
    amount_minor: int
    commission_minor: int
    commission_total_minor: int


def agent_sales_by_day(
    session: Session, *, period: Period, currency: str, agent_ids: list[int]
) -> list[AgentDayRow]:
    """Sales per day for each of ``agent_ids``, and for all other agents as one group, so the
    rows stay at most days × (len(agent_ids) + 1) however many agents sell."""
    day = utc_day(session, _agent_sales.c.created_at).label("day")
    if agent_ids:
        group: ColumnElement[Any] = case(
            (_agent_sales.c.agent_id.in_(agent_ids), _agent_sales.c.agent_id), else_=None
        ).label("agent")
    else:
        group = cast(None, Integer).label("agent")
    statement = (
        select(
            day,
            group,
            func.count(),
            func.sum(_agent_sales.c.amount_minor),
            func.sum(_agent_sales.c.commission_minor),
            func.sum(_agent_sales.c.commission_total_minor),
        )
        .where(
            _agent_sales.c.created_at >= period.start,
            _agent_sales.c.created_at < period.end,
            _agent_sales.c.currency == currency,
        )
        .group_by(day, group)
        .order_by(day, group)
    )
    return [
        AgentDayRow(
            as_date(row[0]),
            None if row[1] is None else int(row[1]),
            int(row[2]),
            int(row[3]),
            int(row[4]),
            int(row[5]),
        )
        for row in session.execute(statement)
    ]


def currencies_in_use(session: Session) -> list[str]:
    """Currencies that orders, vouchers or accounts are in (for the currency chooser)."""
    return sorted(set(session.scalars(select(_accounts.c.currency).distinct())))
