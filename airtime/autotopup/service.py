"""Auto top-up rules and saved payment methods: what a customer sets, and when a rule is due.

A rule says: when the balance falls below X, and/or N days before the validity date, top up
Y, with at most a monthly cap of successful auto top-ups. The job (tasks.py) charges the
saved method through the one top-up state machine; this module holds the rules themselves.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.orm import Session

from airtime.accounts.models import Customer, Line, LineState
from airtime.autotopup.models import (
    AttemptStatus,
    AutoTopupAttempt,
    AutoTopupRule,
    MethodStatus,
    RuleState,
    SavedPaymentMethod,
)
from airtime.clock import utcnow
from airtime.config import Settings
from airtime.db.dialect import insert_ignoring_conflicts
from airtime.errors import AppError, NotFound, ValidationFailed
from airtime.money import format_money, parse_money
from airtime.payments.base import PaymentProvider, SaveMethodRequest, SavingNotOffered, SetupStatus
from airtime.topups import service as topups
from airtime.topups.models import Channel, TopupOrder

_rules = cast(Table, AutoTopupRule.__table__)

# Bounds a person can set; wider values are refused with a message.
DAYS_BEFORE_VALIDITY_MAX = 60
# The monthly cap may hold at most this many top-ups of the rule's amount.
CAP_TOPUPS_MAX = 20
METHODS_PER_CUSTOMER_MAX = 10
# After the 1st and 2nd decline in a row: wait this long; the 3rd turns the rule off.
DECLINE_BACKOFF = (timedelta(days=1), timedelta(days=3))
DECLINES_MAX = 3


class DisabledReason:
    DECLINED = "declined"
    METHOD_REMOVED = "method_removed"
    LINE_UNAVAILABLE = "line_unavailable"


# --- when is a rule due (pure: unit-tested without a database) ----------------------------


def due_occasions(
    rule: AutoTopupRule, *, balance_minor: int, validity_date: date | None, today: date, now: datetime
) -> list[str]:
    """The occasions a rule is due for now, validity first. An occasion names what the top-up
    is for ("validity:2026-12-01", "balance:3"), so one occasion is charged at most once."""
    if not rule.enabled or (rule.next_attempt_at is not None and rule.next_attempt_at > now):
        return []
    occasions = []
    if (
        rule.days_before_validity is not None
        and validity_date is not None
        and today >= validity_date - timedelta(days=rule.days_before_validity)
    ):
        occasions.append(f"validity:{validity_date.isoformat()}")
    if (
        rule.balance_below_minor is not None
        and rule.balance_armed
        and balance_minor < rule.balance_below_minor
    ):
        occasions.append(f"balance:{rule.balance_round}")
    return occasions


def cap_allows(*, held_minor: int, amount_minor: int, cap_minor: int) -> bool:
    """True if one more top-up keeps the month's auto top-ups (taken or being taken) within the cap."""
    return held_minor + amount_minor <= cap_minor


def cap_month(moment: datetime) -> str:
    """The calendar month a charge counts against (UTC, like validity dates)."""
    return moment.strftime("%Y-%m")


def backoff_after(declines: int) -> timedelta | None:
    """How long to wait after ``declines`` declines in a row; None: turn the rule off."""
    if declines >= DECLINES_MAX:
        return None
    return DECLINE_BACKOFF[min(declines, len(DECLINE_BACKOFF)) - 1]


@dataclass(frozen=True, slots=True)
class RuleStatus:
    """What the customer's page says about a rule."""

    state: str  # RuleState
    reason: str = ""  # DisabledReason, or "backoff" / "cap_reached" while active
    until: datetime | None = None


def rule_status(rule: AutoTopupRule, *, now: datetime) -> RuleStatus:
    if not rule.enabled:
        return RuleStatus(RuleState.DISABLED if rule.disabled_reason else RuleState.OFF, rule.disabled_reason)
    if rule.next_attempt_at is not None and rule.next_attempt_at > now:
        return RuleStatus(RuleState.ACTIVE, "backoff", rule.next_attempt_at)
    if rule.cap_reached_month == cap_month(now):
        return RuleStatus(RuleState.ACTIVE, "cap_reached")
    return RuleStatus(RuleState.ACTIVE)


# --- saved payment methods ---------------------------------------------------------------


def customer_methods(session: Session, *, customer_id: int) -> list[SavedPaymentMethod]:
    """The customer's usable saved methods, newest first."""
    return list(
        session.scalars(
            select(SavedPaymentMethod)
            .where(
                SavedPaymentMethod.customer_id == customer_id,
                SavedPaymentMethod.status == MethodStatus.ACTIVE,
            )
            .order_by(SavedPaymentMethod.id.desc())
            .limit(METHODS_PER_CUSTOMER_MAX)
        )
    )


