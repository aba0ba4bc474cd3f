""" "My numbers": each of a customer's lines with its next deadline, the risk of losing it,
and the cheapest action that keeps it — for the page and for the calendar feed.

A line's deadlines follow the lifecycle (see ``airtime.lifecycle.service``): an active line
is valid through its validity date, goes to grace the day after, is suspended after the
plan's grace days and terminated after its suspension days. The first deadline still ahead
is the one shown; the calendar carries them all, so a subscriber who ignores the first one
is still warned of the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from babel.dates import format_date
from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from airtime.accounts.models import Line, LineState, Plan
from airtime.i18n import translations
from airtime.ledger.models import LedgerAccount
from airtime.lifecycle.keepalive import KeepAlive, cheapest_keep_alive
from airtime.lifecycle.service import NextStep, next_step
from airtime.money import format_money
from airtime.topups.models import Bundle
from airtime.topups.validity import validity_after_activity, validity_after_topup

# A customer has a handful of lines; the bound keeps one page and one feed small.
NUMBERS_PER_CUSTOMER_MAX = 200
SOON_DAYS = 14  # "soon" at or under this many days before the deadline
URGENT_DAYS = 3  # "urgent" at or under this many, and always in grace or suspension
_DATE_LOCALES = {"en": "en_GB", "zh_Hans": "zh_Hans_CN"}


class Risk:
    """How close a line is to being lost; the page shows a colour and a label for each."""

    OK = "ok"
    SOON = "soon"
    URGENT = "urgent"
    LOST = "lost"
    ORDER = (URGENT, SOON, OK, LOST)  # most urgent first


class DeadlineKind:
    VALIDITY_END = "validity_end"  # the last valid day; grace begins the day after
    SUSPENSION = "suspension"  # barred from this day
    TERMINATION = "termination"  # the number is lost from this day
    ALL = (VALIDITY_END, SUSPENSION, TERMINATION)


@dataclass(frozen=True, slots=True)
class Deadline:
    kind: str
    on: date


@dataclass(frozen=True, slots=True)
class KeepAliveOffer:
    """The cheapest action that counts, and the validity it would give."""

    amount_minor: int
    currency: str
    valid_until: date
    days_gained: int
    bundle_name: str = ""
    bundle_name_zh: str = ""


@dataclass(frozen=True, slots=True)
class NumberView:
    line_id: int
    msisdn: str
    nickname: str
    state: str
    validity_date: date | None
    plan_name: str
    plan_name_zh: str
    currency: str
    balance_minor: int
    bonus_minor: int
    next_step: NextStep | None
    deadline: Deadline | None  # the first deadline still to come (or passed unswept)
    deadlines: tuple[Deadline, ...]  # every deadline from today on if nobody acts
    days_left: int | None  # days from today to ``deadline``
    risk: str
    keep_alive: KeepAliveOffer | None
    reactivation_fee_minor: int  # charged when a suspended line comes back


def _deadlines(
    *, state: str, step: NextStep | None, validity_date: date | None, plan: Plan
) -> list[Deadline]:
    """The chain of deadlines from the line's current state, if nobody acts."""
    if step is None:
        return []
    if state == LineState.ACTIVE and validity_date is not None:
        suspension = validity_date + timedelta(days=1 + plan.grace_days)
        return [
            Deadline(DeadlineKind.VALIDITY_END, validity_date),
            Deadline(DeadlineKind.SUSPENSION, suspension),
            Deadline(DeadlineKind.TERMINATION, suspension + timedelta(days=plan.suspension_days)),
        ]
    if state == LineState.GRACE:
        return [
            Deadline(DeadlineKind.SUSPENSION, step.on),
            Deadline(DeadlineKind.TERMINATION, step.on + timedelta(days=plan.suspension_days)),
        ]
    if state == LineState.SUSPENDED:
        return [Deadline(DeadlineKind.TERMINATION, step.on)]
    return []


