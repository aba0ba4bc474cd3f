"""When an auto top-up rule is due, and the monthly cap, without a database."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from airtime.autotopup.models import AutoTopupRule
from airtime.autotopup.service import backoff_after, cap_allows, cap_month, due_occasions, rule_status

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
TODAY = NOW.date()


def rule(**values) -> AutoTopupRule:
    defaults = {
        "enabled": True,
        "next_attempt_at": None,
        "balance_below_minor": 500,
        "days_before_validity": None,
        "balance_armed": True,
        "balance_round": 2,
        "disabled_reason": "",
        "cap_reached_month": "",
    }
    return AutoTopupRule(**(defaults | values))


def due(candidate: AutoTopupRule, *, balance_minor: int = 1000, validity: date | None = None) -> list[str]:
    return due_occasions(candidate, balance_minor=balance_minor, validity_date=validity, today=TODAY, now=NOW)


def test_balance_trigger_fires_below_the_threshold_only():
    assert due(rule(), balance_minor=499) == ["balance:2"]
    assert due(rule(), balance_minor=500) == []
    assert due(rule(balance_armed=False), balance_minor=0) == []


def test_validity_trigger_fires_n_days_before_and_after():
    candidate = rule(balance_below_minor=None, days_before_validity=7)
    assert due(candidate, validity=TODAY + timedelta(days=8)) == []
    assert due(candidate, validity=TODAY + timedelta(days=7)) == [f"validity:{TODAY + timedelta(days=7)}"]
    assert due(candidate, validity=TODAY - timedelta(days=2)) == [f"validity:{TODAY - timedelta(days=2)}"]
    assert due(candidate, validity=None) == []


def test_both_triggers_validity_first():
    candidate = rule(days_before_validity=3)
    validity = TODAY + timedelta(days=1)
    assert due(candidate, balance_minor=0, validity=validity) == [f"validity:{validity}", "balance:2"]


def test_disabled_or_backing_off_is_never_due():
    assert due(rule(enabled=False), balance_minor=0) == []
    assert due(rule(next_attempt_at=NOW + timedelta(seconds=1)), balance_minor=0) == []
    assert due(rule(next_attempt_at=NOW), balance_minor=0) == ["balance:2"]


@pytest.mark.parametrize(
    ("held", "amount", "cap", "allowed"),
    [(0, 1000, 1000, True), (1000, 1000, 2000, True), (1001, 1000, 2000, False), (0, 1001, 1000, False)],
)
def test_cap(held, amount, cap, allowed):
    assert cap_allows(held_minor=held, amount_minor=amount, cap_minor=cap) is allowed


def test_backoff_then_off():
    assert backoff_after(1) == timedelta(days=1)
    assert backoff_after(2) == timedelta(days=3)
    assert backoff_after(3) is None


def test_status_says_why():
    assert rule_status(rule(), now=NOW).state == "active"
    assert rule_status(rule(enabled=False), now=NOW).state == "off"
    assert rule_status(rule(enabled=False, disabled_reason="declined"), now=NOW).reason == "declined"
    backing_off = rule_status(rule(next_attempt_at=NOW + timedelta(days=1)), now=NOW)
    assert (backing_off.reason, backing_off.until) == ("backoff", NOW + timedelta(days=1))
    assert rule_status(rule(cap_reached_month=cap_month(NOW)), now=NOW).reason == "cap_reached"
    assert rule_status(rule(cap_reached_month="2026-10"), now=NOW).reason == ""
