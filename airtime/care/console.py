"""What the care console reads: search, one subscriber's lines and timeline, the queues.
Read-only; every list is bounded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from airtime.accounts.models import AuthSession, Customer, Line, Plan
from airtime.accounts.phone import normalize_msisdn
from airtime.care.models import AdjustmentStatus, AuditEntry, BalanceAdjustment, Dispute, DisputeStatus
from airtime.clock import utcnow
from airtime.config import Settings
from airtime.errors import AppError
from airtime.ledger.service import balance_of
from airtime.lifecycle.models import LineTransition
from airtime.money import format_money
from airtime.notifications.models import Notification
from airtime.topups import service as topups
from airtime.topups.models import OrderStatus, TopupOrder
from airtime.vouchers.models import RedemptionAttempt, RedemptionLock, Voucher

RESULTS_MAX = 20
QUEUE_SIZE = 50
TIMELINE_ITEMS_PER_KIND = 50


@dataclass(frozen=True, slots=True)
class Hit:
    kind: str  # "line", "order", "voucher"
    label: str
    detail: str
    link: str


def _line_hit(line: Line) -> Hit:
    return Hit("line", line.msisdn, line.state, f"/care/lines/{line.id}")


def _order_hit(order: TopupOrder) -> Hit:
    label = order.receipt_number or order.public_id
    return Hit("order", label, f"{order.msisdn} · {order.status}", f"/care/orders/{order.public_id}")


def search(session: Session, *, query: str, settings: Settings) -> list[Hit]:
    """Lines by number or owner's email; orders by id, receipt number or payment reference;
    vouchers by serial (leading to the line that redeemed them)."""
    text = query.strip()[:120]
    if not text:
        return []
    hits: list[Hit] = []
    if "@" in text:
        lines = session.scalars(
            select(Line)
            .join(Customer, Customer.id == Line.customer_id)
            .where(Customer.email == text.lower())
            .order_by(Line.id)
            .limit(RESULTS_MAX)
        )
        hits += [_line_hit(line) for line in lines]
        orders = session.scalars(
            select(TopupOrder)
            .where(TopupOrder.receipt_email == text.lower())
            .order_by(TopupOrder.id.desc())
            .limit(5)
        )
        hits += [_order_hit(order) for order in orders]
        return hits
    try:
        msisdn = normalize_msisdn(text, default_region=settings.default_region)
    except AppError:
        msisdn = ""
    if msisdn:
        lines = session.scalars(
            select(Line).where(Line.msisdn == msisdn).order_by(Line.id.desc()).limit(RESULTS_MAX)
        )
        hits += [_line_hit(line) for line in lines]
    orders = session.scalars(
        select(TopupOrder)
        .where(
            or_(
                TopupOrder.public_id == text,
                TopupOrder.receipt_number == text.upper(),
                TopupOrder.payment_reference == text,
            )
        )
        .limit(RESULTS_MAX)
    )
    hits += [_order_hit(order) for order in orders]
    digits = text.replace(" ", "").replace("-", "")
    if digits.isdigit() and len(digits) <= 18:
        voucher = session.scalar(select(Voucher).where(Voucher.serial == int(digits)))
        if voucher is not None:
            link = (
                f"/care/lines/{voucher.redeemed_line_id}"
                if voucher.redeemed_line_id
                else f"/admin/vouchers?serial={digits}"
            )
            hits.append(Hit("voucher", f"{voucher.serial:012d}", voucher.state, link))
    return hits


@dataclass(frozen=True, slots=True)
class TimelineItem:
    at: datetime
    kind: str  # topup, voucher, notification, lifecycle, login, care
    title: str
    detail: str = ""
    link: str = ""


@dataclass
class LineView:
    line: Line
    plan: Plan
    customer: Customer | None
    balance_minor: int
    bonus_minor: int
    other_lines: list[Line]
    timeline: list[TimelineItem]
    locks: list[RedemptionLock]
    adjustments: list[BalanceAdjustment]


def line_view(session: Session, *, line_id: int) -> LineView | None:
    row = session.execute(
        select(Line, Plan).join(Plan, Plan.id == Line.plan_id).where(Line.id == line_id)
    ).one_or_none()
    if row is None:
        return None
    line, plan = row[0], row[1]
    customer = session.get(Customer, line.customer_id) if line.customer_id else None
    other_lines = (
        list(
            session.scalars(
                select(Line).where(Line.customer_id == customer.id, Line.id != line.id).limit(RESULTS_MAX)
            )
        )
        if customer
        else []
    )
    keys = [f"line:{line.id}"] + ([f"customer:{customer.id}"] if customer else [])
    locks = list(session.scalars(select(RedemptionLock).where(RedemptionLock.key.in_(keys))))
    adjustments = list(
        session.scalars(
            select(BalanceAdjustment)
            .where(BalanceAdjustment.line_id == line.id)
            .order_by(BalanceAdjustment.id.desc())
            .limit(TIMELINE_ITEMS_PER_KIND)
        )
    )
    return LineView(
        line=line,
        plan=plan,
        customer=customer,
        balance_minor=balance_of(session, line.main_account_id),
        bonus_minor=balance_of(session, line.bonus_account_id),
        other_lines=other_lines,
        timeline=timeline(session, line=line, customer=customer, keys=keys),
        locks=locks,
        adjustments=adjustments,
    )


def timeline(
    session: Session, *, line: Line, customer: Customer | None, keys: list[str]
) -> list[TimelineItem]:
    """One list, newest first: each top-up stage, voucher attempts, notifications sent,
    lifecycle moves, log-ins and care's own actions."""
    items: list[TimelineItem] = []
    for order in topups.line_orders(session, line_id=line.id, limit=TIMELINE_ITEMS_PER_KIND):
        link = f"/care/orders/{order.public_id}"
        amount = format_money(order.amount_minor, order.currency)
        for stage in topups.stages(order):
            if stage.at is not None:
                detail = f"{amount} · {order.channel} · {order.payment_provider}"
                items.append(TimelineItem(stage.at, "topup", f"top-up {stage.name}", detail, link))
    attempts = session.scalars(
        select(RedemptionAttempt)
        .where(RedemptionAttempt.key.in_(keys))
        .order_by(RedemptionAttempt.id.desc())
        .limit(TIMELINE_ITEMS_PER_KIND)
    )
    for attempt in attempts:
        outcome = "redeemed" if attempt.succeeded else f"refused: {attempt.reason}"
        items.append(
            TimelineItem(
                attempt.at, "voucher", f"voucher PIN {outcome}", f"{attempt.channel} · {attempt.key}"
            )
        )
    recipients = [line.msisdn] + ([customer.email] if customer else [])
    notifications = session.scalars(
        select(Notification)
        .where(
            or_(
                Notification.recipient.in_(recipients),
                Notification.customer_id == (customer.id if customer else -1),
            )
        )
        .order_by(Notification.id.desc())
        .limit(TIMELINE_ITEMS_PER_KIND)
    )
    for message in notifications:
        items.append(
            TimelineItem(
                message.sent_at or message.created_at,
                "notification",
                f"{message.channel} {message.template} ({message.status})",
                message.recipient,
            )
        )
    transitions = session.scalars(
        select(LineTransition)
        .where(LineTransition.line_id == line.id)
        .order_by(LineTransition.id.desc())
        .limit(TIMELINE_ITEMS_PER_KIND)
    )
    for move in transitions:
        items.append(
            TimelineItem(
                move.at, "lifecycle", f"{move.from_state} → {move.to_state}", f"{move.reason} · {move.actor}"
            )
        )
    if customer is not None:
        logins = session.scalars(
            select(AuthSession)
            .where(AuthSession.customer_id == customer.id)
            .order_by(AuthSession.created_at.desc())
            .limit(TIMELINE_ITEMS_PER_KIND)
        )
        for login in logins:
            items.append(TimelineItem(login.created_at, "login", f"log-in ({login.kind})", login.ip_address))
    care_rows = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.subject_type == "line", AuditEntry.subject_id == str(line.id))
        .order_by(AuditEntry.id.desc())
        .limit(TIMELINE_ITEMS_PER_KIND)
    )
    for entry in care_rows:
        items.append(TimelineItem(entry.at, "care", entry.action, f"{entry.staff_email} · {entry.reason}"))
    items.sort(key=lambda item: item.at, reverse=True)
    return items


