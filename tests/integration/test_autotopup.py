"""Auto top-up on both databases: success, decline backoff, disabled after 3 declines, the
monthly cap, re-runs that change nothing, and bad rules refused with nothing changed."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import func, select

from airtime.accounts.models import Line
from airtime.autotopup import service as autotopup
from airtime.autotopup.models import AttemptStatus, AutoTopupAttempt
from airtime.autotopup.tasks import run_due
from airtime.clock import today, utcnow
from airtime.errors import ValidationFailed
from airtime.ledger.models import AccountKind
from airtime.ledger.service import Leg, balance_of, check_invariants, operator_account, post_transfer
from airtime.notifications.models import Notification
from airtime.payments.registry import providers_from_settings
from airtime.topups.models import Channel, OrderStatus, TopupOrder
from tests import autotopup_helpers
from tests.snapshot import fingerprint


@pytest.fixture
def providers(settings):
    return providers_from_settings(settings)


def run(session_factory, providers, settings):
    return run_due(session_factory, providers=providers, settings=settings)


def balance(uow, line_id: int) -> int:
    with uow() as session:
        line = session.get(Line, line_id)
        return balance_of(session, line.main_account_id)


def spend(uow, line_id: int, amount_minor: int) -> None:
    """The subscriber uses some balance (a call), so it falls below the threshold again."""
    with uow() as session:
        line = session.get(Line, line_id)
        revenue = operator_account(session, kind=AccountKind.REVENUE, currency="GBP", qualifier="usage")
        post_transfer(
            session,
            transfer_id=f"usage-{uuid.uuid4().hex}",
            kind="usage",
            currency="GBP",
            legs=[Leg(line.main_account_id, -amount_minor), Leg(revenue, amount_minor)],
            description="Calls",
        )


def notices(uow, kind_word: str) -> list[Notification]:
    with uow() as session:
        return [
            row
            for row in session.scalars(
                select(Notification).where(Notification.template == "autotopup_notice")
            )
            if kind_word in row.subject
        ]


def test_balance_below_threshold_tops_up_once_through_the_state_machine(
    uow, session_factory, providers, settings
):
    with uow() as session:
        setup = autotopup_helpers.rule_on_line(session, settings, balance_minor=100)
    report = run(session_factory, providers, settings)
    assert (report.charged, report.succeeded, report.errors) == (1, 1, [])
    assert balance(uow, setup.line_id) == 1100
    with uow() as session:
        order = session.scalar(select(TopupOrder).where(TopupOrder.line_id == setup.line_id))
        assert order.channel == Channel.AUTO
        assert order.status == OrderStatus.CREDITED
        assert order.payment_reference.startswith("sbx_")
        assert order.customer_id == setup.customer_id
        attempt = session.scalar(select(AutoTopupAttempt))
        assert attempt.status == AttemptStatus.SUCCEEDED and attempt.order_id == order.id
        assert attempt.occasion == "balance:0"
        assert autotopup_helpers.rule(session, setup.rule_id).balance_round == 1
        assert check_invariants(session) == []
    before = fingerprint(session_factory)
    again = run(session_factory, providers, settings)
    assert again.charged == 0
    assert fingerprint(session_factory) == before


def test_validity_trigger_tops_up_once_per_validity_date(uow, session_factory, providers, settings):
    with uow() as session:
        setup = autotopup_helpers.rule_on_line(
            session, settings, balance_minor=2000, validity_days=5, balance_below="", days_before="7"
        )
    report = run(session_factory, providers, settings)
    assert (report.charged, report.succeeded) == (1, 1)
    with uow() as session:
        line = session.get(Line, setup.line_id)
        assert line.validity_date > today() + timedelta(days=5)
        assert session.scalar(select(AutoTopupAttempt.occasion)).startswith("validity:")
    before = fingerprint(session_factory)
    assert run(session_factory, providers, settings).charged == 0
    assert fingerprint(session_factory) == before


def test_declines_back_off_notify_and_disable_after_three(uow, session_factory, providers, settings):
    with uow() as session:
        setup = autotopup_helpers.rule_on_line(session, settings, card="decline", balance_minor=100)
    report = run(session_factory, providers, settings)
    assert (report.charged, report.declined, report.disabled) == (1, 1, 0)
    assert balance(uow, setup.line_id) == 100
    with uow() as session:
        rule = autotopup_helpers.rule(session, setup.rule_id)
        assert rule.enabled and rule.consecutive_declines == 1
        assert timedelta(hours=23) < rule.next_attempt_at - utcnow() <= timedelta(days=1)
        order = session.scalar(select(TopupOrder))
        assert (order.status, order.failure_code) == (OrderStatus.FAILED, "payment_declined")
    assert {row.channel for row in notices(uow, "declined")} == {"email", "sms"}

    # Backing off: a re-run the same day moves nothing and sends nothing.
    before = fingerprint(session_factory)
    assert run(session_factory, providers, settings).charged == 0
    assert fingerprint(session_factory) == before

    with time_machine.travel(utcnow() + timedelta(days=1, minutes=1), tick=False):
        report = run(session_factory, providers, settings)
        assert (report.charged, report.declined) == (1, 1)
        with uow() as session:
            rule = autotopup_helpers.rule(session, setup.rule_id)
            assert rule.consecutive_declines == 2
            assert timedelta(days=2) < rule.next_attempt_at - utcnow() <= timedelta(days=3)
    with time_machine.travel(utcnow() + timedelta(days=4, minutes=2), tick=False):
        report = run(session_factory, providers, settings)
        assert (report.charged, report.declined, report.disabled) == (1, 1, 1)
        with uow() as session:
            rule = autotopup_helpers.rule(session, setup.rule_id)
            assert not rule.enabled and rule.disabled_reason == "declined"
            status = autotopup.rule_status(rule, now=utcnow())
            assert (status.state, status.reason) == ("disabled", "declined")
            keys = list(
                session.scalars(select(AutoTopupAttempt.idempotency_key).order_by(AutoTopupAttempt.id))
            )
            assert len(set(keys)) == 3  # a retry after a decline is a new charge, with a new key
        assert {row.channel for row in notices(uow, "turned off")} == {"email", "sms"}
        before = fingerprint(session_factory)
        assert run(session_factory, providers, settings).charged == 0
        assert fingerprint(session_factory) == before
    assert balance(uow, setup.line_id) == 100


def test_monthly_cap_is_never_exceeded(uow, session_factory, providers, settings):
    with time_machine.travel(utcnow().replace(day=2, hour=12), tick=False):
        with uow() as session:
            setup = autotopup_helpers.rule_on_line(session, settings, balance_minor=100, cap="10.00")
        assert run(session_factory, providers, settings).succeeded == 1
        spend(uow, setup.line_id, 1000)  # back to 1.00, below the 5.00 threshold
        with uow() as session:
            orders_before = session.scalar(select(func.count()).select_from(TopupOrder))
        report = run(session_factory, providers, settings)
        assert (report.charged, report.capped) == (0, 1)
        assert balance(uow, setup.line_id) == 100
        with uow() as session:
            assert session.scalar(select(func.count()).select_from(TopupOrder)) == orders_before
            rule = autotopup_helpers.rule(session, setup.rule_id)
            assert autotopup.rule_status(rule, now=utcnow()).reason == "cap_reached"
        assert len(notices(uow, "monthly limit")) == 2  # one email, one SMS, once
        before = fingerprint(session_factory)
        assert run(session_factory, providers, settings).capped == 1
        assert fingerprint(session_factory) == before
    # A new calendar month: the cap is free again.
    with time_machine.travel(utcnow().replace(day=2, hour=12) + timedelta(days=31), tick=False):
        assert run(session_factory, providers, settings).succeeded == 1
    assert balance(uow, setup.line_id) == 1100


def test_a_top_up_too_small_to_lift_the_balance_does_not_fire_again(
    uow, session_factory, providers, settings
):
    with uow() as session:
        setup = autotopup_helpers.rule_on_line(
            session, settings, balance_minor=100, amount="5.00", balance_below="20.00"
        )
    assert run(session_factory, providers, settings).succeeded == 1
    assert balance(uow, setup.line_id) == 600
    assert run(session_factory, providers, settings).charged == 0


def test_bad_rules_are_refused_and_change_nothing(uow, session_factory, settings):
    with uow() as session:
        setup = autotopup_helpers.rule_on_line(session, settings)
    before = fingerprint(session_factory)
    bad = [
        {"amount_text": "1.00"},  # below the operator's minimum
        {"amount_text": "ten"},
        {"balance_below_text": "", "days_before_text": ""},
        {"days_before_text": "99"},
        {"cap_text": "5.00"},  # less than one top-up
        {"cap_text": "5000.00"},
        {"balance_below_text": "-1"},
    ]
    for change in bad:
        values = {
            "amount_text": "10.00",
            "balance_below_text": "5.00",
            "days_before_text": "",
            "cap_text": "50.00",
        } | change
        with pytest.raises(ValidationFailed), uow() as session:
            autotopup.save_rule(
                session,
                line=session.get(Line, setup.line_id),
                customer_id=setup.customer_id,
                method_id=setup.method_id,
                enabled=True,
                **values,
            )
    assert fingerprint(session_factory) == before


def test_removing_the_method_turns_the_rule_off(uow, session_factory, providers, settings):
    with uow() as session:
        setup = autotopup_helpers.rule_on_line(session, settings, balance_minor=100)
        autotopup.remove_method(session, customer_id=setup.customer_id, method_id=setup.method_id)
    assert run(session_factory, providers, settings).charged == 0
    with uow() as session:
        rule = autotopup_helpers.rule(session, setup.rule_id)
        assert (rule.enabled, rule.disabled_reason) == (False, "method_removed")


def test_notices_go_out_in_the_customers_language(uow, session_factory, providers, settings):
    with uow() as session:
        autotopup_helpers.rule_on_line(
            session, settings, card="decline", balance_minor=100, language="zh_Hans"
        )
    assert run(session_factory, providers, settings).declined == 1
    with uow() as session:
        rows = list(session.scalars(select(Notification).where(Notification.template == "autotopup_notice")))
    assert {row.channel for row in rows} == {"email", "sms"}
    assert all("自动充值" in row.body_text and row.language == "zh_Hans" for row in rows)