def start_saving_method(
    session: Session,
    *,
    customer: Customer,
    provider: PaymentProvider,
    line_id: int,
    settings: Settings,
) -> tuple[SavedPaymentMethod, str]:
    """Send the customer to the provider to save a method; returns the row and where to go."""
    if not provider.saves_methods:
        raise SavingNotOffered(
            "Saving a payment method is not offered with %(provider)s; choose another method.",
            provider=provider.name,
            field="provider",
        )
    if len(customer_methods(session, customer_id=customer.id)) >= METHODS_PER_CUSTOMER_MAX:
        raise ValidationFailed(
            "You can keep up to %(count)s payment methods; remove one first.", count=METHODS_PER_CUSTOMER_MAX
        )
    earlier = session.scalar(
        select(SavedPaymentMethod.provider_customer)
        .where(
            SavedPaymentMethod.customer_id == customer.id,
            SavedPaymentMethod.provider == provider.name,
            SavedPaymentMethod.provider_customer != "",
        )
        .order_by(SavedPaymentMethod.id.desc())
        .limit(1)
    )
    method = SavedPaymentMethod(
        public_id=secrets.token_urlsafe(16),
        customer_id=customer.id,
        provider=provider.name,
        status=MethodStatus.PENDING,
        token="",
        provider_customer=earlier or "",
        label="",
        created_at=utcnow(),
    )
    session.add(method)
    session.flush()
    back = f"{settings.base_url}/autotopup/methods/{method.public_id}/return?line={line_id}"
    start = provider.start_saving_method(
        session,
        SaveMethodRequest(
            customer_email=customer.email,
            provider_customer=method.provider_customer,
            return_url=back,
            cancel_url=f"{back}&cancelled=1",
            idempotency_key=f"save-{method.public_id}",
        ),
    )
    method.setup_reference = start.reference
    session.flush()
    return method, start.redirect_url


def finish_saving_method(
    session: Session, *, customer_id: int, public_id: str, providers: dict[str, PaymentProvider]
) -> SavedPaymentMethod:
    """The customer is back from the provider: keep the token if the method was saved."""
    method = session.scalar(
        select(SavedPaymentMethod).where(
            SavedPaymentMethod.public_id == public_id, SavedPaymentMethod.customer_id == customer_id
        )
    )
    if method is None:
        raise NotFound("No such payment method.")
    provider = providers.get(method.provider)
    if method.status != MethodStatus.PENDING or provider is None or not method.setup_reference:
        return method
    state = provider.fetch_saved_method(session, method.setup_reference)
    if state.status == SetupStatus.PENDING:
        return method
    saved = state.status == SetupStatus.SAVED and bool(state.token)
    session.execute(
        update(SavedPaymentMethod)
        .where(SavedPaymentMethod.id == method.id, SavedPaymentMethod.status == MethodStatus.PENDING)
        .values(
            status=MethodStatus.ACTIVE if saved else MethodStatus.FAILED,
            token=state.token[:120],
            provider_customer=(state.provider_customer or method.provider_customer)[:120],
            label=state.label[:60],
            activated_at=utcnow() if saved else None,
        )
        .execution_options(synchronize_session="fetch")
    )
    return method


def remove_method(session: Session, *, customer_id: int, method_id: int) -> None:
    """Forget a saved method; rules that used it stop, and say why."""
    now = utcnow()
    removed = session.execute(
        update(SavedPaymentMethod)
        .where(
            SavedPaymentMethod.id == method_id,
            SavedPaymentMethod.customer_id == customer_id,
            SavedPaymentMethod.status == MethodStatus.ACTIVE,
        )
        .values(status=MethodStatus.REMOVED, removed_at=now)
    )
    if removed.rowcount != 1:  # type: ignore[attr-defined]
        raise NotFound("No such payment method.")
    session.execute(
        update(AutoTopupRule)
        .where(AutoTopupRule.payment_method_id == method_id, AutoTopupRule.enabled.is_(True))
        .values(enabled=False, disabled_reason=DisabledReason.METHOD_REMOVED, updated_at=now)
    )


# --- rules -------------------------------------------------------------------------------


def rule_for_line(session: Session, *, line_id: int) -> AutoTopupRule | None:
    return session.scalar(select(AutoTopupRule).where(AutoTopupRule.line_id == line_id))


def recent_attempts(
    session: Session, *, rule_id: int, limit: int = 10
) -> list[tuple[AutoTopupAttempt, TopupOrder | None]]:
    """The rule's latest attempts with their orders, newest first."""
    rows = session.execute(
        select(AutoTopupAttempt, TopupOrder)
        .outerjoin(TopupOrder, TopupOrder.id == AutoTopupAttempt.order_id)
        .where(AutoTopupAttempt.rule_id == rule_id)
        .order_by(AutoTopupAttempt.id.desc())
        .limit(max(1, min(limit, 50)))
    ).all()
    return [(attempt, order) for attempt, order in rows]


