"""The line lifecycle on both databases, travelling in time: every state under both validity
rules, restores by top-up, termination with breakage, number release and reminders."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

import pytest
import time_machine
from sqlalchemy import func, select

from airtime.accounts import service as accounts
from airtime.accounts.models import Line, LineState, ValidityRule
from airtime.clock import today
from airtime.errors import Conflict
from airtime.ledger.models import AccountKind
from airtime.ledger.service import balance_of, check_invariants, operator_account
from airtime.lifecycle.models import LineTransition, TransitionReason
from airtime.lifecycle.reminders import send_reminders
from airtime.lifecycle.service import sweep
from airtime.notifications.models import Notification
from airtime.topups import service as topups
from airtime.topups.models import LineAllowance
from tests import factories, topup_helpers

MSISDN = "+447911123456"


def at(day: date) -> time_machine.travel:
    """Travel to noon UTC of ``day`` and stay there."""
    return time_machine.travel(f"{day.isoformat()}T12:00:00+00:00", tick=False)


@pytest.fixture
def start() -> date:
    return today()


def make_line(
    uow, settings, *, validity_days=5, balance_minor=700, rule=ValidityRule.TOPUP_EXTENDS, **plan_values
):
    with uow() as session:
        plan = factories.plan(session)
        topup_helpers.catalogue(session)
        plan.validity_rule = rule
        plan.grace_days, plan.suspension_days, plan.quarantine_days = 30, 60, 90
        for name, value in plan_values.items():
            setattr(plan, name, value)
        customer = factories.customer(session, settings, language="zh_Hans")
        line = factories.line(
            session,
            settings,
            msisdn=MSISDN,
            customer_id=customer.id,
            balance_minor=balance_minor,
            validity_date=today() + timedelta(days=validity_days),
        )
        return line.id


def state_of(uow, line_id) -> tuple[str, date | None]:
    with uow() as session:
        line = session.get(Line, line_id)
        return line.state, line.validity_date


def transitions(uow, line_id) -> list[tuple[str, str, str]]:
    with uow() as session:
        rows = session.scalars(
            select(LineTransition).where(LineTransition.line_id == line_id).order_by(LineTransition.id)
        )
        return [(row.from_state, row.to_state, row.reason) for row in rows]


def top_up(uow, settings, line_id, amount_minor=1000) -> None:
    with uow() as session:
        line = session.get(Line, line_id)
        order = topups.create_paid_order(
            session,
            line=line,
            amount_minor=amount_minor,
            channel="web",
            provider_name="test",
            payment_reference=uuid.uuid4().hex,
            idempotency_scope="test",
            idempotency_key=uuid.uuid4().hex,
        )
        assert topups.credit(session, order_id=order.id, settings=settings)


def test_topup_extends_line_goes_through_every_state_and_its_number_is_recycled(
    uow, session_factory, settings, start
):
    line_id = make_line(uow, settings)
    validity = start + timedelta(days=5)

    with at(validity):
        assert sweep(session_factory).total == 0
        assert state_of(uow, line_id) == (LineState.ACTIVE, validity)
    with at(validity + timedelta(days=1)):
        assert sweep(session_factory).moved["grace"] == 1
        assert sweep(session_factory).total == 0  # a second run moves nothing
    grace_began = validity + timedelta(days=1)
    with at(grace_began + timedelta(days=29)):
        sweep(session_factory)
        assert state_of(uow, line_id)[0] == LineState.GRACE
    with at(grace_began + timedelta(days=30)):
        assert sweep(session_factory).moved["suspended"] == 1
    suspended_on = grace_began + timedelta(days=30)
    with at(suspended_on + timedelta(days=59)):
        sweep(session_factory)
        assert state_of(uow, line_id)[0] == LineState.SUSPENDED
    with uow() as session:
        breakage = operator_account(session, kind=AccountKind.BREAKAGE, currency="GBP")
        line = session.get(Line, line_id)
        main_account = line.main_account_id
    with at(suspended_on + timedelta(days=60)):
        result = sweep(session_factory)
        assert result.moved["terminated"] == 1
        assert result.forfeited_minor == {"GBP": 700}
    with uow() as session:
        assert balance_of(session, main_account) == 0
        assert balance_of(session, breakage) == 700
        assert check_invariants(session) == []
    terminated_on = suspended_on + timedelta(days=60)
    with at(terminated_on + timedelta(days=89)), uow() as session:
        sweep(session_factory)
        with pytest.raises(Conflict, match="quarantine until"):
            accounts.add_line(session, msisdn=MSISDN, plan_code="TEST-GBP", settings=settings)
        with pytest.raises(topups.LineNotTopupable):
            topups.find_topupable_line(session, msisdn=MSISDN, settings=settings)
    with at(terminated_on + timedelta(days=90)):
        assert sweep(session_factory).moved["released"] == 1
        with uow() as session:
            fresh = accounts.add_line(session, msisdn=MSISDN, plan_code="TEST-GBP", settings=settings)
            assert fresh.id != line_id and fresh.main_account_id != main_account
        with uow() as session:
            assert topups.find_topupable_line(session, msisdn=MSISDN, settings=settings).id == fresh.id
        assert sweep(session_factory).total == 0
    assert transitions(uow, line_id) == [
        (LineState.ACTIVE, LineState.GRACE, TransitionReason.VALIDITY_ENDED),
        (LineState.GRACE, LineState.SUSPENDED, TransitionReason.GRACE_ENDED),
        (LineState.SUSPENDED, LineState.TERMINATED, TransitionReason.SUSPENSION_ENDED),
        (LineState.TERMINATED, LineState.TERMINATED, TransitionReason.QUARANTINE_ENDED),
    ]


def test_a_topup_in_grace_restores_the_line(uow, session_factory, settings, start):
    line_id = make_line(uow, settings)
    with at(start + timedelta(days=10)):
        sweep(session_factory)
        assert state_of(uow, line_id)[0] == LineState.GRACE
        top_up(uow, settings, line_id, 1000)
        assert state_of(uow, line_id) == (LineState.ACTIVE, start + timedelta(days=10 + 60))
        assert sweep(session_factory).total == 0
    assert transitions(uow, line_id)[-1] == (LineState.GRACE, LineState.ACTIVE, TransitionReason.TOPUP)


def test_a_topup_in_suspension_restores_the_line_and_charges_the_reactivation_fee(
    uow, session_factory, settings, start
):
    line_id = make_line(uow, settings, balance_minor=0, reactivation_fee_minor=200)
    suspension_day = start + timedelta(days=6 + 30)
    with at(start + timedelta(days=6)):
        sweep(session_factory)
    with at(suspension_day):
        sweep(session_factory)
        assert state_of(uow, line_id)[0] == LineState.SUSPENDED
        top_up(uow, settings, line_id, 1000)
        top_up(uow, settings, line_id, 500)  # a second top-up of an active line pays no fee
    with uow() as session:
        line = session.get(Line, line_id)
        assert line.state == LineState.ACTIVE
        assert balance_of(session, line.main_account_id) == 1000 - 200 + 500
        revenue = operator_account(
            session, kind=AccountKind.REVENUE, currency="GBP", qualifier="reactivation"
        )
        assert balance_of(session, revenue) == 200
        assert check_invariants(session) == []
    assert transitions(uow, line_id)[-1] == (LineState.SUSPENDED, LineState.ACTIVE, TransitionReason.TOPUP)


def test_activity_resets_keeps_the_line_alive_from_each_chargeable_event(
    uow, session_factory, settings, start
):
    line_id = make_line(
        uow,
        settings,
        validity_days=3,
        balance_minor=3000,
        rule=ValidityRule.ACTIVITY_RESETS,
        activity_days=30,
    )
    with at(start + timedelta(days=2)), uow() as session:
        topups.buy_bundle_from_balance(
            session, line=session.get(Line, line_id), bundle_code="DATA-5GB", idempotency_key="b1"
        )
    assert state_of(uow, line_id) == (LineState.ACTIVE, start + timedelta(days=32))
    with at(start + timedelta(days=33)):
        assert sweep(session_factory).moved["grace"] == 1
        top_up(uow, settings, line_id, 500)  # any top-up counts, whatever its amount
        assert state_of(uow, line_id) == (LineState.ACTIVE, start + timedelta(days=33 + 30))
    # Left alone, it goes through grace, suspension and termination by the same periods.
    with at(start + timedelta(days=64)):
        sweep(session_factory)
    with at(start + timedelta(days=94)):
        sweep(session_factory)
    with at(start + timedelta(days=154)):
        assert sweep(session_factory).moved["terminated"] == 1
    with uow() as session:
        line = session.get(Line, line_id)
        assert line.state == LineState.TERMINATED
        assert balance_of(session, line.main_account_id) == 0
        allowances = session.scalars(select(LineAllowance).where(LineAllowance.line_id == line_id)).all()
        assert allowances and all(allowance.revoked_at is not None for allowance in allowances)
        assert check_invariants(session) == []


def test_a_plan_that_does_not_forfeit_leaves_the_balance_on_the_terminated_line(
    uow, session_factory, settings, start
):
    line_id = make_line(uow, settings, forfeit_balance_on_termination=False, grace_days=1, suspension_days=1)
    for offset in (6, 7, 8):
        with at(start + timedelta(days=offset)):
            sweep(session_factory)
    with uow() as session:
        line = session.get(Line, line_id)
        assert line.state == LineState.TERMINATED
        assert balance_of(session, line.main_account_id) == 700


def test_a_sweep_after_a_long_outage_moves_a_line_one_state_at_a_time(uow, session_factory, settings, start):
    line_id = make_line(uow, settings)
    with at(start + timedelta(days=400)):
        sweep(session_factory)
        sweep(session_factory)
        assert state_of(uow, line_id)[0] == LineState.GRACE  # full grace, reminders included


def reminder_keys(uow) -> list[str]:
    with uow() as session:
        return sorted(
            key
            for key in session.scalars(
                select(Notification.dedup_key).where(Notification.dedup_key.like("reminder:%"))
            )
        )


def test_each_reminder_is_sent_once_however_often_the_jobs_run(uow, session_factory, settings, start):
    line_id = make_line(uow, settings, validity_days=20)
    validity = start + timedelta(days=20)
    grace_began = validity + timedelta(days=1)
    suspended_on = grace_began + timedelta(days=30)
    days = [validity - timedelta(days=n) for n in (14, 10, 7, 1, 0)]
    days += [grace_began, suspended_on - timedelta(days=7), suspended_on - timedelta(days=1), suspended_on]
    days += [suspended_on + timedelta(days=53), suspended_on + timedelta(days=59)]
    for day in days:
        with at(day):
            for _ in range(5):
                sweep(session_factory)
                send_reminders(session_factory, settings)
    v, s, t = validity.isoformat(), suspended_on.isoformat(), (suspended_on + timedelta(days=60)).isoformat()
    expected = [
        f"reminder:expiry:{line_id}:{v}:14",
        f"reminder:expiry:{line_id}:{v}:7",
        f"reminder:expiry:{line_id}:{v}:1",
        f"reminder:grace:{line_id}:{s}:0",
        f"reminder:suspension:{line_id}:{s}:7",
        f"reminder:suspension:{line_id}:{s}:1",
        f"reminder:termination:{line_id}:{t}:7",
        f"reminder:termination:{line_id}:{t}:1",
    ]
    assert reminder_keys(uow) == sorted(
        f"{key}:{channel}" for key in expected for channel in ("email", "sms")
    )
    with uow() as session:
        sms = session.scalar(
            select(Notification).where(Notification.dedup_key == f"reminder:termination:{line_id}:{t}:1:sms")
        )
        email = session.scalar(
            select(Notification).where(Notification.dedup_key == f"reminder:expiry:{line_id}:{v}:7:email")
        )
    # In the owner's language, with a link that opens the top-up of this number.
    assert "终止" in sms.body_text and "msisdn=%2B447911123456" in sms.body_text
    assert sms.recipient == MSISDN and email.language == "zh_Hans" and email.subject


def test_a_topup_moves_the_deadline_and_makes_new_reminders(uow, session_factory, settings, start):
    line_id = make_line(uow, settings, validity_days=7)
    with at(start):
        send_reminders(session_factory, settings)
        top_up(uow, settings, line_id, 500)  # +30 days
        send_reminders(session_factory, settings)
    with at(start + timedelta(days=30)):
        send_reminders(session_factory, settings)
    new_validity = (start + timedelta(days=37)).isoformat()
    keys = reminder_keys(uow)
    assert f"reminder:expiry:{line_id}:{(start + timedelta(days=7)).isoformat()}:7:sms" in keys
    assert f"reminder:expiry:{line_id}:{new_validity}:7:sms" in keys


def test_low_balance_alert_is_sent_once_per_fall_and_rearmed_by_a_topup(uow, session_factory, settings):
    line_id = make_line(uow, settings, balance_minor=300)
    with uow() as session:
        session.get(Line, line_id).low_balance_threshold_minor = 500
    for _ in range(3):
        send_reminders(session_factory, settings)
    assert len([key for key in reminder_keys(uow) if ":low_balance:" in key]) == 2  # SMS and email
    top_up(uow, settings, line_id, 1000)
    send_reminders(session_factory, settings)
    with uow() as session:
        line = session.get(Line, line_id)
        assert line.low_balance_alerted_at is None
        topups.buy_bundle_from_balance(session, line=line, bundle_code="DATA-5GB", idempotency_key="spend")
    send_reminders(session_factory, settings)
    send_reminders(session_factory, settings)
    assert len([key for key in reminder_keys(uow) if ":low_balance:" in key]) == 4
    with uow() as session:
        assert session.scalar(select(func.count()).select_from(LineTransition)) == 0
