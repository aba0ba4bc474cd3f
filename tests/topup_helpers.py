"""Shared steps for top-up tests: a catalogue, a line, an order through the sandbox."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.orm import Session

from airtime.clock import utcnow
from airtime.config import Settings
from airtime.payments.sandbox import SandboxProvider
from airtime.topups import service as topups
from airtime.topups.models import AmountRule, Bundle, Promotion, PromotionKind, TopupOrder
from tests import factories


def catalogue(session: Session) -> None:
    session.add(
        AmountRule(
            currency="GBP",
            denominations=[500, 1000, 2000],
            amount_min_minor=300,
            amount_max_minor=20000,
            custom_allowed=True,
        )
    )
    session.add(
        Bundle(code="DATA-5GB", name="5 GB", currency="GBP", price_minor=1000, data_mb=5120, validity_days=30)
    )
    session.flush()


def promotion(session: Session, **overrides) -> Promotion:
    values = {
        "code": f"PROMO-{uuid.uuid4().hex[:6]}",
        "name": "Bonus",
        "kind": PromotionKind.PERCENT,
        "value": 1000,
        "currency": "GBP",
        "amount_min_minor": 0,
        "starts_at": utcnow() - timedelta(days=1),
        "ends_at": utcnow() + timedelta(days=1),
        "first_topup_only": False,
        "channels": [],
    }
    values.update(overrides)
    created = Promotion(**values)
    session.add(created)
    session.flush()
    return created


def order(
    session: Session,
    settings: Settings,
    *,
    line_id: int,
    amount_minor: int | None = 1000,
    bundle_code: str | None = None,
    key: str | None = None,
    channel: str = "quick",
) -> TopupOrder:
    from airtime.accounts.models import Line

    line = session.get(Line, line_id)
    quote = topups.quote(
        session,
        line=line,
        channel=channel,
        amount_minor=None if bundle_code else amount_minor,
        bundle_code=bundle_code,
    )
    created, _ = topups.create_order(
        session,
        quote=quote,
        channel=channel,
        provider=SandboxProvider(base_url=settings.base_url),
        idempotency_scope="test",
        idempotency_key=key or uuid.uuid4().hex,
        settings=settings,
        receipt_email="payer@example.com",
    )
    return created


def line_with_catalogue(session: Session, settings: Settings, **line_args):
    factories.plan(session)
    catalogue(session)
    return factories.line(session, settings, **line_args)
