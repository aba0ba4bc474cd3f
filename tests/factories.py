"""Small builders for test data; each returns what the test needs to look at."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from sqlalchemy.orm import Session

from airtime.accounts import service as accounts
from airtime.accounts.models import Customer, Line, Plan
from airtime.clock import today, utcnow
from airtime.config import Settings
from airtime.ledger.models import AccountKind
from airtime.ledger.service import Leg, operator_account, post_transfer

PASSWORD = "correct horse battery"


def plan(session: Session, *, code: str = "TEST-GBP", currency: str = "GBP") -> Plan:
    existing = session.query(Plan).filter_by(code=code).one_or_none()
    if existing:
        return existing
    created = Plan(
        code=code,
        name="Test plan",
        name_zh="测试套餐",
        currency=currency,
        validity_tiers=[[500, 30], [1000, 60], [2000, 120]],
        validity_days_max=180,
        created_at=utcnow(),
    )
    session.add(created)
    session.flush()
    return created


def customer(
    session: Session, settings: Settings, *, email: str | None = None, language: str = "en"
) -> Customer:
    return accounts.register_customer(
        session,
        email=email or f"user-{uuid.uuid4().hex[:10]}@example.com",
        password=PASSWORD,
        language=language,
        settings=settings,
    )


def line(
    session: Session,
    settings: Settings,
    *,
    msisdn: str = "+447911123456",
    customer_id: int | None = None,
    balance_minor: int = 0,
    validity_date: date | None = None,
) -> Line:
    plan(session)
    created = accounts.add_line(
        session,
        msisdn=msisdn,
        plan_code="TEST-GBP",
        settings=settings,
        customer_id=customer_id,
        validity_date=validity_date or today() + timedelta(days=30),
    )
    if balance_minor:
        clearing = operator_account(
            session, kind=AccountKind.PAYMENT_CLEARING, currency="GBP", qualifier="test"
        )
        post_transfer(
            session,
            transfer_id=f"test-credit-{uuid.uuid4().hex}",
            kind="test_credit",
            currency="GBP",
            legs=[Leg(clearing, -balance_minor), Leg(created.main_account_id, balance_minor)],
            description="Opening balance",
        )
    return created
