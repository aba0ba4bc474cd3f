"""A subscriber's "I paid but got no credit" claim: the system first asks the payment
provider itself (and credits a paid order at once); only what it cannot settle lands in
the care queue. One claim per order; the order page shows where it stands."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from airtime.care.models import Dispute, DisputeStatus
from airtime.clock import utcnow
from airtime.config import Settings
from airtime.db.dialect import insert_ignoring_conflicts
from airtime.db.session import unit_of_work
from airtime.errors import Conflict
from airtime.payments.base import PaymentProvider
from airtime.topups import service as topups
from airtime.topups.checkout import refresh_from_provider
from airtime.topups.models import OrderStatus, TopupOrder

# A claim makes sense once a payment may have been taken; a credited top-up can be claimed
# too ("my balance did not change"): that goes straight to care.
DISPUTABLE = (
    OrderStatus.AWAITING_PAYMENT,
    OrderStatus.PAID,
    OrderStatus.FAILED,
    OrderStatus.CANCELLED,
    OrderStatus.CREDITED,
)


def for_order(session: Session, *, order_id: int) -> Dispute | None:
    return session.scalar(select(Dispute).where(Dispute.order_id == order_id))


def open_claim(
    factory: sessionmaker[Session],
    *,
    public_id: str,
    contact_email: str,
    providers: dict[str, PaymentProvider],
    settings: Settings,
) -> Dispute:
    """Open (or return the existing) claim about an order, after trying to settle it."""
    with unit_of_work(factory) as session:
        order = topups.get_order(session, public_id)
        existing = for_order(session, order_id=order.id)
        if existing is not None:
            return existing
        if order.status not in DISPUTABLE:
            raise Conflict(
                "This top-up is %(status)s: there is nothing missing to claim.", status=order.status
            )
        status_before = order.status
    # Reconciliation, now: ask the provider, credit if it was paid (its own transactions).
    order = refresh_from_provider(factory, public_id=public_id, providers=providers, settings=settings)
    credited = status_before != OrderStatus.CREDITED and order.status == OrderStatus.CREDITED
    now = utcnow()
    with unit_of_work(factory) as session:
        table = Dispute.__table__
        session.execute(
            insert_ignoring_conflicts(session, table).values(
                order_id=order.id,
                status=DisputeStatus.RESOLVED if credited else DisputeStatus.OPEN,
                resolution="auto_credited" if credited else "",
                note="",
                contact_email=contact_email.strip()[:254],
                opened_at=now,
                resolved_at=now if credited else None,
                resolved_by="system" if credited else "",
            )
        )
        dispute = for_order(session, order_id=order.id)
        assert dispute is not None
        return dispute


def shown_status(dispute: Dispute, order_status: str) -> str:
    """What the subscriber reads: an open claim whose order got credited meanwhile (by
    reconciliation, say) is resolved."""
    if dispute.status == DisputeStatus.OPEN and order_status == OrderStatus.CREDITED:
        return DisputeStatus.RESOLVED
    return dispute.status


def claim_view(session: Session, order: TopupOrder) -> dict[str, Any] | None:
    """The claim about ``order`` as the subscriber sees it on the order and receipt pages."""
    dispute = for_order(session, order_id=order.id)
    if dispute is None:
        return None
    return {"status": shown_status(dispute, order.status), "note": dispute.note, "at": dispute.opened_at}
