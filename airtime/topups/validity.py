"""Validity (number keeping): how a credited top-up or a chargeable event moves a line's
validity date, by the plan's rule. Dates are UTC calendar days; a line is valid through
its validity date."""

from __future__ import annotations

from datetime import date, timedelta

from airtime.accounts.models import Plan, ValidityRule


def topup_days(plan: Plan, amount_minor: int) -> int:
    """Days a top-up of this amount adds under ``topup_extends``: the highest tier reached."""
    days = 0
    for tier_from_minor, tier_days in sorted(plan.validity_tiers or []):
        if amount_minor >= tier_from_minor:
            days = int(tier_days)
    return days


def validity_after_topup(plan: Plan, *, current: date | None, today: date, amount_minor: int) -> date | None:
    """The new validity date after a credited top-up (never earlier than the current one)."""
    if plan.validity_rule == ValidityRule.ACTIVITY_RESETS:
        return validity_after_activity(plan, current=current, today=today)
    days = topup_days(plan, amount_minor)
    if days == 0:
        return current
    start = max(current, today) if current else today
    cap = today + timedelta(days=plan.validity_days_max)
    extended = min(start + timedelta(days=days), cap)
    return max(extended, current) if current else extended


def validity_after_activity(plan: Plan, *, current: date | None, today: date) -> date | None:
    """Under ``activity_resets`` any chargeable event keeps the line alive N days from today."""
    if plan.validity_rule != ValidityRule.ACTIVITY_RESETS:
        return current
    reset = today + timedelta(days=plan.activity_days)
    return max(reset, current) if current else reset


def validity_after_days(plan: Plan, *, current: date | None, today: date, days: int) -> date:
    """A fixed number of days on top of the current validity (a voucher batch's own grant),
    within the plan's cap."""
    start = max(current, today) if current else today
    return min(start + timedelta(days=days), today + timedelta(days=plan.validity_days_max))