@dataclass
class Queues:
    paid_not_credited: list[TopupOrder]
    paid_line_gone: list[TopupOrder]
    stuck_awaiting_payment: list[TopupOrder]
    refund_shortfalls: list[TopupOrder]
    locked_out: list[RedemptionLock]
    open_disputes: list[tuple[Dispute, TopupOrder]]
    pending_adjustments: list[BalanceAdjustment]

    @property
    def counts(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in self.__dataclass_fields__}


def queues(session: Session, *, settings: Settings) -> Queues:
    now = utcnow()
    stuck_before = now - timedelta(seconds=max(settings.reconcile_after_seconds, 60))

    def orders(*conditions: Any) -> list[TopupOrder]:
        return list(
            session.scalars(select(TopupOrder).where(*conditions).order_by(TopupOrder.id).limit(QUEUE_SIZE))
        )

    return Queues(
        paid_not_credited=orders(
            TopupOrder.status == OrderStatus.PAID, TopupOrder.failure_code != topups.LINE_GONE
        ),
        paid_line_gone=orders(
            TopupOrder.status == OrderStatus.PAID, TopupOrder.failure_code == topups.LINE_GONE
        ),
        stuck_awaiting_payment=orders(
            TopupOrder.status == OrderStatus.AWAITING_PAYMENT, TopupOrder.awaiting_payment_at < stuck_before
        ),
        refund_shortfalls=orders(TopupOrder.refund_shortfall_minor > 0),
        locked_out=list(
            session.scalars(
                select(RedemptionLock)
                .where(RedemptionLock.locked_until > now)
                .order_by(RedemptionLock.locked_until)
                .limit(QUEUE_SIZE)
            )
        ),
        open_disputes=[
            (row[0], row[1])
            for row in session.execute(
                select(Dispute, TopupOrder)
                .join(TopupOrder, TopupOrder.id == Dispute.order_id)
                .where(Dispute.status == DisputeStatus.OPEN)
                .order_by(Dispute.id)
                .limit(QUEUE_SIZE)
            )
        ],
        pending_adjustments=list(
            session.scalars(
                select(BalanceAdjustment)
                .where(BalanceAdjustment.status == AdjustmentStatus.PENDING)
                .order_by(BalanceAdjustment.id)
                .limit(QUEUE_SIZE)
            )
        ),
    )