def held_this_month(session: Session, *, rule_id: int, month: str) -> int:
    """Minor units of this month's auto top-ups taken or being taken (what counts against the cap)."""
    return int(
        session.scalar(
            select(func.coalesce(func.sum(AutoTopupAttempt.amount_minor), 0)).where(
                AutoTopupAttempt.rule_id == rule_id,
                AutoTopupAttempt.cap_month == month,
                AutoTopupAttempt.status.in_(AttemptStatus.HOLDING_CAP),
            )
        )
        or 0
    )


def _optional_money(text: str, currency: str, *, field: str) -> int | None:
    text = text.strip()
    if not text:
        return None
    try:
        amount = parse_money(text, currency).amount_minor
    except AppError as error:
        raise ValidationFailed(error.message, **{**error.params, "field": field}) from error
    if amount <= 0:
        raise ValidationFailed("Enter an amount above zero.", field=field)
    return amount


def save_rule(
    session: Session,
    *,
    line: Line,
    customer_id: int,
    method_id: int,
    amount_text: str,
    balance_below_text: str,
    days_before_text: str,
    cap_text: str,
    enabled: bool,
) -> AutoTopupRule:
    """Create or change the line's rule; every field is checked before anything is written."""
    if line.customer_id != customer_id:
        raise NotFound("No such line.")
    if line.state == LineState.TERMINATED or line.number_released_at is not None:
        raise ValidationFailed("%(msisdn)s is no longer in service.", msisdn=line.msisdn)
    method = session.get(SavedPaymentMethod, method_id)
    if method is None or method.customer_id != customer_id or method.status != MethodStatus.ACTIVE:
        raise ValidationFailed("Choose one of your saved payment methods.", field="method")
    currency = topups.quote_currency(session, line)
    # The operator's amount rules, exactly as for a top-up made by hand.
    amount_minor = topups.quote(
        session, line=line, channel=Channel.AUTO, amount_text=amount_text.strip() or None
    ).amount_minor
    balance_below_minor = _optional_money(balance_below_text, currency, field="balance_below")
    days_before: int | None = None
    if days_before_text.strip():
        if (
            not days_before_text.strip().isdigit()
            or not 1 <= int(days_before_text) <= DAYS_BEFORE_VALIDITY_MAX
        ):
            raise ValidationFailed(
                "Days before the validity date: a whole number from 1 to %(days)s.",
                days=DAYS_BEFORE_VALIDITY_MAX,
                field="days_before",
            )
        days_before = int(days_before_text)
    if balance_below_minor is None and days_before is None:
        raise ValidationFailed(
            "Choose when to top up: a balance below an amount, or days before the validity date, or both.",
            field="balance_below",
        )
    cap_minor = _optional_money(cap_text, currency, field="cap")
    if cap_minor is None or not amount_minor <= cap_minor <= amount_minor * CAP_TOPUPS_MAX:
        raise ValidationFailed(
            "The monthly limit must be between %(min)s and %(max)s.",
            min=format_money(amount_minor, currency),
            max=format_money(amount_minor * CAP_TOPUPS_MAX, currency),
            field="cap",
        )
    now = utcnow()
    session.execute(
        insert_ignoring_conflicts(session, _rules).values(
            line_id=line.id,
            customer_id=customer_id,
            payment_method_id=method.id,
            currency=currency,
            amount_minor=amount_minor,
            balance_below_minor=balance_below_minor,
            days_before_validity=days_before,
            monthly_cap_minor=cap_minor,
            enabled=enabled,
            disabled_reason="",
            consecutive_declines=0,
            next_attempt_at=None,
            balance_round=0,
            balance_armed=True,
            attempts_made=0,
            cap_reached_month="",
            created_at=now,
            updated_at=now,
        )
    )
    rule = session.scalar(
        select(AutoTopupRule)
        .where(AutoTopupRule.line_id == line.id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    assert rule is not None
    if (enabled and not rule.enabled) or rule.payment_method_id != method.id:
        # Turned on again, or given another method: a fresh start after earlier declines.
        rule.consecutive_declines = 0
        rule.next_attempt_at = None
        rule.disabled_reason = ""
    rule.customer_id = customer_id
    rule.payment_method_id = method.id
    rule.currency = currency
    rule.amount_minor = amount_minor
    rule.balance_below_minor = balance_below_minor
    rule.days_before_validity = days_before
    rule.monthly_cap_minor = cap_minor
    rule.enabled = enabled
    if not enabled:
        rule.disabled_reason = ""
    rule.cap_reached_month = ""
    rule.updated_at = now
    session.flush()
    return rule
