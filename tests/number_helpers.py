"""Three lines of one customer in three lifecycle states, on a fixed day, for the "My
numbers" tests: active (valid 40 more days), grace (suspended in 26 days) and suspended
(lost in 45 days, with a reactivation fee)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import time_machine

from airtime.accounts.models import Line, LineState
from tests import factories, topup_helpers

DAY = date(2027, 3, 1)
ACTIVE_NUMBER = "+447911123456"
GRACE_NUMBER = "+447911123457"
SUSPENDED_NUMBER = "+447911123458"


def at(day: date) -> time_machine.travel:
    """Travel to noon UTC of ``day`` and stay there."""
    return time_machine.travel(f"{day.isoformat()}T12:00:00+00:00", tick=False)


@dataclass(frozen=True)
class ThreeLines:
    customer_id: int
    email: str
    active_id: int
    grace_id: int
    suspended_id: int


def _entered(day: date) -> datetime:
    return datetime.combine(day, time(3, 0), tzinfo=UTC)


def three_lines(uow, settings, *, email: str = "ana@example.com", language: str = "en") -> ThreeLines:
    """Made on ``DAY`` (the caller travels there): the lifecycle periods are 30 days of
    grace and 60 of suspension, a £5 top-up adds 30 days, coming back costs £2."""
    with uow() as session:
        plan = factories.plan(session)
        topup_helpers.catalogue(session)
        plan.grace_days, plan.suspension_days, plan.quarantine_days = 30, 60, 90
        plan.reactivation_fee_minor = 200
        customer = factories.customer(session, settings, email=email, language=language)
        active = factories.line(
            session,
            settings,
            msisdn=ACTIVE_NUMBER,
            customer_id=customer.id,
            balance_minor=1250,
            validity_date=DAY + timedelta(days=40),
        )
        grace = factories.line(
            session,
            settings,
            msisdn=GRACE_NUMBER,
            customer_id=customer.id,
            validity_date=DAY - timedelta(days=5),
        )
        suspended = factories.line(
            session,
            settings,
            msisdn=SUSPENDED_NUMBER,
            customer_id=customer.id,
            balance_minor=300,
            validity_date=DAY - timedelta(days=50),
        )
        session.flush()
        # Grace began the day after the validity date; suspension 15 days ago.
        for line_id, state, entered in (
            (grace.id, LineState.GRACE, DAY - timedelta(days=4)),
            (suspended.id, LineState.SUSPENDED, DAY - timedelta(days=15)),
        ):
            row = session.get(Line, line_id)
            assert row is not None
            row.state = state
            row.state_changed_at = _entered(entered)
        grace.nickname = "Work"
        return ThreeLines(customer.id, customer.email, active.id, grace.id, suspended.id)
