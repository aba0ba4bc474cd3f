"""Reminders before a number's deadlines, and low-balance alerts; each sent once per occasion.

Occasions (days come from settings, e.g. 14, 7 and 1):
- ``expiry``: an active line's validity ends in at most N days;
- ``grace``: the line entered grace (validity ended; incoming calls only);
- ``suspension``: a line in grace is suspended in at most N days;
- ``termination``: a suspended line is terminated (its number lost) in at most N days;
- ``low_balance``: the main balance fell under the line's threshold.

"Once" is a constraint, not a hope: every message carries a dedup key naming its line,
occasion, the deadline it is about and the threshold reached, and the outbox keeps each
key once. A deadline that moves (a top-up) makes new occasions. A reminder whose exact day
was missed (the job was down) is still sent for the threshold reached, not skipped. Each
message goes by SMS to the line and by email to its owner, in the owner's language, with a
link that opens the top-up page with the number filled in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, cast
from urllib.parse import urlencode

from sqlalchemy import Table, and_, select, true, update
from sqlalchemy.orm import Session, sessionmaker

from airtime.accounts.models import Customer, Line, LineState, Plan
from airtime.clock import today as clock_today
from airtime.clock import utcnow
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.ledger.models import LedgerAccount
from airtime.lifecycle.keepalive import KeepAlive, cheapest_keep_alive
from airtime.lifecycle.service import next_step
from airtime.notifications.service import enqueue

CHUNK = 1_000
OCCASIONS = ("expiry", "grace", "suspension", "termination", "low_balance")
_accounts = cast(Table, LedgerAccount.__table__)


@dataclass
class ReminderResult:
    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OCCASIONS, 0))

    @property
    def total(self) -> int:
        return sum(self.sent.values())


def threshold_reached(days_left: int, thresholds: list[int]) -> int | None:
    """The smallest reminder threshold that ``days_left`` is within, if any."""
    reached = [days for days in thresholds if 0 <= days_left <= days]
    return min(reached) if reached else None


def topup_link(settings: Settings, msisdn: str) -> str:
    return f"{settings.base_url}/topup?{urlencode({'msisdn': msisdn})}"


def send_reminders(
    factory: sessionmaker[Session],
    settings: Settings,
    *,
    today: date | None = None,
    on_progress: Callable[[str, int], None] | None = None,
) -> ReminderResult:
    """Queue every reminder due today that was not sent before; returns what was queued."""
    day = today or clock_today()
    result = ReminderResult()
    with unit_of_work(factory) as session:
        plans = {plan.id: plan for plan in session.scalars(select(Plan))}
        offers = {plan_id: cheapest_keep_alive(session, plan) for plan_id, plan in plans.items()}
        for plan in plans.values():
            session.expunge(plan)
    horizon = max(settings.reminder_days_before_expiry, default=0)
    searches: list[tuple[str, Any]] = [
        (
            LineState.ACTIVE,
            and_(Line.validity_date >= day, Line.validity_date <= day + timedelta(days=horizon)),
        ),
        (LineState.GRACE, true()),
        (LineState.SUSPENDED, true()),
    ]
    for state, condition in searches:
        for rows in _chunks(factory, and_(Line.state == state, condition)):
            with unit_of_work(factory) as session:
                for row in rows:
                    for occasion, deadline, threshold in _occasions(row, plans[row.plan_id], settings, day):
                        queued = _queue(
                            session,
                            settings,
                            row=row,
                            occasion=occasion,
                            deadline=deadline,
                            threshold=threshold,
                            days_left=(deadline - day).days,
                            offer=offers[row.plan_id],
                        )
                        if queued:
                            result.sent[occasion] += 1
            if on_progress is not None:
                on_progress(state, len(rows))
    result.sent["low_balance"] = _low_balance_alerts(factory, settings, plans=plans, offers=offers)
    return result


def _chunks(factory: sessionmaker[Session], condition: Any) -> Iterator[list[Any]]:
    """Lines matching ``condition`` with their owner's email and language, by id, in chunks."""
    last_id = 0
    while True:
        with unit_of_work(factory) as session:
            rows = list(
                session.execute(
                    select(
                        Line.id,
                        Line.msisdn,
                        Line.nickname,
                        Line.plan_id,
                        Line.state,
                        Line.validity_date,
                        Line.state_changed_at,
                        Line.customer_id,
                        Customer.email,
                        Customer.language,
                    )
                    .outerjoin(Customer, Customer.id == Line.customer_id)
                    .where(condition, Line.id > last_id)
                    .order_by(Line.id)
                    .limit(CHUNK)
                )
            )
        if not rows:
            return
        yield rows
        last_id = rows[-1].id


