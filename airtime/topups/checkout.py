"""What the pages and the API call: ask the provider when a customer comes back, so the
credit shows within seconds even if the provider's webhook is late."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.errors import AppError
from airtime.payments.base import PaymentProvider
from airtime.payments.webhooks import credit_if_paid
from airtime.topups import service as topups
from airtime.topups.models import OrderStatus, TopupOrder


def refresh_from_provider(
    factory: sessionmaker[Session],
    *,
    public_id: str,
    providers: dict[str, PaymentProvider],
    settings: Settings,
) -> TopupOrder:
    """Bring a waiting order up to date with its provider, credit it if paid, return it."""
    with unit_of_work(factory) as session:
        order = topups.get_order(session, public_id)
        provider = providers.get(order.payment_provider)
        if order.status == OrderStatus.AWAITING_PAYMENT and provider is not None and order.payment_reference:
            try:
                state = provider.fetch_payment(session, order.payment_reference)
            except AppError:
                state = None  # the provider is unreachable: the page still shows what we know
            if state is not None:
                topups.apply_payment_state(session, order, state)
        order_id = order.id
    credit_if_paid(factory, order_id=order_id, settings=settings)
    with unit_of_work(factory) as session:
        return topups.get_order(session, public_id)
