"""Reconciliation: find top-ups the normal path left behind and repair or expire them.

- paid but not credited (the process died between payment and credit): credit them;
- awaiting payment for a while: ask the provider; paid → credit, declined → fail;
- still pending past the expiry: give up on them (a late success still credits).
Safe to run anywhere, any number of times, in parallel: every step is a conditional
transition, and crediting is exactly-once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

import structlog
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from airtime.clock import utcnow
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.errors import AppError
from airtime.payments.base import PaymentOutcome, PaymentProvider
from airtime.payments.webhooks import credit_if_paid
from airtime.topups import service as topups
from airtime.topups.models import OrderStatus, TopupOrder

log = structlog.get_logger(__name__)
BATCH_SIZE = 200


@dataclass
class ReconcileReport:
    credited: int = 0
    found_paid: int = 0
    failed: int = 0
    expired: int = 0
    still_pending: int = 0
    errors: list[str] = field(default_factory=list)


def reconcile(
    factory: sessionmaker[Session], *, providers: dict[str, PaymentProvider], settings: Settings
) -> ReconcileReport:
    report = ReconcileReport()
    now = utcnow()
    with unit_of_work(factory) as session:
        paid_ids = list(
            session.scalars(
                select(TopupOrder.id)
                .where(TopupOrder.status == OrderStatus.PAID, TopupOrder.failure_code != topups.LINE_GONE)
                .order_by(TopupOrder.id)
                .limit(BATCH_SIZE)
            )
        )
        waiting = session.execute(
            select(TopupOrder.id, TopupOrder.payment_provider, TopupOrder.created_at)
            .where(
                TopupOrder.status == OrderStatus.AWAITING_PAYMENT,
                TopupOrder.awaiting_payment_at < now - timedelta(seconds=settings.reconcile_after_seconds),
            )
            .order_by(TopupOrder.id)
            .limit(BATCH_SIZE)
        ).all()
    for order_id in paid_ids:
        report.credited += credit_if_paid(factory, order_id=order_id, settings=settings)
    expiry = timedelta(minutes=settings.topup_payment_expiry_minutes)
    for order_id, provider_name, created_at in waiting:
        provider = providers.get(provider_name)
        if provider is None:
            report.errors.append(f"order {order_id}: provider {provider_name} is not configured")
            continue
        try:
            with unit_of_work(factory) as session:
                order = session.get(TopupOrder, order_id)
                assert order is not None and order.payment_reference
                state = provider.fetch_payment(session, order.payment_reference)
                if state.outcome == PaymentOutcome.PENDING:
                    if created_at < now - expiry and topups.expire(session, order):
                        report.expired += 1
                    else:
                        report.still_pending += 1
                    continue
                change = topups.apply_payment_state(session, order, state)
            if change == "paid":
                report.found_paid += 1
                report.credited += credit_if_paid(factory, order_id=order_id, settings=settings)
            elif change == "failed":
                report.failed += 1
        except AppError as error:
            report.errors.append(f"order {order_id}: {error.detail}")
            log.warning("reconcile_order_failed", order_id=order_id, error=error.detail)
    return report