def _risk(state: str, days_left: int | None) -> str:
    if state == LineState.TERMINATED:
        return Risk.LOST
    if state in (LineState.GRACE, LineState.SUSPENDED):
        return Risk.URGENT
    if state != LineState.ACTIVE or days_left is None:
        return Risk.OK
    if days_left <= URGENT_DAYS:
        return Risk.URGENT
    if days_left <= SOON_DAYS:
        return Risk.SOON
    return Risk.OK


def _offer(
    keep_alive: KeepAlive | None,
    bundle: Bundle | None,
    *,
    plan: Plan,
    validity_date: date | None,
    today: date,
) -> KeepAliveOffer | None:
    """What the cheapest action would make of the validity date, as the top-up would apply it."""
    if keep_alive is None:
        return None
    if keep_alive.bundle_code:
        until = validity_after_activity(plan, current=validity_date, today=today)
    else:
        until = validity_after_topup(
            plan, current=validity_date, today=today, amount_minor=keep_alive.amount_minor
        )
    if until is None:
        return None
    start = max(validity_date, today) if validity_date else today
    gained = (until - start).days
    if gained <= 0:
        return None
    return KeepAliveOffer(
        amount_minor=keep_alive.amount_minor,
        currency=keep_alive.currency,
        valid_until=until,
        days_gained=gained,
        bundle_name=bundle.name if bundle else "",
        bundle_name_zh=(bundle.name_zh or bundle.name) if bundle else "",
    )


def customer_numbers(session: Session, *, customer_id: int, today: date) -> list[NumberView]:
    """The customer's lines with their deadlines, most urgent first (lost numbers last)."""
    main = aliased(LedgerAccount)
    bonus = aliased(LedgerAccount)
    rows = session.execute(
        select(Line, Plan, main.balance_minor, bonus.balance_minor)
        .join(Plan, Plan.id == Line.plan_id)
        .join(main, main.id == Line.main_account_id)
        .join(bonus, bonus.id == Line.bonus_account_id)
        .where(Line.customer_id == customer_id)
        .order_by(Line.id)
        .limit(NUMBERS_PER_CUSTOMER_MAX)
    ).all()
    keep_alive_by_plan: dict[int, tuple[KeepAlive | None, Bundle | None]] = {}
    numbers: list[NumberView] = []
    for line, plan, main_balance, bonus_balance in rows:
        if plan.id not in keep_alive_by_plan:
            keep_alive = cheapest_keep_alive(session, plan)
            bundle = (
                session.scalar(select(Bundle).where(Bundle.code == keep_alive.bundle_code))
                if keep_alive and keep_alive.bundle_code
                else None
            )
            keep_alive_by_plan[plan.id] = (keep_alive, bundle)
        step = next_step(
            state=line.state,
            validity_date=line.validity_date,
            state_changed_at=line.state_changed_at,
            plan=plan,
        )
        chain = _deadlines(state=line.state, step=step, validity_date=line.validity_date, plan=plan)
        # The first deadline is shown even when it has passed and the sweep has not yet
        # moved the line; the calendar keeps only those still to come.
        deadline = chain[0] if chain else None
        days_left = (deadline.on - today).days if deadline else None
        keep_alive, bundle = keep_alive_by_plan[plan.id]
        can_be_kept = line.state in (
            LineState.PENDING_ACTIVATION,
            LineState.ACTIVE,
            LineState.GRACE,
            LineState.SUSPENDED,
        )
        numbers.append(
            NumberView(
                line_id=line.id,
                msisdn=line.msisdn,
                nickname=line.nickname,
                state=line.state,
                validity_date=line.validity_date,
                plan_name=plan.name,
                plan_name_zh=plan.name_zh or plan.name,
                currency=plan.currency,
                balance_minor=int(main_balance),
                bonus_minor=int(bonus_balance),
                next_step=step,
                deadline=deadline,
                deadlines=tuple(item for item in chain if item.on >= today),
                days_left=days_left,
                risk=_risk(line.state, days_left),
                keep_alive=(
                    _offer(keep_alive, bundle, plan=plan, validity_date=line.validity_date, today=today)
                    if can_be_kept
                    else None
                ),
                reactivation_fee_minor=plan.reactivation_fee_minor
                if line.state == LineState.SUSPENDED
                else 0,
            )
        )
    far = date.max
    numbers.sort(
        key=lambda number: (
            Risk.ORDER.index(number.risk),
            number.deadline.on if number.deadline else far,
            number.line_id,
        )
    )
    return numbers