def _occasions(row: Any, plan: Plan, settings: Settings, today: date) -> list[tuple[str, date, int]]:
    """(occasion, deadline, threshold) for every reminder this line is due today."""
    step = next_step(
        state=row.state, validity_date=row.validity_date, state_changed_at=row.state_changed_at, plan=plan
    )
    if step is None:
        return []
    if row.state == LineState.ACTIVE:
        # "Valid for N more days": counted to the validity date itself.
        threshold = threshold_reached((row.validity_date - today).days, settings.reminder_days_before_expiry)
        return [] if threshold is None else [("expiry", row.validity_date, threshold)]
    days_left = (step.on - today).days
    occasions = []
    if row.state == LineState.GRACE:
        # Grace began on the day after validity ended; its notice names the suspension day.
        occasions.append(("grace", step.on, 0))
        thresholds = [days for days in settings.reminder_days_before_suspension if days < plan.grace_days]
        threshold = threshold_reached(days_left, thresholds)
        if threshold is not None:
            occasions.append(("suspension", step.on, threshold))
    elif row.state == LineState.SUSPENDED:
        threshold = threshold_reached(days_left, settings.reminder_days_before_termination)
        if threshold is not None:
            occasions.append(("termination", step.on, threshold))
    return occasions


def _queue(
    session: Session,
    settings: Settings,
    *,
    row: Any,
    occasion: str,
    deadline: date,
    threshold: int,
    days_left: int,
    offer: KeepAlive | None,
    balance_minor: int | None = None,
    currency: str = "",
    key: str | None = None,
) -> int:
    """Queue the SMS to the line and the email to its owner; returns how many were new."""
    language = row.language or settings.default_language
    context = {
        "occasion": occasion,
        "operator_name": settings.operator_name,
        "msisdn": row.msisdn,
        "nickname": row.nickname,
        "deadline": deadline.isoformat(),
        "days_left": days_left,
        "offer": offer,
        "balance_minor": balance_minor,
        "currency": currency,
        "link": topup_link(settings, row.msisdn),
    }
    base_key = key or f"reminder:{occasion}:{row.id}:{deadline.isoformat()}:{threshold}"
    queued = 0
    for channel, recipient in (("sms", row.msisdn), ("email", row.email)):
        if recipient and enqueue(
            session,
            channel=channel,
            recipient=recipient,
            template="lifecycle_reminder",
            language=language,
            context=context,
            customer_id=row.customer_id,
            dedup_key=f"{base_key}:{channel}",
        ):
            queued += 1
    return queued


def _low_balance_alerts(
    factory: sessionmaker[Session],
    settings: Settings,
    *,
    plans: dict[int, Plan],
    offers: dict[int, KeepAlive | None],
) -> int:
    """Alert each line whose balance fell under its threshold once; re-arm lines whose
    balance is back at or above it. The conditional UPDATE makes "once" hold across processes."""
    balance = (
        select(_accounts.c.balance_minor).where(_accounts.c.id == Line.main_account_id).scalar_subquery()
    )
    watched = and_(
        Line.low_balance_threshold_minor.is_not(None),
        Line.state.in_((LineState.ACTIVE, LineState.GRACE)),
    )
    with unit_of_work(factory) as session:
        session.execute(
            update(Line)
            .where(
                Line.low_balance_threshold_minor.is_not(None),
                Line.low_balance_alerted_at.is_not(None),
                balance >= Line.low_balance_threshold_minor,
            )
            .values(low_balance_alerted_at=None)
            .execution_options(synchronize_session=False)
        )
    alerted = 0
    for rows in _chunks(
        factory,
        and_(watched, Line.low_balance_alerted_at.is_(None), balance < Line.low_balance_threshold_minor),
    ):
        with unit_of_work(factory) as session:
            now = utcnow()
            claimed = set(
                session.scalars(
                    update(Line)
                    .where(
                        Line.id.in_([row.id for row in rows]),
                        Line.low_balance_alerted_at.is_(None),
                        balance < Line.low_balance_threshold_minor,
                    )
                    .values(low_balance_alerted_at=now)
                    .returning(Line.id)
                    .execution_options(synchronize_session=False)
                )
            )
            balances = {
                row.id: int(row.balance or 0)
                for row in session.execute(
                    select(Line.id, balance.label("balance")).where(Line.id.in_(claimed))
                )
            }
            for row in rows:
                if row.id not in claimed:
                    continue
                plan = plans[row.plan_id]
                alerted += bool(
                    _queue(
                        session,
                        settings,
                        row=row,
                        occasion="low_balance",
                        deadline=row.validity_date or clock_today(),
                        threshold=0,
                        days_left=0,
                        offer=offers[row.plan_id],
                        balance_minor=balances.get(row.id, 0),
                        currency=plan.currency,
                        key=f"reminder:low_balance:{row.id}:{_stamp(now)}",
                    )
                )
    return alerted


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%M%S%f")
