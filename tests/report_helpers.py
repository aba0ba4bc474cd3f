"""A small, known data set for the reports, and the figures it must give."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import time_machine
from sqlalchemy.orm import Session

from airtime.accounts.models import Line, LineState
from airtime.clock import today, utcnow
from airtime.config import Settings
from airtime.ledger.models import AccountKind
from airtime.ledger.service import Leg, open_account, operator_account, post_transfer
from airtime.topups.models import OrderStatus, Promotion, PromotionKind, TopupOrder
from airtime.vouchers.models import Outlet, Voucher, VoucherBatch
from tests import factories

DAY_1 = date(2026, 3, 1)
DAY_2 = date(2026, 3, 2)
PERIOD = {"start": "2026-03-01", "end": "2026-03-03", "currency": "GBP"}


def at(day: date, hour: int, second: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, 0, second, tzinfo=UTC)


def _order(
    session: Session,
    line: Line,
    *,
    created: datetime,
    channel: str,
    provider: str,
    status: str,
    amount_minor: int = 1000,
    currency: str = "GBP",
    credit_after_seconds: float | None = None,
    bonus_minor: int = 0,
    promotion_id: int | None = None,
) -> TopupOrder:
    paid = created + timedelta(seconds=5) if credit_after_seconds is not None else None
    order = TopupOrder(
        public_id=uuid.uuid4().hex,
        idempotency_scope="report-test",
        idempotency_key=uuid.uuid4().hex,
        request_hash="0" * 64,
        channel=channel,
        line_id=line.id,
        msisdn=line.msisdn,
        currency=currency,
        amount_minor=amount_minor,
        bonus_minor=bonus_minor,
        promotion_id=promotion_id,
        payment_provider=provider,
        status=status,
        created_at=created,
        paid_at=paid,
        credited_at=paid + timedelta(seconds=credit_after_seconds)
        if paid and credit_after_seconds is not None
        else None,
        failed_at=created if status == OrderStatus.FAILED else None,
        cancelled_at=created if status == OrderStatus.CANCELLED else None,
    )
    session.add(order)
    return order


def seed(session: Session, settings: Settings) -> None:
    """Orders, lines, vouchers and ledger entries whose report figures are known (below)."""
    line = factories.line(
        session, settings, msisdn="+447911100001", validity_date=today() + timedelta(days=3)
    )
    for offset, msisdn in ((10, "+447911100002"), (40, "+447911100003")):
        factories.line(session, settings, msisdn=msisdn, validity_date=today() + timedelta(days=offset))
    for state, msisdn in ((LineState.GRACE, "+447911100004"), (LineState.SUSPENDED, "+447911100005")):
        other = factories.line(session, settings, msisdn=msisdn, validity_date=today() - timedelta(days=5))
        other.state = state
    promotion = Promotion(
        code="SPRING",
        name="Spring bonus",
        kind=PromotionKind.PERCENT,
        value=1000,
        currency="GBP",
        starts_at=at(DAY_1, 0),
        ends_at=at(DAY_2, 23),
        channels=[],
    )
    session.add(promotion)
    session.flush()
    credited = OrderStatus.CREDITED
    _order(
        session,
        line,
        created=at(DAY_1, 10),
        channel="web",
        provider="sandbox",
        status=credited,
        amount_minor=1000,
        credit_after_seconds=10,
        bonus_minor=100,
        promotion_id=promotion.id,
    )
    _order(
        session,
        line,
        created=at(DAY_1, 11),
        channel="web",
        provider="sandbox",
        status=credited,
        amount_minor=2000,
        credit_after_seconds=30,
    )
    _order(
        session,
        line,
        created=at(DAY_1, 12),
        channel="quick",
        provider="stripe",
        status=OrderStatus.REFUNDED,
        amount_minor=500,
        credit_after_seconds=20,
    )
    _order(
        session, line, created=at(DAY_1, 13), channel="quick", provider="stripe", status=OrderStatus.FAILED
    )
    _order(
        session,
        line,
        created=at(DAY_1, 14),
        channel="web",
        provider="sandbox",
        status=credited,
        currency="USD",
        credit_after_seconds=40,
    )
    _order(
        session, line, created=at(DAY_2, 9), channel="web", provider="sandbox", status=OrderStatus.CANCELLED
    )
    _order(
        session,
        line,
        created=at(DAY_2, 10),
        channel="voucher",
        provider="voucher",
        status=credited,
        amount_minor=1000,
        credit_after_seconds=0,
    )
    _order(
        session,
        line,
        created=at(DAY_2, 11),
        channel="web",
        provider="sandbox",
        status=OrderStatus.AWAITING_PAYMENT,
    )
    _order(
        session,
        line,
        created=at(DAY_1, 0) - timedelta(hours=1),
        channel="web",
        provider="sandbox",
        status=credited,
        credit_after_seconds=1,
    )

    float_account = open_account(
        session,
        code="outlet:SHOP-1:GBP",
        kind=AccountKind.AGENT_FLOAT,
        currency="GBP",
        balance_tracked=True,
        floor_minor=0,
    )
    outlet = Outlet(
        code="SHOP-1", name="Corner shop", currency="GBP", float_account_id=float_account, created_at=utcnow()
    )
    session.add(outlet)
    session.flush()
    batch = VoucherBatch(
        currency="GBP",
        face_value_minor=500,
        quantity=6,
        expires_on=today() + timedelta(days=365),
        serial_first=1,
        serial_last=6,
        created_by="test",
        created_at=utcnow(),
    )
    session.add(batch)
    session.flush()
    for serial, state, outlet_id in (
        (1, "generated", None),
        (2, "generated", None),
        (3, "active", outlet.id),
        (4, "active", outlet.id),
        (5, "redeemed", outlet.id),
        (6, "blocked", None),
    ):
        session.add(
            Voucher(
                batch_id=batch.id,
                serial=serial,
                pin_hash=uuid.uuid4().hex,
                state=state,
                currency="GBP",
                face_value_minor=500,
                expires_on=batch.expires_on,
                outlet_id=outlet_id,
                state_changed_at=utcnow(),
            )
        )
    session.flush()
    breakage = operator_account(session, kind=AccountKind.BREAKAGE, currency="GBP")
    liability = operator_account(session, kind=AccountKind.VOUCHER_LIABILITY, currency="GBP")
    expense = operator_account(session, kind=AccountKind.PROMOTION_EXPENSE, currency="GBP")
    with time_machine.travel(at(DAY_1, 15), tick=False):
        post_transfer(
            session,
            transfer_id="line:999:termination",
            kind="breakage",
            currency="GBP",
            legs=[Leg(liability, -250), Leg(breakage, 250)],
            description="test breakage",
        )
        post_transfer(
            session,
            transfer_id="report-test:bonus",
            kind="topup",
            currency="GBP",
            legs=[Leg(expense, -100), Leg(line.bonus_account_id, 100)],
            description="bonus",
        )
    with time_machine.travel(at(DAY_2, 15), tick=False):
        post_transfer(
            session,
            transfer_id="voucher-expiry:1-2:GBP",
            kind="breakage",
            currency="GBP",
            legs=[Leg(liability, -1000), Leg(breakage, 1000)],
            description="test expiry",
        )
        post_transfer(
            session,
            transfer_id="report-test:clawback",
            kind="refund",
            currency="GBP",
            legs=[Leg(line.bonus_account_id, -40), Leg(expense, 40)],
            description="clawback",
        )
    session.flush()


# What the data set above must give (GBP, 2026-03-01 to 2026-03-03).
TOPUPS_BY_CHANNEL = [
    ["2026-03-01", "quick", "1", "5.00"],
    ["2026-03-01", "web", "2", "30.00"],
    ["2026-03-02", "voucher", "1", "10.00"],
]
SUCCESS_RATE = [["2026-03-01", "3", "1", "0", "75.0"], ["2026-03-02", "1", "0", "1", "50.0"]]
# Every currency: day 1 credits after 10, 20, 30 and 40 s; day 2 one at once.
CREDIT_TIME = [["2026-03-01", "4", "25.0", "38.5"], ["2026-03-02", "1", "0.0", "0.0"]]


def seed_agent_sales(session: Session, settings: Settings) -> None:
    """Agent sales whose report figures are known (below): HUB is SUB-1's parent; a sale the
    day before the period and one in USD count nowhere."""
    from airtime.agents import service as agents
    from airtime.agents.models import AgentSale

    line = factories.line(session, settings, msisdn="+447911100009")
    hub = agents.create_agent(session, code="HUB", name="Hub agent", currency="GBP")
    sub = agents.create_agent(session, code="SUB-1", name="Sub-agent", currency="GBP", parent_code="HUB")
    solo = agents.create_agent(session, code="SOLO", name="Solo agent", currency="GBP")
    dollars = agents.create_agent(session, code="USD-1", name="Dollar agent", currency="USD")
    for agent, created, currency, amount_minor, commission_minor, commission_total_minor in (
        (sub, at(DAY_1, 10), "GBP", 1000, 30, 50),
        (sub, at(DAY_1, 11), "GBP", 2000, 60, 100),
        (solo, at(DAY_1, 12), "GBP", 500, 25, 25),
        (hub, at(DAY_2, 9), "GBP", 1000, 50, 50),
        (solo, at(DAY_2, 10), "GBP", 2000, 100, 100),
        (solo, at(DAY_1, 0) - timedelta(hours=1), "GBP", 1000, 50, 50),
        (dollars, at(DAY_1, 13), "USD", 1000, 50, 50),
    ):
        order = _order(
            session,
            line,
            created=created,
            channel="agent",
            provider="agent",
            status=OrderStatus.CREDITED,
            amount_minor=amount_minor,
            currency=currency,
            credit_after_seconds=0,
        )
        session.flush()
        session.add(
            AgentSale(
                agent_id=agent.id,
                order_id=order.id,
                transfer_id=f"topup:{order.id}:credit",
                idempotency_key=uuid.uuid4().hex,
                request_hash="0" * 64,
                msisdn=line.msisdn,
                currency=currency,
                amount_minor=amount_minor,
                commission_minor=commission_minor,
                commission_total_minor=commission_total_minor,
                float_debit_minor=amount_minor - commission_minor,
                created_at=created,
            )
        )
    session.flush()


# What the agent sales above must give (GBP, 2026-03-01 to 2026-03-03).
AGENT_SALES = [
    ["2026-03-01", "SOLO", "1", "5.00"],
    ["2026-03-01", "SUB-1", "2", "30.00"],
    ["2026-03-02", "HUB", "1", "10.00"],
    ["2026-03-02", "SOLO", "1", "20.00"],
]
AGENT_COMMISSION = [
    ["2026-03-01", "3", "35.00", "1.15", "0.60", "1.75"],
    ["2026-03-02", "2", "30.00", "1.50", "0.00", "1.50"],
]
AGENT_TOTALS = [
    ["SUB-1", "Sub-agent", "HUB", "2", "30.00", "0.90", "1.50"],
    ["SOLO", "Solo agent", "", "2", "25.00", "1.25", "1.25"],
    ["HUB", "Hub agent", "", "1", "10.00", "0.50", "0.50"],
]
