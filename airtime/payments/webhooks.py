"""Provider events: stored once per (provider, event id) before any work, then applied.

One transaction: store the event (INSERT ... ON CONFLICT DO NOTHING; a duplicate stops
here), bring the order in line with it (paid / failed / refunded) and credit a paid order.
If crediting fails, that transaction is rolled back and the event and the payment are
stored again on their own, so the order is left "paid, not credited", which
reconciliation finds and credits; the failure is still raised. If the process dies
before either commits, the provider sends the event again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
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
_orders = cast(Table, TopupOrder.__table__)


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
    result = receive_event(factory, provider_name=provider_name, settings=settings, receive=lambda _: event)
    assert result is not None
    return result


def receive_event(
    factory: sessionmaker[Session],
    *,
    provider_name: str,
    settings: Settings,
    receive: Callable[[Session], ProviderEvent | None],
) -> EventResult | None:
    """Apply the event that ``receive`` gives (None: no event), in the transaction that
    ``receive`` ran in: the sandbox decides its payment there (see module docstring)."""
    stored = False
    try:
        with unit_of_work(factory) as session:
            event = receive(session)
            if event is None:
                return None
            check_event_age(event, settings)
            stored = True
            result, order_id = _store_and_apply(session, provider_name=provider_name, event=event)
            if order_id is None:
                return result
            # The crediting step checks for itself (conditional update) that the order is paid.
            credited = topups.credit(session, order_id=order_id, settings=settings)
            return dataclasses.replace(result, credited=credited)
    except Exception:
        if not stored:
            raise
        # Crediting failed and took the event with it: keep the event and the payment.
        with unit_of_work(factory) as session:
            event = receive(session)
            if event is not None:
                _store_and_apply(session, provider_name=provider_name, event=event)
        raise


def check_event_age(event: ProviderEvent, settings: Settings) -> None:
    tolerance = timedelta(seconds=settings.webhook_tolerance_seconds)
    if event.occurred_at < utcnow() - tolerance:
        raise WebhookRefused(
            "Event %(event_id)s is older than the accepted %(seconds)s seconds.",
            event_id=event.event_id,
            seconds=settings.webhook_tolerance_seconds,
        )


def _store_and_apply(
    session: Session, *, provider_name: str, event: ProviderEvent
) -> tuple[EventResult, int | None]:
    """Store the event once and bring its order in line; the order's id if it may need credit."""
    order = session.execute(
        select(_orders.c.id, _orders.c.public_id, _orders.c.amount_minor, _orders.c.currency)
        .where(_orders.c.payment_provider == provider_name, _orders.c.payment_reference == event.reference)
        .with_for_update(key_share=True)
    ).one_or_none()
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
        result = EventResult(
            duplicate=True, order_public_id=order.public_id if order else None, change="none", credited=False
        )
        return result, None
    if order is None:
        log.warning("payment_event_for_unknown_order", provider=provider_name, reference=event.reference)
        return EventResult(
            duplicate=False, order_public_id=None, change="unknown_reference", credited=False
        ), None
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
    return EventResult(
        duplicate=False, order_public_id=order.public_id, change=change, credited=False
    ), order.id


def _credit_if_paid(session: Session, *, order_id: int, settings: Settings) -> bool:
    status = session.execute(select(_orders.c.status).where(_orders.c.id == order_id)).scalar()
    if status != OrderStatus.PAID:
        return False
    return topups.credit(session, order_id=order_id, settings=settings)


def credit_if_paid(factory: sessionmaker[Session], *, order_id: int, settings: Settings) -> bool:
    """Credit the order in its own transaction if it is paid; False if there was nothing to do."""
    with unit_of_work(factory) as session:
        return _credit_if_paid(session, order_id=order_id, settings=settings)
