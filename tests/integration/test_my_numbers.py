"""'My numbers' on both databases: each line's next deadline, days left, risk, the cheapest
action that keeps it, most urgent first; the calendar feed of deadlines and its secret link."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import icalendar
import pytest

from airtime.accounts.models import Customer, Line, LineState
from airtime.lifecycle.calendar import calendar_token, customer_for_token, feed
from airtime.lifecycle.numbers import DeadlineKind, Risk, customer_numbers, describe
from tests import factories
from tests.number_helpers import DAY, at, three_lines


def numbers_on(uow, customer_id: int, day: date = DAY):
    with uow() as session:
        return customer_numbers(session, customer_id=customer_id, today=day)


def test_three_lines_in_three_states_most_urgent_first(uow, settings):
    with at(DAY):
        lines = three_lines(uow, settings)
        grace, suspended, active = numbers_on(uow, lines.customer_id)

    assert [grace.line_id, suspended.line_id, active.line_id] == [
        lines.grace_id,
        lines.suspended_id,
        lines.active_id,
    ]

    assert grace.state == LineState.GRACE and grace.nickname == "Work"
    assert grace.deadline.kind == DeadlineKind.SUSPENSION and grace.deadline.on == date(2027, 3, 27)
    assert grace.days_left == 26 and grace.risk == Risk.URGENT
    assert [d.kind for d in grace.deadlines] == [DeadlineKind.SUSPENSION, DeadlineKind.TERMINATION]
    assert grace.deadlines[1].on == date(2027, 5, 26)
    # A £5 top-up from grace counts from today.
    assert grace.keep_alive.amount_minor == 500 and grace.keep_alive.valid_until == date(2027, 3, 31)
    assert grace.keep_alive.days_gained == 30 and grace.reactivation_fee_minor == 0

    assert suspended.deadline.kind == DeadlineKind.TERMINATION and suspended.deadline.on == date(2027, 4, 15)
    assert suspended.days_left == 45 and suspended.risk == Risk.URGENT
    assert suspended.reactivation_fee_minor == 200 and suspended.balance_minor == 300

    assert active.deadline.kind == DeadlineKind.VALIDITY_END and active.deadline.on == date(2027, 4, 10)
    assert active.days_left == 40 and active.risk == Risk.OK
    assert [d.on for d in active.deadlines] == [date(2027, 4, 10), date(2027, 5, 11), date(2027, 7, 10)]
    assert active.keep_alive.valid_until == date(2027, 5, 10) and active.keep_alive.days_gained == 30
    assert active.balance_minor == 1250


def test_sentences_in_english_and_chinese(uow, settings):
    with at(DAY):
        lines = three_lines(uow, settings)
        grace, suspended, active = numbers_on(uow, lines.customer_id)

    english = describe(grace, "en")
    assert english.deadline == "Suspended on 27 March 2027 unless you top up"
    assert english.days_left == "26 days left"
    assert english.risk_label == "Urgent"
    assert english.keep_alive == "Top up £5.00 to keep it until 31 March 2027 (30 more days)"
    assert describe(suspended, "en").deadline == "Number lost on 15 April 2027 unless you top up"
    assert describe(suspended, "en").reactivation_fee == (
        "Coming back from suspension costs a fee of £2.00, taken from the balance."
    )
    assert describe(active, "en").deadline == "Valid until 10 April 2027"
    assert describe(active, "en").risk_label == "On track"

    chinese = describe(grace, "zh_Hans")
    assert chinese.deadline == "2027年3月27日 将被停机，除非您充值"
    assert chinese.risk_label == "紧急"
    assert "2027年3月31日" in chinese.keep_alive and "£5.00" in chinese.keep_alive


@pytest.mark.parametrize(
    ("days_ahead", "risk"),
    [(15, Risk.OK), (14, Risk.SOON), (4, Risk.SOON), (3, Risk.URGENT), (0, Risk.URGENT), (-1, Risk.URGENT)],
)
def test_risk_of_an_active_line_by_days_left(uow, settings, days_ahead, risk):
    with at(DAY):
        with uow() as session:
            customer = factories.customer(session, settings)
            factories.line(
                session, settings, customer_id=customer.id, validity_date=DAY + timedelta(days=days_ahead)
            )
            customer_id = customer.id
        [number] = numbers_on(uow, customer_id)
    assert number.risk == risk and number.days_left == days_ahead


def test_a_terminated_line_is_lost_and_listed_last(uow, settings):
    with at(DAY):
        lines = three_lines(uow, settings)
        with uow() as session:
            session.get(Line, lines.grace_id).state = LineState.TERMINATED
        numbers = numbers_on(uow, lines.customer_id)
    lost = numbers[-1]
    assert lost.line_id == lines.grace_id and lost.risk == Risk.LOST
    assert lost.keep_alive is None and lost.deadlines == ()
    assert describe(lost, "en").deadline == "This number has ended and can no longer be topped up."


def parse(body: bytes) -> icalendar.Calendar:
    return icalendar.Calendar.from_ical(body)


def test_feed_has_one_all_day_event_per_deadline_with_an_alarm(uow, settings):
    with at(DAY):
        lines = three_lines(uow, settings)
        with uow() as session:
            customer = session.get(Customer, lines.customer_id)
            body = feed(
                session,
                customer=customer,
                base_url=settings.base_url,
                operator_name="Airtime",
                now=datetime.now(UTC),
            )
    events = {str(event["UID"]): event for event in parse(body).walk("VEVENT")}
    assert (
        len(events) == 2 + 1 + 3
    )  # grace: suspension, termination; suspended: termination; active: all three
    suspension = events[f"line-{lines.grace_id}-suspension@testserver"]
    assert suspension.decoded("DTSTART") == date(2027, 3, 27)
    assert suspension.decoded("DTEND") == date(2027, 3, 28)
    assert str(suspension["SUMMARY"]) == "+44 7911 123457 (Work) is suspended today unless you top up"
    assert f"http://testserver/topup?line={lines.grace_id}" in str(suspension["DESCRIPTION"])
    assert "Top up £5.00 to keep it" in str(suspension["DESCRIPTION"])
    [alarm] = suspension.walk("VALARM")
    assert alarm.decoded("TRIGGER") == timedelta(days=-3)
    assert events[f"line-{lines.suspended_id}-termination@testserver"].decoded("DTSTART") == date(2027, 4, 15)
    assert events[f"line-{lines.active_id}-validity_end@testserver"].decoded("DTSTART") == date(2027, 4, 10)


def test_feed_speaks_the_customers_language(uow, settings):
    with at(DAY):
        lines = three_lines(uow, settings, language="zh_Hans")
        with uow() as session:
            customer = session.get(Customer, lines.customer_id)
            body = feed(
                session,
                customer=customer,
                base_url=settings.base_url,
                operator_name="Airtime",
                now=datetime.now(UTC),
            )
    calendar = parse(body)
    assert str(calendar["X-WR-CALNAME"]).startswith("我的号码")
    summaries = {str(event["SUMMARY"]) for event in calendar.walk("VEVENT")}
    assert "+44 7911 123458：今天起号码将被收回，除非您充值" in summaries


def test_the_token_opens_only_its_customers_feed_and_a_new_password_revokes_it(uow, settings):
    secret = settings.effective_secret_key()
    with uow() as session:
        mine = factories.customer(session, settings)
        other = factories.customer(session, settings)
        token = calendar_token(mine, secret_key=secret)
        assert customer_for_token(session, token=token, secret_key=secret).id == mine.id
        assert customer_for_token(session, token=token, secret_key="another-secret") is None
        forged = f"{other.id}-{token.split('-', 1)[1]}"
        assert customer_for_token(session, token=forged, secret_key=secret) is None
        for bad in ("", "abc", f"{mine.id}-", f"{mine.id}-{'A' * 43}", "99999999-" + "A" * 43):
            assert customer_for_token(session, token=bad, secret_key=secret) is None
        mine.password_changed_at = mine.password_changed_at + timedelta(seconds=1)
        session.flush()
        assert customer_for_token(session, token=token, secret_key=secret) is None
        assert (
            customer_for_token(session, token=calendar_token(mine, secret_key=secret), secret_key=secret)
            == mine
        )
