"""Plans as the operator configures them: the validity rule and the lifecycle periods."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from airtime.accounts.models import Plan, ValidityRule
from airtime.clock import utcnow
from airtime.errors import ValidationFailed
from airtime.money import validate_currency

DAYS_MAX = 3650
TIERS_MAX = 20


@dataclass(frozen=True, slots=True)
class PlanSettings:
    """Everything about a plan an operator may set; ``None`` keeps the current value."""

    name: str | None = None
    name_zh: str | None = None
    currency: str | None = None
    validity_rule: str | None = None
    validity_tiers: list[tuple[int, int]] | None = None
    validity_days_max: int | None = None
    activity_days: int | None = None
    grace_days: int | None = None
    suspension_days: int | None = None
    quarantine_days: int | None = None
    reactivation_fee_minor: int | None = None
    forfeit_balance_on_termination: bool | None = None


def parse_tiers(text: str) -> list[tuple[int, int]]:
    """``"500:30,1000:60"`` (amount in minor units : days) into checked tiers."""
    tiers = []
    for part in filter(None, (piece.strip() for piece in text.split(","))):
        amount, separator, days = part.partition(":")
        if not separator or not amount.strip().isdigit() or not days.strip().isdigit():
            raise ValidationFailed(
                "Write tiers as amount:days in minor units, e.g. 500:30,1000:60 (not %(part)s).",
                part=part[:30],
                field="tiers",
            )
        tiers.append((int(amount), int(days)))
    return tiers


def _check_days(name: str, value: int | None, *, minimum: int = 0) -> None:
    if value is not None and not minimum <= value <= DAYS_MAX:
        raise ValidationFailed(
            "%(name)s must be from %(min)s to %(max)s days.", name=name, min=minimum, max=DAYS_MAX, field=name
        )


def _check(settings: PlanSettings) -> None:
    if settings.validity_rule is not None and settings.validity_rule not in ValidityRule.ALL:
        raise ValidationFailed(
            "Unknown validity rule %(rule)s; choose one of: %(rules)s.",
            rule=settings.validity_rule[:30],
            rules=", ".join(ValidityRule.ALL),
            field="rule",
        )
    if settings.validity_tiers is not None:
        tiers = settings.validity_tiers
        if len(tiers) > TIERS_MAX:
            raise ValidationFailed("At most %(count)s tiers.", count=TIERS_MAX, field="tiers")
        amounts = [amount for amount, _ in tiers]
        if amounts != sorted(set(amounts)) or any(amount <= 0 for amount in amounts):
            raise ValidationFailed("Tier amounts must be positive and rising.", field="tiers")
        for _, days in tiers:
            _check_days("tier days", days, minimum=1)
    _check_days("validity_days_max", settings.validity_days_max, minimum=1)
    _check_days("activity_days", settings.activity_days, minimum=1)
    _check_days("grace_days", settings.grace_days)
    _check_days("suspension_days", settings.suspension_days)
    _check_days("quarantine_days", settings.quarantine_days)
    if settings.reactivation_fee_minor is not None and settings.reactivation_fee_minor < 0:
        raise ValidationFailed("The reactivation fee cannot be negative.", field="reactivation_fee")
    for name in ("name", "name_zh"):
        value = getattr(settings, name)
        if value is not None and len(value) > 100:
            raise ValidationFailed("%(name)s has at most 100 characters.", name=name, field=name)


def save_plan(session: Session, *, code: str, settings: PlanSettings) -> tuple[Plan, bool]:
    """Create the plan ``code`` or change the given settings of it; returns (plan, created).

    A plan's currency is fixed once lines use it (their balances are in it)."""
    code = code.strip().upper()
    if not code or len(code) > 40:
        raise ValidationFailed("A plan code has 1 to 40 characters.", field="code")
    _check(settings)
    currency = validate_currency(settings.currency) if settings.currency is not None else None
    plan = session.scalar(
        select(Plan).where(Plan.code == code).with_for_update().execution_options(populate_existing=True)
    )
    created = plan is None
    if plan is None:
        if currency is None or not settings.name:
            raise ValidationFailed("A new plan needs a name and a currency.", field="currency")
        plan = Plan(code=code, name=settings.name, currency=currency, created_at=utcnow())
        session.add(plan)
    elif currency is not None and currency != plan.currency:
        raise ValidationFailed(
            "Plan %(code)s is in %(currency)s; its currency cannot change.", code=code, currency=plan.currency
        )
    for name in (
        "name",
        "name_zh",
        "validity_rule",
        "validity_days_max",
        "activity_days",
        "grace_days",
        "suspension_days",
        "quarantine_days",
        "reactivation_fee_minor",
        "forfeit_balance_on_termination",
    ):
        value = getattr(settings, name)
        if value is not None:
            setattr(plan, name, value)
    if settings.validity_tiers is not None:
        plan.validity_tiers = [list(tier) for tier in settings.validity_tiers]
    session.flush()
    return plan, created


def list_plans(session: Session) -> list[Plan]:
    return list(session.scalars(select(Plan).order_by(Plan.code)))
