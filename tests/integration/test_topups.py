"""The top-up state machine on both databases: every transition, exactly-once crediting."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import func, select

from airtime.accounts.models import Line, LineState, Plan, ValidityRule
from airtime.clock import today, utcnow
from airtime.errors import IdempotencyConflict, InsufficientFunds, ValidationFailed
from airtime.ledger.service import balance_of, check_invariants
from airtime.notifications.models import Notification
from airtime.payments.base import ProviderEvent
from airtime.payments.sandbox import SandboxProvider
from airtime.payments.webhooks import process_event
from airtime.topups import service as topups
from airtime.topups.models import LineAllowance, OrderStatus, TopupOrder
from airtime.topups.tasks import reconcile
from tests import factories, topup_helpers
from tests.snapshot import fingerprint


@pytest.fixture
def sandbox(settings):
    return SandboxProvider(base_url=settings.base_url)


@pytest.fixture
def line_id(uow, settings):
    with uow() as session:
        return topup_helpers.line_with_catalogue(
            session, settings, validity_date=today() + timedelta(days=10)
        ).id


def decide(session_factory, uow, sandbox, settings, order, decision):
    with uow() as session:
        event = sandbox.decide(session, order.payment_reference, decision)
    if event is None:
        return None
    return process_event(session_factory, provider_name="sandbox", event=event, settings=settings)


def state(uow, order_id):
    with uow() as session:
        order = session.get(TopupOrder, order_id)
        line = session.get(Line, order.line_id)
        return (
            order,
            line,
            balance_of(session, line.main_account_id),
            balance_of(session, line.bonus_account_id),
        )


def test_approved_payment_is_credited_with_receipt_and_validity(
    uow, session_factory, settings, sandbox, line_id
):
    with uow() as session:
        order = topup_helpers.order(session, settings, line_id=line_id, amount_minor=1000)
    assert order.status == OrderStatus.AWAITING_PAYMENT and order.awaiting_payment_at
    assert order.payment_redirect_url.endswith(f"/sandbox/pay/{order.payment_reference}")
    result = decide(session_factory, uow, sandbox, settings, order, "approve")
    assert result.change == "paid" and result.credited
    order, line, main, bonus = state(uow, order.id)
    assert order.status == OrderStatus.CREDITED
    assert order.paid_at and order.credited_at and order.receipt_number.startswith("R")
    assert (main, bonus) == (1000, 0)
    # 1000 minor reaches the 60-day tier: from the current validity date (10 days ahead).
    assert line.validity_date == today() + timedelta(days=70)
    assert order.balance_after_minor == 1000 and order.validity_after == line.validity_date.isoformat()
    with uow() as session:
        messages = session.scalars(select(Notification).order_by(Notification.id)).all()
        assert [(m.channel, m.template) for m in messages] == [("email", "receipt"), ("sms", "topup_sms")]
        assert order.receipt_number in messages[0].body_text and "£10.00" in messages[0].body_text
        assert check_invariants(session) == []


def test_a_duplicate_event_ten_times_credits_once(uow, session_factory, settings, sandbox, line_id):
    with uow() as session:
        order = topup_helpers.order(session, settings, line_id=line_id)
        event = sandbox.decide(session, order.payment_reference, "approve")
    results = [
        process_event(session_factory, provider_name="sandbox", event=event, settings=settings)
        for _ in range(10)
    ]
    assert [result.duplicate for result in results] == [False] + [True] * 9
    assert sum(result.credited for result in results) == 1
    _, _, main, _ = state(uow, order.id)
    assert main == 1000


def test_returning_from_the_provider_after_the_webhook_changes_nothing(
    uow, session_factory, settings, sandbox, line_id
):
    with uow() as session:
        order = topup_helpers.order(session, settings, line_id=line_id)
    decide(session_factory, uow, sandbox, settings, order, "approve")
    before = fingerprint(session_factory)
    refreshed = topups_refresh(session_factory, settings, sandbox, order)
    assert refreshed.status == OrderStatus.CREDITED
    assert fingerprint(session_factory) == before


def topups_refresh(session_factory, settings, sandbox, order):
    from airtime.topups.checkout import refresh_from_provider

    return refresh_from_provider(
        session_factory, public_id=order.public_id, providers={"sandbox": sandbox}, settings=settings
    )


def test_returning_before_the_webhook_credits_from_the_provider_state(
    uow, session_factory, settings, sandbox, line_id
):
    with uow() as session:
        order = topup_helpers.order(session, settings, line_id=line_id)
        # The customer approved, but the event has not been delivered yet.
        assert sandbox.decide(session, order.payment_reference, "approve") is not None
    refreshed = topups_refresh(session_factory, settings, sandbox, order)
    assert refreshed.status == OrderStatus.CREDITED
    _, _, main, _ = state(uow, order.id)
    assert main == 1000


def test_declined_payment_fails_with_a_reason_and_moves_nothing(
    uow, session_factory, settings, sandbox, line_id
):
    with uow() as session:
        order = topup_helpers.order(session, settings, line_id=line_id)
    decide(session_factory, uow, sandbox, settings, order, "decline")
    order, _, main, bonus = state(uow, order.id)
    assert order.status == OrderStatus.FAILED and order.failure_code == "payment_declined" and order.failed_at
    assert "declined" in topups.FAILURE_MESSAGES[order.failure_code]
    assert (main, bonus, order.receipt_number) == (0, 0, None)
    with uow() as session:
        assert check_invariants(session) == []


def test_pending_payment_that_succeeds_an_hour_later(uow, session_factory, settings, sandbox, line_id):
    with uow() as session:
        order = topup_helpers.order(session, settings, line_id=line_id)
    assert decide(session_factory, uow, sandbox, settings, order, "pending") is None
    with time_machine.travel(utcnow() + timedelta(minutes=5), tick=False):
        report = reconcile(session_factory, providers={"sandbox": sandbox}, settings=settings)
        assert report.still_pending == 1 and report.credited == 0
    with time_machine.travel(utcnow() + timedelta(hours=1), tick=False):
        decide(session_factory, uow, sandbox, settings, order, "approve")
        order, _, main, _ = state(uow, order.id)
    assert order.status == OrderStatus.CREDITED and main == 1000


def test_crash_after_payment_before_credit_is_repaired_by_reconciliation(
    uow, session_factory, settings, sandbox, line_id, monkeypatch
):
    with uow() as session:
        order = topup_helpers.order(session, settings, line_id=line_id)
    original_credit = topups.credit

    def crash(*args, **kwargs):
        raise RuntimeError("process killed between payment and credit")

    monkeypatch.setattr(topups, "credit", crash)
    with pytest.raises(RuntimeError):
        decide(session_factory, uow, sandbox, settings, order, "approve")
    order_after_crash, _, main, _ = state(uow, order.id)
    assert order_after_crash.status == OrderStatus.PAID and main == 0
    monkeypatch.setattr(topups, "credit", original_credit)
    report = reconcile(session_factory, providers={"sandbox": sandbox}, settings=settings)
    assert report.credited == 1
    assert reconcile(session_factory, providers={"sandbox": sandbox}, settings=settings).credited == 0
    order, _, main, _ = state(uow, order.id)
    assert order.status == OrderStatus.CREDITED and main == 1000


def test_stuck_payment_is_expired_and_a_late_success_still_credits(
    uow, session_factory, settings, sandbox, line_id
):
    with uow() as session:
        order = topup_helpers.order(session, settings, line_id=line_id)
    with time_machine.travel(
        utcnow() + timedelta(minutes=settings.topup_payment_expiry_minutes + 5), tick=False
    ):
        report = reconcile(session_factory, providers={"sandbox": sandbox}, settings=settings)
        assert report.expired == 1
        expired, _, main, _ = state(uow, order.id)
        assert (
            expired.status == OrderStatus.FAILED and expired.failure_code == "payment_expired" and main == 0
        )
        decide(session_factory, uow, sandbox, settings, order, "approve")
    order, _, main, _ = state(uow, order.id)
    assert order.status == OrderStatus.CREDITED and main == 1000


def test_same_idempotency_key_returns_the_first_order_and_a_different_body_is_refused(
    uow, session_factory, settings, line_id
):
    with uow() as session:
        first = topup_helpers.order(session, settings, line_id=line_id, key="key-1")
    with uow() as session:
        again = topup_helpers.order(session, settings, line_id=line_id, key="key-1")
    assert again.id == first.id
    before = fingerprint(session_factory)
    with pytest.raises(IdempotencyConflict), uow() as session:
        topup_helpers.order(session, settings, line_id=line_id, key="key-1", amount_minor=2000)
    assert fingerprint(session_factory) == before


@pytest.mark.parametrize(("amount_minor", "message"), [(100, "between"), (50000, "between"), (0, "between")])
def test_amounts_outside_the_rules_are_refused_and_nothing_changes(
    uow, session_factory, settings, line_id, amount_minor, message
):
    before = fingerprint(session_factory)
    with pytest.raises(ValidationFailed, match=message), uow() as session:
        topup_helpers.order(session, settings, line_id=line_id, amount_minor=amount_minor)
    assert fingerprint(session_factory) == before


def test_unknown_and_terminated_numbers_are_refused(uow, session_factory, settings, line_id):
    with uow() as session:
        with pytest.raises(Exception, match="is not a"):
            topups.find_topupable_line(session, msisdn="+447911999999", settings=settings)
        with pytest.raises(
            topups.LineNotTopupable, match=r"\+447911123457 is not on the Airtime Mobile network"
        ):
            topups.find_topupable_line(session, msisdn="+447911123457", settings=settings)
        session.get(Line, line_id).state = LineState.TERMINATED
    with uow() as session, pytest.raises(Exception, match="no longer in service"):
        topups.find_topupable_line(session, msisdn="+447911123456", settings=settings)


def test_promotion_bonus_goes_to_the_bonus_balance_in_the_same_transfer(
    uow, session_factory, settings, sandbox, line_id
):
    with uow() as session:
        topup_helpers.promotion(session, value=1000, first_topup_only=True, amount_min_minor=1000)
        topup_helpers.promotion(session, kind="fixed", value=50, channels=["api"])  # other channel: ignored
        order = topup_helpers.order(session, settings, line_id=line_id, amount_minor=2000)
    assert order.bonus_minor == 200
    decide(session_factory, uow, sandbox, settings, order, "approve")
    _, _, main, bonus = state(uow, order.id)
    assert (main, bonus) == (2000, 200)
    with uow() as session:
        second = topup_helpers.order(session, settings, line_id=line_id, amount_minor=2000)
        small = topup_helpers.order(session, settings, line_id=line_id, amount_minor=500)
    assert second.bonus_minor == 0 and small.bonus_minor == 0  # first top-up only; minimum amount


def test_promotions_outside_their_window_give_nothing(uow, settings, line_id):
    with uow() as session:
        topup_helpers.promotion(
            session, starts_at=utcnow() + timedelta(days=1), ends_at=utcnow() + timedelta(days=2)
        )
        topup_helpers.promotion(
            session, starts_at=utcnow() - timedelta(days=3), ends_at=utcnow() - timedelta(days=2)
        )
        assert topup_helpers.order(session, settings, line_id=line_id).bonus_minor == 0


def test_validity_is_capped_and_a_line_in_grace_is_restored(uow, session_factory, settings, sandbox):
    with uow() as session:
        line = topup_helpers.line_with_catalogue(session, settings, validity_date=today() - timedelta(days=3))
        line.state = LineState.GRACE
    for _ in range(3):
        with uow() as session:
            order = topup_helpers.order(session, settings, line_id=line.id, amount_minor=5000)
        decide(session_factory, uow, sandbox, settings, order, "approve")
    _, line, main, _ = state(uow, order.id)
    assert line.state == LineState.ACTIVE
    assert line.validity_date == today() + timedelta(days=180)  # 3 × 120 days, capped at 180
    assert main == 15000


def test_bundle_bought_directly_grants_allowances_and_sells_revenue(
    uow, session_factory, settings, sandbox, line_id
):
    with uow() as session:
        topup_helpers.promotion(session, value=1000)  # promotions reward credit, not bundles
        order = topup_helpers.order(session, settings, line_id=line_id, bundle_code="DATA-5GB")
    assert order.amount_minor == 1000 and order.bonus_minor == 0
    decide(session_factory, uow, sandbox, settings, order, "approve")
    _, _, main, _ = state(uow, order.id)
    assert main == 0
    with uow() as session:
        [(allowance, bundle)] = topups.line_allowances(session, line_id=line_id)
        assert (allowance.data_mb_remaining, bundle.code) == (5120, "DATA-5GB")
        assert check_invariants(session) == []


def test_bundle_from_balance_is_refused_when_short_and_moves_nothing(uow, session_factory, settings, line_id):
    before = fingerprint(session_factory)
    with pytest.raises(InsufficientFunds), uow() as session:
        topups.buy_bundle_from_balance(
            session, line=session.get(Line, line_id), bundle_code="DATA-5GB", idempotency_key="b1"
        )
    assert fingerprint(session_factory) == before


def test_bundle_from_balance_once_per_key(uow, session_factory, settings):
    with uow() as session:
        line = topup_helpers.line_with_catalogue(session, settings, balance_minor=2500)
    for _ in range(2):
        with uow() as session:
            topups.buy_bundle_from_balance(
                session, line=session.get(Line, line.id), bundle_code="DATA-5GB", idempotency_key="b1"
            )
    with uow() as session:
        assert balance_of(session, line.main_account_id) == 1500
        assert session.scalar(select(func.count()).select_from(LineAllowance)) == 1


def test_refund_claws_back_never_below_zero_and_records_the_shortfall(
    uow, session_factory, settings, sandbox, line_id
):
    with uow() as session:
        topup_helpers.promotion(session, value=1000)
        order = topup_helpers.order(session, settings, line_id=line_id, amount_minor=2000)
    decide(session_factory, uow, sandbox, settings, order, "approve")
    with uow() as session:  # the subscriber spends £10 of the £20 on a bundle
        topups.buy_bundle_from_balance(
            session, line=session.get(Line, line_id), bundle_code="DATA-5GB", idempotency_key="spend"
        )
        sandbox.refund(session, order.payment_reference, 2000, "refund-1")
        event = sandbox.refund_event(session, order.payment_reference)
    for _ in range(3):  # replays move nothing
        process_event(session_factory, provider_name="sandbox", event=event, settings=settings)
    refunded, _, main, bonus = state(uow, order.id)
    assert refunded.status == OrderStatus.REFUNDED and refunded.refunded_minor == 2000
    assert (main, bonus) == (0, 0)
    assert refunded.refund_shortfall_minor == 1000
    with uow() as session:
        assert check_invariants(session) == []


def test_cancelled_payment(uow, settings, line_id):
    with uow() as session:
        order = topup_helpers.order(session, settings, line_id=line_id)
        assert topups.cancel(session, order)
        assert not topups.cancel(session, order)
    with uow() as session:
        cancelled = session.get(TopupOrder, order.id)
        assert cancelled.status == OrderStatus.CANCELLED and cancelled.failure_code == "payment_cancelled"


def test_an_old_event_is_refused(uow, session_factory, settings, line_id):
    with uow() as session:
        order = topup_helpers.order(session, settings, line_id=line_id)
    stale = ProviderEvent(
        event_id="old-1",
        event_type="payment.succeeded",
        reference=order.payment_reference,
        outcome="succeeded",
        occurred_at=utcnow() - timedelta(seconds=settings.webhook_tolerance_seconds + 60),
        amount_minor=1000,
        currency="GBP",
    )
    before = fingerprint(session_factory)
    with pytest.raises(Exception, match="older than"):
        process_event(session_factory, provider_name="sandbox", event=stale, settings=settings)
    assert fingerprint(session_factory) == before


def test_amount_mismatch_fails_the_order(uow, session_factory, settings, line_id):
    with uow() as session:
        order = topup_helpers.order(session, settings, line_id=line_id)
    wrong = ProviderEvent(
        event_id="mismatch-1",
        event_type="payment.succeeded",
        reference=order.payment_reference,
        outcome="succeeded",
        occurred_at=utcnow(),
        amount_minor=999,
        currency="GBP",
    )
    process_event(session_factory, provider_name="sandbox", event=wrong, settings=settings)
    order, _, main, _ = state(uow, order.id)
    assert order.status == OrderStatus.FAILED and order.failure_code == "amount_mismatch" and main == 0


def test_factories_plan_has_tiers(uow):
    with uow() as session:
        assert factories.plan(session).validity_tiers


def test_a_bundle_bought_from_balance_keeps_a_validity_extended_meanwhile(uow, settings):
    """Another top-up extended the line after this session read it: buying a bundle must
    not write the old validity back."""
    from sqlalchemy import text

    with uow() as session:
        line = topup_helpers.line_with_catalogue(
            session, settings, balance_minor=2000, validity_date=today() + timedelta(days=5)
        )
        line_id = line.id
        plan = session.get(Plan, line.plan_id)  # a bundle is activity: it resets validity to 30 days
        plan.validity_rule, plan.activity_days = ValidityRule.ACTIVITY_RESETS, 30
    extended = today() + timedelta(days=90)
    with uow() as session:
        line = session.get(Line, line_id)
        session.execute(
            text("UPDATE lines SET validity_date = :day WHERE id = :id"), {"day": extended, "id": line_id}
        )
        topups.buy_bundle_from_balance(session, line=line, bundle_code="DATA-5GB", idempotency_key="b1")
    with uow() as session:
        assert session.get(Line, line_id).validity_date == extended
