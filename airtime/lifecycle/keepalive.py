"""What keeps a number alive: the cheapest action that counts under its plan's rule."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from airtime.accounts.models import Plan, ValidityRule
from airtime.topups.models import AmountRule, Bundle
from airtime.topups.validity import topup_days


@dataclass(frozen=True, slots=True)
class KeepAlive:
    amount_minor: int
    currency: str
    days: int  # days of validity the action gives (under activity_resets: from that day)
    bundle_code: str = ""  # set when the cheapest action is a bundle


def _allowed_amounts(rule: AmountRule | None) -> list[int]:
    if rule is None:
        return []
    amounts = set(rule.denominations)
    if rule.custom_allowed:
        amounts.add(rule.amount_min_minor)
    return sorted(amounts)


def cheapest_keep_alive(session: Session, plan: Plan) -> KeepAlive | None:
    """The smallest payment that extends the line's validity, or None if nothing can."""
    rule = session.get(AmountRule, plan.currency)
    amounts = _allowed_amounts(rule)
    if plan.validity_rule == ValidityRule.ACTIVITY_RESETS:
        options = [KeepAlive(amount, plan.currency, plan.activity_days) for amount in amounts[:1]]
        bundle = session.scalar(
            select(Bundle)
            .where(Bundle.active.is_(True), Bundle.currency == plan.currency)
            .order_by(Bundle.price_minor, Bundle.id)
            .limit(1)
        )
        if bundle is not None:
            options.append(KeepAlive(bundle.price_minor, plan.currency, plan.activity_days, bundle.code))
        return min(options, key=lambda option: option.amount_minor, default=None)
    # topup_extends: the least amount reaching the first tier that adds days. With custom
    # amounts that is the tier's threshold itself (within the allowed range), else the
    # smallest denomination at or above it.
    for tier_from_minor, days in sorted(plan.validity_tiers or []):
        if int(days) <= 0:
            continue
        candidates = [amount for amount in amounts if amount >= tier_from_minor]
        if (
            rule is not None
            and rule.custom_allowed
            and rule.amount_min_minor <= tier_from_minor <= rule.amount_max_minor
        ):
            candidates.append(int(tier_from_minor))
        if candidates:
            amount = min(candidates)
            return KeepAlive(amount, plan.currency, topup_days(plan, amount))
    return None
