"""The line lifecycle: how a number is kept, and how an abandoned one is recycled.

    pending_activation → active → grace → suspended → terminated → (number released)
                          ↑________|__________|   a credited top-up restores

- active → grace on the day after the validity date (incoming calls only);
- grace → suspended when the plan's grace days have passed since grace began (barred);
- suspended → terminated when the plan's suspension days have passed since suspension:
  the balance goes to breakage in the ledger (if the plan forfeits it), allowances end,
  and the number enters quarantine;
- after the plan's quarantine days the number is released and may be given to a new line.

Each period counts from the day the line actually entered its state, so a line is never
moved twice in one sweep and always gets its full grace and suspension time (and their
reminders), even after the sweep was down for a while.

The sweep moves lines in chunks, one transaction per chunk: candidates are picked with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL (several processes share the work) and moved by a
conditional UPDATE, so each line is moved once and a run killed midway leaves every chunk
either done or untouched. Every move writes a ``line_transitions`` row with its reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, func, insert, literal, select, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from airtime.accounts.models import Line, LineState, Plan
from airtime.clock import today as clock_today
from airtime.clock import utcnow
from airtime.db.base import UTCDateTime
from airtime.db.dialect import among, is_postgresql
from airtime.db.session import unit_of_work
from airtime.errors import ValidationFailed
from airtime.ledger.models import AccountKind, LedgerAccount
from airtime.ledger.service import Leg, TransferRequest, operator_account, post_transfer, post_transfers
from airtime.lifecycle.models import LineTransition, TransitionReason
from airtime.topups.models import LineAllowance

SWEEP_CHUNK = 5_000
_lines = cast(Table, Line.__table__)
_transitions = cast(Table, LineTransition.__table__)
_accounts = cast(Table, LedgerAccount.__table__)


def start_of_day(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def entered_before(today: date, days: int) -> datetime:
    """A state entered before this instant has lasted ``days`` full days by ``today``:
    entered on day D, the period ends and the next state begins on D + days."""
    return start_of_day(today - timedelta(days=days - 1))


@dataclass(frozen=True, slots=True)
class NextStep:
    """What happens to a line next if nobody acts, and on which day."""

    state: str  # the state it moves to ("released" for the number's release)
    on: date


NUMBER_RELEASED = "released"


def next_step(
    *, state: str, validity_date: date | None, state_changed_at: datetime, plan: Plan
) -> NextStep | None:
    entered = state_changed_at.astimezone(UTC).date()
    if state == LineState.ACTIVE and validity_date is not None:
        return NextStep(LineState.GRACE, validity_date + timedelta(days=1))
    if state == LineState.GRACE:
        return NextStep(LineState.SUSPENDED, entered + timedelta(days=plan.grace_days))
    if state == LineState.SUSPENDED:
        return NextStep(LineState.TERMINATED, entered + timedelta(days=plan.suspension_days))
    if state == LineState.TERMINATED:
        return NextStep(NUMBER_RELEASED, entered + timedelta(days=plan.quarantine_days))
    return None


def record_transition(
    session: Session,
    *,
    line_id: int,
    from_state: str,
    to_state: str,
    reason: str,
    validity_date: date | None,
    now: datetime,
    actor: str = "system",
) -> None:
    session.execute(
        _transitions.insert().values(
            line_id=line_id,
            from_state=from_state,
            to_state=to_state,
            reason=reason,
            validity_date=validity_date,
            actor=actor[:254],
            at=now,
        )
    )


def restore_after_credit(
    session: Session,
    *,
    line_id: int,
    from_state: str,
    plan: Plan,
    main_account_id: int,
    order_id: int,
    validity_date: date | None,
    now: datetime,
) -> None:
    """A credited top-up brought the line back to active (the caller changed its state):
    record why, and charge the plan's reactivation fee when it was suspended. The fee
    never takes the balance below zero; its transfer id is the order's, so it is charged
    once. The line's balance row is already locked by the top-up's own transfer."""
    record_transition(
        session,
        line_id=line_id,
        from_state=from_state,
        to_state=LineState.ACTIVE,
        reason=TransitionReason.TOPUP,
        validity_date=validity_date,
        now=now,
    )
    if from_state != LineState.SUSPENDED or plan.reactivation_fee_minor <= 0:
        return
    balance = int(
        session.execute(
            select(_accounts.c.balance_minor).where(_accounts.c.id == main_account_id)
        ).scalar_one()
    )
    fee = min(plan.reactivation_fee_minor, balance)
    if fee <= 0:
        return
    revenue = operator_account(
        session, kind=AccountKind.REVENUE, currency=plan.currency, qualifier="reactivation"
    )
    post_transfer(
        session,
        transfer_id=f"topup:{order_id}:reactivation",
        kind="reactivation_fee",
        currency=plan.currency,
        legs=[Leg(main_account_id, -fee), Leg(revenue, fee)],
        description="Reactivation fee",
        details={"line": line_id},
    )


# --- the sweep ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Step:
    name: str
    from_state: str
    to_state: str
    reason: str
    due: Callable[[Plan, date], ColumnElement[bool]]


_STEPS = (
    # A line whose validity was extended while in grace or suspension (by care, say) goes
    # back to active; a credited top-up does this at once, this is the safety net.
    _Step(
        "restored_grace",
        LineState.GRACE,
        LineState.ACTIVE,
        TransitionReason.VALIDITY_RESTORED,
        lambda _plan, today: Line.validity_date >= today,
    ),
    _Step(
        "restored_suspended",
        LineState.SUSPENDED,
        LineState.ACTIVE,
        TransitionReason.VALIDITY_RESTORED,
        lambda _plan, today: Line.validity_date >= today,
    ),
    _Step(
        "grace",
        LineState.ACTIVE,
        LineState.GRACE,
        TransitionReason.VALIDITY_ENDED,
        lambda _plan, today: Line.validity_date < today,
    ),
    _Step(
        "suspended",
        LineState.GRACE,
        LineState.SUSPENDED,
        TransitionReason.GRACE_ENDED,
        lambda plan, today: and_(
            Line.state_changed_at < entered_before(today, plan.grace_days),
            (Line.validity_date < today) | Line.validity_date.is_(None),
        ),
    ),
    _Step(
        "terminated",
        LineState.SUSPENDED,
        LineState.TERMINATED,
        TransitionReason.SUSPENSION_ENDED,
        lambda plan, today: and_(
            Line.state_changed_at < entered_before(today, plan.suspension_days),
            (Line.validity_date < today) | Line.validity_date.is_(None),
        ),
    ),
    _Step(
        "released",
        LineState.TERMINATED,
        LineState.TERMINATED,
        TransitionReason.QUARANTINE_ENDED,
        lambda plan, today: and_(
            Line.number_released_at.is_(None),
            Line.state_changed_at < entered_before(today, plan.quarantine_days),
        ),
    ),
)
STEP_NAMES = tuple(step.name for step in _STEPS)


@dataclass
class SweepResult:
    moved: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STEP_NAMES, 0))
    forfeited_minor: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.moved.values())


def count_due(factory: sessionmaker[Session], *, today: date | None = None) -> int:
    """How many moves the sweep would make now (for a progress bar); an estimate when
    other processes are sweeping at the same time."""
    day = today or clock_today()
    with unit_of_work(factory) as session:
        plans = list(session.scalars(select(Plan)))
        return sum(
            session.execute(
                select(func.count())
                .select_from(Line)
                .where(Line.state == step.from_state, Line.plan_id == plan.id, step.due(plan, day))
            ).scalar_one()
            for step in _STEPS
            for plan in plans
        )


def sweep(
    factory: sessionmaker[Session],
    *,
    today: date | None = None,
    chunk: int = SWEEP_CHUNK,
    on_progress: Callable[[str, int], None] | None = None,
) -> SweepResult:
    """Move every line whose time has come, chunk by chunk; returns what moved.

    Idempotent and safe to run in several processes at once: a line is moved by exactly
    one of them, and a line moved once is not moved again in the same run.
    """
    day = today or clock_today()
    result = SweepResult()
    with unit_of_work(factory) as session:
        plans = list(session.scalars(select(Plan).order_by(Plan.id)))
        for plan in plans:
            session.expunge(plan)
    for step in _STEPS:
        for plan in plans:
            while True:
                with unit_of_work(factory) as session:
                    moved = _move_chunk(session, step=step, plan=plan, today=day, chunk=chunk, result=result)
                if moved:
                    result.moved[step.name] += moved
                    if on_progress is not None:
                        on_progress(step.name, moved)
                if moved < chunk:
                    break
    return result


def _move_chunk(
    session: Session, *, step: _Step, plan: Plan, today: date, chunk: int, result: SweepResult
) -> int:
    condition = and_(Line.state == step.from_state, Line.plan_id == plan.id, step.due(plan, today))
    # No ORDER BY: the planner walks the (state, validity_date) or (state, state_changed_at)
    # index and stops at ``chunk`` rows; sorting every due line per chunk would not scale.
    due = select(Line.id).where(condition).limit(chunk)
    now = utcnow()
    values: dict[str, Any] = (
        {"number_released_at": now}
        if step.name == "released"
        else {"state": step.to_state, "state_changed_at": now}
    )
    # On PostgreSQL the chunk is claimed skipping lines another sweeper holds; SQLite has one
    # writer at a time. The ids then go in as one array parameter (among()): an index lookup
    # whatever the planner's row estimates.
    claim = due.with_for_update(skip_locked=True, key_share=True) if is_postgresql(session) else due
    ids = list(session.scalars(claim))
    if not ids:
        return 0
    moving = (
        update(Line)
        .where(among(session, Line.id, ids), condition)
        .values(**values)
        .returning(Line.id, Line.validity_date, Line.main_account_id, Line.bonus_account_id)
    )

    def record(moved: Any) -> Any:
        """The transitions of the lines in ``moved`` (rows with an id and validity date)."""
        return select(
            moved.c.id,
            literal(step.from_state),
            literal(step.to_state),
            literal(step.reason),
            moved.c.validity_date,
            literal("system"),
            literal(now, UTCDateTime()),
        )

    columns = ["line_id", "from_state", "to_state", "reason", "validity_date", "actor", "at"]
    if is_postgresql(session):
        # One statement moves the chunk, records the transitions and hands back what
        # termination needs.
        moved = moving.cte("moved")
        recorded = insert(LineTransition).from_select(columns, record(moved)).cte("recorded")
        rows = session.execute(
            select(
                moved.c.id, moved.c.validity_date, moved.c.main_account_id, moved.c.bonus_account_id
            ).add_cte(recorded)
        ).all()
    else:
        rows = session.execute(moving.execution_options(synchronize_session=False)).all()
        session.execute(
            _transitions.insert().from_select(
                columns, record(_lines).where(_lines.c.id.in_([row.id for row in rows]))
            )
        )
    if rows and step.name == "terminated":
        _terminate(session, plan=plan, rows=rows, now=now, result=result)
    return len(rows)


def _terminate(
    session: Session, *, plan: Plan, rows: Sequence[Any], now: datetime, result: SweepResult
) -> None:
    """Allowances end; the balance (main and bonus) goes to breakage if the plan forfeits it."""
    line_ids = [row.id for row in rows]
    session.execute(
        update(LineAllowance)
        .where(among(session, LineAllowance.line_id, line_ids), LineAllowance.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    if not plan.forfeit_balance_on_termination:
        return
    account_ids = sorted(
        account_id for row in rows for account_id in (row.main_account_id, row.bonus_account_id)
    )
    # Lock the balances (in id order, like the ledger does) before reading what to forfeit.
    balances = dict(
        session.execute(
            select(_accounts.c.id, _accounts.c.balance_minor)
            .where(among(session, _accounts.c.id, account_ids), _accounts.c.balance_minor != 0)
            .order_by(_accounts.c.id)
            .with_for_update(key_share=True)
        ).all()
    )
    if not balances:
        return
    breakage = operator_account(session, kind=AccountKind.BREAKAGE, currency=plan.currency)
    transfers = []
    for row in rows:
        legs = [
            Leg(account_id, -int(balances[account_id]))
            for account_id in (row.main_account_id, row.bonus_account_id)
            if balances.get(account_id)
        ]
        if not legs:
            continue
        forfeited = -sum(leg.amount_minor for leg in legs)
        transfers.append(
            TransferRequest(
                transfer_id=f"line:{row.id}:termination",
                kind="breakage",
                currency=plan.currency,
                legs=(*legs, Leg(breakage, forfeited)),
                description="Balance forfeited at termination",
                details={"line": row.id},
            )
        )
        result.forfeited_minor[plan.currency] = result.forfeited_minor.get(plan.currency, 0) + forfeited
    post_transfers(session, transfers)


def line_transitions(session: Session, *, line_id: int, limit: int = 50) -> list[LineTransition]:
    return list(
        session.scalars(
            select(LineTransition)
            .where(LineTransition.line_id == line_id)
            .order_by(LineTransition.id.desc())
            .limit(limit)
        )
    )


LOW_BALANCE_THRESHOLD_MAX_MINOR = 100_000_00


def set_low_balance_threshold(session: Session, *, line_id: int, threshold_minor: int | None) -> None:
    """Alert when the main balance falls under ``threshold_minor`` (None: no alerts). A new
    threshold re-arms the alert, so a balance already under it is told once more."""
    if threshold_minor is not None and not 0 < threshold_minor <= LOW_BALANCE_THRESHOLD_MAX_MINOR:
        raise ValidationFailed("Choose an alert amount above zero.", field="threshold")
    session.execute(
        update(Line)
        .where(Line.id == line_id)
        .values(low_balance_threshold_minor=threshold_minor, low_balance_alerted_at=None)
        .execution_options(synchronize_session=False)
    )
