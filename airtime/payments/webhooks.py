"""Provider events: stored once per (provider, event id) before any work, then applied.

Step one (one transaction): store the event (INSERT ... ON CONFLICT DO NOTHING; a
duplicate stops here) and bring the order in line with it (paid / failed / refunded).
Step two (its own transaction): credit a paid order. If the process dies between the two,
the order is "paid, not credited", which reconciliation finds and credits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import cast

import structlog
from sqlalchemy import Table, select
from sqlalchemy.orm import Session, sessionmaker

from airtime.clock import utcnow
from airtime.config import Settings
from airtime.db.dialect import insert_ignoring_conflicts
from airtime.db.session import unit_of_work
from airtime.payments.base import PaymentState, ProviderEvent, WebhookRefused
from airtime.payments.models import PaymentEvent
from airtime.topups import service as topups
from airtime.topups.models import OrderStatus, TopupOrder

log = structlog.get_logger(__name__)
_events = cast(Table, PaymentEvent.__table__)


@dataclass(frozen=True, slots=True)
class EventResult:
    duplicate: bool
    order_public_id: str | None
    change: str
    credited: bool


def process_event(
    factory: sessionmaker[Session], *, provider_name: str, event: ProviderEvent, settings: Settings
) -> EventResult:
    """Apply one verified provider event exactly once (see module docstring)."""
    tolerance = timedelta(seconds=settings.webhook_tolerance_seconds)
    if event.occurred_at < utcnow() - tolerance:
        raise WebhookRefused(
            "Event %(event_id)s is older than the accepted %(seconds)s seconds.",
            event_id=event.event_id,
            seconds=settings.webhook_tolerance_seconds,
        )
    with unit_of_work(factory) as session:
        order = session.scalar(
            select(TopupOrder)
            .where(
                TopupOrder.payment_provider == provider_name, TopupOrder.payment_reference == event.reference
            )
            .with_for_update(key_share=True)
        )
        stored = session.execute(
            insert_ignoring_conflicts(session, _events)
            .values(
                provider=provider_name,
                event_id=event.event_id[:120],
                event_type=event.event_type[:80],
                payment_reference=event.reference[:120],
                outcome=event.outcome,
                order_id=order.id if order else None,
                payload=dict(event.payload),
                occurred_at=event.occurred_at,
                received_at=utcnow(),
            )
            .returning(_events.c.id)
        ).scalar()
        if stored is None:
            return EventResult(
                duplicate=True,
                order_public_id=order.public_id if order else None,
                change="none",
                credited=False,
            )
        if order is None:
            log.warning("payment_event_for_unknown_order", provider=provider_name, reference=event.reference)
            return EventResult(
                duplicate=False, order_public_id=None, change="unknown_reference", credited=False
            )
        change = topups.apply_payment_state(
            session,
            order,
            PaymentState(
                reference=event.reference,
                outcome=event.outcome,
                amount_minor=event.amount_minor,
                currency=event.currency,
                method=event.method,
                failure_code=event.failure_code,
                refunded_minor=event.refunded_minor,
            ),
        )
        order_id, public_id = order.id, order.public_id
    credited = credit_if_paid(factory, order_id=order_id, settings=settings)
    return EventResult(duplicate=False, order_public_id=public_id, change=change, credited=credited)


def credit_if_paid(factory: sessionmaker[Session], *, order_id: int, settings: Settings) -> bool:
    """Credit the order in its own transaction if it is paid; False if there was nothing to do."""
    with unit_of_work(factory) as session:
        order = session.get(TopupOrder, order_id)
        if order is None or order.status != OrderStatus.PAID:
            return False
        return topups.credit(session, order_id=order_id, settings=settings)