def long_date(day: date, language: str) -> str:
    """A date in words: "3 March 2027", "2027年3月3日"."""
    return str(format_date(day, "long", locale=_DATE_LOCALES.get(language, "en_GB")))


@dataclass(frozen=True, slots=True)
class NumberWords:
    """What the page and the calendar say about one number, in one language."""

    risk_label: str
    deadline: str  # "Suspended on 3 March 2027 unless you top up"
    days_left: str  # "5 days left", "today", "" when there is no deadline
    keep_alive: str  # "Top up £5.00 to keep it until … (30 more days)", or ""
    reactivation_fee: str  # "", or what coming back from suspension costs


def risk_label(risk: str, language: str) -> str:
    _ = translations(language).gettext
    return {
        Risk.OK: _("On track"),
        Risk.SOON: _("Top up soon"),
        Risk.URGENT: _("Urgent"),
        Risk.LOST: _("Lost"),
    }[risk]


def deadline_text(kind: str, day: date, language: str) -> str:
    _ = translations(language).gettext
    on = long_date(day, language)
    if kind == DeadlineKind.VALIDITY_END:
        return _("Valid until %(date)s") % {"date": on}
    if kind == DeadlineKind.SUSPENSION:
        return _("Suspended on %(date)s unless you top up") % {"date": on}
    return _("Number lost on %(date)s unless you top up") % {"date": on}


def keep_alive_text(offer: KeepAliveOffer, language: str) -> str:
    catalogue = translations(language)
    values = {
        "amount": format_money(offer.amount_minor, offer.currency, language),
        "date": long_date(offer.valid_until, language),
        "num": offer.days_gained,
        "bundle": offer.bundle_name_zh if language == "zh_Hans" else offer.bundle_name,
    }
    if offer.bundle_name:
        text = catalogue.ngettext(
            "Buy %(bundle)s for %(amount)s to keep it until %(date)s (%(num)d more day)",
            "Buy %(bundle)s for %(amount)s to keep it until %(date)s (%(num)d more days)",
            offer.days_gained,
        )
    else:
        text = catalogue.ngettext(
            "Top up %(amount)s to keep it until %(date)s (%(num)d more day)",
            "Top up %(amount)s to keep it until %(date)s (%(num)d more days)",
            offer.days_gained,
        )
    return text % values


def describe(number: NumberView, language: str) -> NumberWords:
    """The sentences for one number, in ``language``."""
    catalogue = translations(language)
    _ = catalogue.gettext
    if number.state == LineState.TERMINATED:
        deadline = _("This number has ended and can no longer be topped up.")
    elif number.state == LineState.PENDING_ACTIVATION:
        deadline = _("Not yet active: the first top-up activates it.")
    elif number.deadline is None:
        deadline = _("No end date")
    else:
        deadline = deadline_text(number.deadline.kind, number.deadline.on, language)
    days_left = ""
    if number.days_left is not None:
        if number.days_left < 0:
            days_left = _("overdue")
        elif number.days_left == 0:
            days_left = _("today")
        else:
            days_left = catalogue.ngettext("%(num)d day left", "%(num)d days left", number.days_left) % {
                "num": number.days_left
            }
    fee = ""
    if number.reactivation_fee_minor > 0:
        fee = _("Coming back from suspension costs a fee of %(fee)s, taken from the balance.") % {
            "fee": format_money(number.reactivation_fee_minor, number.currency, language)
        }
    return NumberWords(
        risk_label=risk_label(number.risk, language),
        deadline=deadline,
        days_left=days_left,
        keep_alive=keep_alive_text(number.keep_alive, language) if number.keep_alive else "",
        reactivation_fee=fee,
    )
