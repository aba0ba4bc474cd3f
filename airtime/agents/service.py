"""Agents: create and fund them, issue credentials, check signed requests, sell top-ups and
bundles from the float through the one crediting step, and read statements.

Money: a sale is one ledger transfer (the crediting step's), funded by
- the selling agent's float: minus (amount − its commission),
- the operator's commission expense: minus the whole commission of the sale,
- each parent agent's float: plus the difference between its commission and its child's,
so the legs sum to zero exactly, in integer minor units, with the one rounding rule of
:func:`airtime.money.apply_rate`. The float is a guarded ledger account: the ledger locks it
and refuses to go below its floor (0 prepaid, negative with a credit limit).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import cast

from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from airtime.accounts.models import Line, Plan
from airtime.accounts.phone import normalize_msisdn
from airtime.accounts.ratelimit import record_failure, window_start
from airtime.agents import signing
from airtime.agents.models import Agent, AgentCredential, AgentDailyUsage, AgentSale, AgentSignature
from airtime.clock import today, utcnow
from airtime.config import Settings
from airtime.db.dialect import insert_ignoring_conflicts
from airtime.db.session import unit_of_work
from airtime.errors import (
    AppError,
    AuthenticationFailed,
    Conflict,
    IdempotencyConflict,
    InsufficientFunds,
    NotFound,
    RateLimited,
    ValidationFailed,
)
from airtime.ledger.models import AccountKind, Entry, LedgerAccount, Transfer
from airtime.ledger.service import (
    Leg,
    PostedTransfer,
    balance_of,
    open_account,
    operator_account,
    post_transfer,
)
from airtime.money import AMOUNT_MINOR_MAX, apply_rate, format_money, validate_currency
from airtime.topups import service as topups
from airtime.topups.models import Channel, TopupOrder

AGENT_PROVIDER = "agent"
# A sale's transfer has one leg per agent up the chain, the line's two and two operator
# legs; the ledger allows 16, so chains stop well before that.
AGENT_DEPTH_MAX = 5
BASIS_POINTS_MAX = 9_999  # below 100%: a sale always costs the selling agent something
SALES_PAGE_SIZE_MAX = 100
RATE_LIMIT_PER_MINUTE_MAX = 100_000
_CODE_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9_-]{1,39}$")
_usage = cast(Table, AgentDailyUsage.__table__)
_signatures = cast(Table, AgentSignature.__table__)


class FloatInsufficient(AppError):
    status_code = 409
    code = "float_insufficient"
    title = "Float too low"


class DailyLimitReached(AppError):
    status_code = 429
    code = "daily_limit_reached"
    title = "Daily limit reached"


class SignatureRefused(AuthenticationFailed):
    code = "signature_refused"
    title = "Signature refused"


# --- agents ------------------------------------------------------------------------------


def agent_by_code(session: Session, code: str) -> Agent:
    agent = session.scalar(select(Agent).where(Agent.code == code.strip().upper()))
    if agent is None:
        raise NotFound("No agent %(code)s.", code=code[:40])
    return agent


def chain_of(session: Session, agent: Agent) -> list[Agent]:
    """The agent, its parent, the parent's parent... up to the top (at most AGENT_DEPTH_MAX)."""
    chain = [agent]
    while chain[-1].parent_id is not None and len(chain) <= AGENT_DEPTH_MAX:
        parent = session.get(Agent, chain[-1].parent_id)
        assert parent is not None
        chain.append(parent)
    return chain


def commission_for(agent: Agent, amount_minor: int) -> int:
    """What ``agent`` earns on a sale of ``amount_minor``: its fixed amount for that
    denomination if it has one, else its rate (rounded half to even, see airtime.money)."""
    fixed = (agent.commission_amounts or {}).get(str(amount_minor))
    if fixed is not None:
        return int(fixed)
    return apply_rate(amount_minor, agent.commission_basis_points)


@dataclass(frozen=True, slots=True)
class CommissionSplit:
    """Who pays and earns what on one sale (see :func:`split_commission`)."""

    float_debit_minor: int  # taken from the selling agent's float
    seller_commission_minor: int
    parent_shares_minor: tuple[int, ...]  # credited to each parent, nearest first
    expense_minor: int  # the operator's whole commission cost


def split_commission(amount_minor: int, commissions_minor: list[int]) -> CommissionSplit:
    """Split a sale's commission along the chain (seller first, then each parent).

    A parent earns the difference between its commission and the best one below it; a
    parent configured below its child earns nothing rather than paying the child. The
    funding legs (seller −debit, expense −total, parents +shares) sum to −amount exactly.
    """
    if not commissions_minor or any(value < 0 for value in commissions_minor):
        raise ValidationFailed("Commissions are not negative.")
    seller = commissions_minor[0]
    if not 0 <= seller < amount_minor:
        raise ValidationFailed("The commission must be less than the amount sold.")
    shares: list[int] = []
    best = seller
    for commission in commissions_minor[1:]:
        # A parent's commission is capped at the amount: the operator never pays out more than it sold.
        effective = min(max(commission, best), amount_minor)
        shares.append(effective - best)
        best = effective
    return CommissionSplit(
        float_debit_minor=amount_minor - seller,
        seller_commission_minor=seller,
        parent_shares_minor=tuple(shares),
        expense_minor=best,
    )


def _check_commission(basis_points: int, amounts: dict[str, int]) -> None:
    if not 0 <= basis_points <= BASIS_POINTS_MAX:
        raise ValidationFailed(
            "The commission rate is 0 to %(max)s basis points.", max=BASIS_POINTS_MAX, field="commission"
        )
    for denomination, commission in amounts.items():
        if not denomination.isdigit() or not 0 <= commission < int(denomination):
            raise ValidationFailed(
                "A fixed commission is less than its amount (%(amount)s).",
                amount=denomination[:20],
                field="commission",
            )


def create_agent(
    session: Session,
    *,
    code: str,
    name: str,
    currency: str,
    parent_code: str | None = None,
    commission_basis_points: int = 0,
    commission_amounts: dict[int, int] | None = None,
    credit_limit_minor: int = 0,
    rate_limit_per_minute: int = 60,
    daily_limit_minor: int | None = None,
) -> Agent:
    """An agent with its float (floor 0, or minus the credit limit) under an optional parent."""
    code = code.strip().upper()
    if not _CODE_PATTERN.match(code):
        raise ValidationFailed("An agent code is 2 to 40 letters, digits, - or _.", field="code")
    if not name.strip() or len(name) > 120:
        raise ValidationFailed("An agent has a name of 1 to 120 characters.", field="name")
    currency = validate_currency(currency)
    amounts = {str(amount): int(commission) for amount, commission in (commission_amounts or {}).items()}
    _check_commission(commission_basis_points, amounts)
    if not 1 <= rate_limit_per_minute <= RATE_LIMIT_PER_MINUTE_MAX:
        raise ValidationFailed(
            "The rate limit is 1 to %(max)s requests a minute.",
            max=RATE_LIMIT_PER_MINUTE_MAX,
            field="rate_limit",
        )
    if daily_limit_minor is not None and not 0 < daily_limit_minor <= AMOUNT_MINOR_MAX:
        raise ValidationFailed("The daily limit must be positive.", field="daily_limit")
    if not 0 <= credit_limit_minor <= AMOUNT_MINOR_MAX:
        raise ValidationFailed("The credit limit must not be negative.", field="credit_limit")
    if session.scalar(select(Agent.id).where(Agent.code == code)) is not None:
        raise Conflict("An agent %(code)s already exists.", code=code)
    parent = agent_by_code(session, parent_code) if parent_code else None
    if parent is not None:
        if parent.currency != currency:
            raise ValidationFailed(
                "Agent %(code)s sells in %(currency)s.", code=parent.code, currency=parent.currency
            )
        if len(chain_of(session, parent)) >= AGENT_DEPTH_MAX:
            raise ValidationFailed("Sub-agents go at most %(depth)s levels deep.", depth=AGENT_DEPTH_MAX)
    float_account_id = open_account(
        session,
        code=f"agent:{code}:float",
        kind=AccountKind.AGENT_FLOAT,
        currency=currency,
        name=f"Float of agent {name}"[:200],
        balance_tracked=True,
        floor_minor=-credit_limit_minor,
    )
    agent = Agent(
        code=code,
        name=name.strip(),
        currency=currency,
        parent_id=parent.id if parent else None,
        float_account_id=float_account_id,
        commission_basis_points=commission_basis_points,
        commission_amounts=amounts,
        rate_limit_per_minute=rate_limit_per_minute,
        daily_limit_minor=daily_limit_minor,
        active=True,
        created_at=utcnow(),
    )
    session.add(agent)
    session.flush()
    return agent


def fund_agent(session: Session, *, agent: Agent, amount_minor: int, reference: str) -> PostedTransfer:
    """The agent paid the operator (bank transfer, cash): its float goes up. The reference
    is the idempotency key: the same reference again moves nothing (``replayed``)."""
    if not 0 < amount_minor <= AMOUNT_MINOR_MAX:
        raise ValidationFailed("The amount must be positive.", field="amount")
    reference = reference.strip()
    if not reference or len(reference) > 60:
        raise ValidationFailed("A reference of 1 to 60 characters is required.", field="reference")
    clearing = operator_account(
        session, kind=AccountKind.PAYMENT_CLEARING, currency=agent.currency, qualifier="agent-deposits"
    )
    return post_transfer(
        session,
        transfer_id=f"agent-funding:{agent.id}:{reference}",
        kind="agent_funding",
        currency=agent.currency,
        legs=[Leg(clearing, -amount_minor), Leg(agent.float_account_id, amount_minor)],
        description=f"Float funding {reference}",
        details={"agent": agent.code, "reference": reference},
    )


def issue_credentials(session: Session, *, agent: Agent, settings: Settings) -> tuple[str, str]:
    """A new API key id and its secret; the secret is shown to the caller once, never kept."""
    key_id, salt = signing.new_key_id(), signing.new_salt()
    session.add(AgentCredential(key_id=key_id, agent_id=agent.id, salt=salt, created_at=utcnow()))
    session.flush()
    return key_id, signing.derive_secret(signing.credentials_key(settings), key_id=key_id, salt=salt)


def revoke_credentials(session: Session, *, agent: Agent, key_id: str) -> bool:
    revoked = session.execute(
        update(AgentCredential)
        .where(
            AgentCredential.key_id == key_id,
            AgentCredential.agent_id == agent.id,
            AgentCredential.revoked_at.is_(None),
        )
        .values(revoked_at=utcnow())
    )
    return bool(revoked.rowcount)  # type: ignore[attr-defined]


# --- signed requests -----------------------------------------------------------------------


def authenticate(
    session: Session,
    *,
    settings: Settings,
    key_id: str,
    timestamp: str,
    nonce: str,
    signature: str,
    method: str,
    path_with_query: str,
    body: bytes,
) -> Agent:
    """The agent behind a signed request, or a refusal. Checks, in order: the timestamp is
    within the replay window, the nonce is well formed, the key is live, the signature
    matches (constant time), the signature was not seen before (an exact replay), and the
    agent's rate limit."""
    now = utcnow()
    if not timestamp.isdigit() or len(timestamp) > 12:
        raise SignatureRefused("X-Agent-Timestamp must be the Unix time in seconds.")
    if not signing.NONCE_PATTERN.match(nonce):
        raise SignatureRefused("X-Agent-Nonce must be 8 to 64 letters, digits, - or _, new for each request.")
    skew = abs(now.timestamp() - int(timestamp))
    if skew > signing.REPLAY_WINDOW_SECONDS:
        raise SignatureRefused(
            "The request was signed %(seconds)s seconds away from the server's time; the limit is "
            "%(window)s. Sign each request when sending it, with a synchronised clock.",
            seconds=int(skew),
            window=signing.REPLAY_WINDOW_SECONDS,
        )
    found = session.execute(
        select(AgentCredential, Agent)
        .join(Agent, Agent.id == AgentCredential.agent_id)
        .where(AgentCredential.key_id == key_id[:40], AgentCredential.revoked_at.is_(None))
    ).one_or_none()
    if found is None or not found[1].active:
        raise SignatureRefused("Unknown or revoked API key.")
    credential, agent = found
    secret = signing.derive_secret(
        signing.credentials_key(settings), key_id=credential.key_id, salt=credential.salt
    )
    expected = signing.sign(
        secret, method=method, path_with_query=path_with_query, timestamp=timestamp, nonce=nonce, body=body
    )
    if not hmac.compare_digest(expected, signature.strip().lower()):
        raise SignatureRefused(
            "The signature does not match. Sign METHOD, path with query, timestamp, nonce and "
            "the body's SHA-256, each on its own line, with HMAC-SHA256 and your secret."
        )
    fresh = session.execute(
        insert_ignoring_conflicts(session, _signatures)
        .values(signature=expected, agent_id=agent.id, seen_at=now)
        .returning(_signatures.c.signature)
    ).scalar()
    if fresh is None:
        raise SignatureRefused("This exact request was already received; sign every request anew.")
    count = record_failure(session, f"agent-api:{agent.id}", window_minutes=1)
    if count > agent.rate_limit_per_minute:
        retry = int((window_start(now, 1) + timedelta(minutes=1) - now).total_seconds()) + 1
        raise RateLimited(
            "More than %(limit)s requests this minute; try again in %(retry_after)s seconds.",
            limit=agent.rate_limit_per_minute,
            retry_after=retry,
        )
    return agent


def prune_signatures(factory: sessionmaker[Session]) -> int:
    """Forget signatures older than the replay window: their timestamps are refused anyway."""
    cutoff = utcnow() - timedelta(seconds=2 * signing.REPLAY_WINDOW_SECONDS)
    with unit_of_work(factory) as session:
        removed = session.execute(delete(AgentSignature).where(AgentSignature.seen_at < cutoff))
        return int(removed.rowcount)  # type: ignore[attr-defined]


# --- selling ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sale:
    sale: AgentSale
    order: TopupOrder
    replayed: bool


def _request_hash(*, msisdn: str, amount_minor: int | None, bundle_code: str | None) -> str:
    payload = json.dumps({"msisdn": msisdn, "amount": amount_minor, "bundle": bundle_code}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _seconds_to_midnight(now: datetime) -> int:
    tomorrow = datetime.combine(now.date() + timedelta(days=1), time.min, tzinfo=UTC)
    return int((tomorrow - now).total_seconds()) + 1


def _claim_daily(session: Session, *, agent: Agent, amount_minor: int, day: date) -> bool:
    """Add the sale to today's total if it stays within the limit (one conditional UPDATE,
    which also makes one agent's sales queue here until the first commits)."""
    session.execute(
        insert_ignoring_conflicts(session, _usage).values(agent_id=agent.id, day=day, amount_minor=0, sales=0)
    )
    condition = [_usage.c.agent_id == agent.id, _usage.c.day == day]
    if agent.daily_limit_minor is not None:
        condition.append(_usage.c.amount_minor + amount_minor <= agent.daily_limit_minor)
    claimed = session.execute(
        update(_usage)
        .where(*condition)
        .values(amount_minor=_usage.c.amount_minor + amount_minor, sales=_usage.c.sales + 1)
        .returning(_usage.c.amount_minor)
    ).scalar()
    return claimed is not None


def _release_daily(session: Session, *, agent: Agent, amount_minor: int, day: date) -> None:
    session.execute(
        update(_usage)
        .where(_usage.c.agent_id == agent.id, _usage.c.day == day)
        .values(amount_minor=_usage.c.amount_minor - amount_minor, sales=_usage.c.sales - 1)
    )


def _replay(session: Session, *, agent: Agent, idempotency_key: str, request_hash: str) -> Sale | None:
    found = session.execute(
        select(AgentSale, TopupOrder)
        .join(TopupOrder, TopupOrder.id == AgentSale.order_id)
        .where(AgentSale.agent_id == agent.id, AgentSale.idempotency_key == idempotency_key)
    ).one_or_none()
    if found is None:
        return None
    if found[0].request_hash != request_hash:
        raise IdempotencyConflict("This Idempotency-Key was already used for a different sale.")
    return Sale(sale=found[0], order=found[1], replayed=True)


def sell(
    session: Session,
    *,
    agent: Agent,
    msisdn: str,
    idempotency_key: str,
    settings: Settings,
    amount_minor: int | None = None,
    bundle_code: str | None = None,
    staff_user_id: int | None = None,
) -> Sale:
    """Top up a line (``amount_minor``) or buy it a bundle (``bundle_code``) from the agent's
    float, through the one top-up state machine and crediting step. The same key with the
    same request returns the first sale; with another request it is refused. Refusals
    (limits, float, number, amount) leave nothing moved."""
    if not idempotency_key or len(idempotency_key) > topups.IDEMPOTENCY_KEY_LENGTH_MAX:
        raise ValidationFailed(
            "An Idempotency-Key of 1 to %(length)s characters is required.",
            length=topups.IDEMPOTENCY_KEY_LENGTH_MAX,
        )
    if (amount_minor is None) == (bundle_code is None):
        raise ValidationFailed("Give either an amount or a bundle code.", field="amount_minor")
    if not agent.active:
        raise Conflict("Agent %(code)s is not active.", code=agent.code)
    normalized = normalize_msisdn(msisdn, default_region=settings.default_region)
    request_hash = _request_hash(msisdn=normalized, amount_minor=amount_minor, bundle_code=bundle_code)
    line = topups.find_topupable_line(session, msisdn=normalized, settings=settings)
    plan = session.get(Plan, line.plan_id)
    assert plan is not None
    if plan.currency != agent.currency:
        raise ValidationFailed(
            "You sell in %(agent)s; this number is topped up in %(line)s.",
            agent=agent.currency,
            line=plan.currency,
            field="msisdn",
        )
    quote = topups.quote(
        session, line=line, channel=Channel.AGENT, amount_minor=amount_minor, bundle_code=bundle_code
    )
    amount = quote.amount_minor
    day = today()
    claimed = _claim_daily(session, agent=agent, amount_minor=amount, day=day)
    # After the claim (which waits for this agent's earlier sale to commit), so a retry
    # racing its original finds it here instead of selling twice.
    earlier = _replay(session, agent=agent, idempotency_key=idempotency_key, request_hash=request_hash)
    if earlier is not None:
        if claimed:
            _release_daily(session, agent=agent, amount_minor=amount, day=day)
        return earlier
    if not claimed:
        assert agent.daily_limit_minor is not None
        raise DailyLimitReached(
            "This sale would take you past your daily limit of %(limit)s; it resets at 00:00 UTC.",
            limit=format_money(agent.daily_limit_minor, agent.currency),
            retry_after=_seconds_to_midnight(utcnow()),
        )
    chain = chain_of(session, agent)
    split = split_commission(amount, [commission_for(member, amount) for member in chain])
    order = topups.create_paid_order(
        session,
        line=line,
        amount_minor=amount,
        channel=Channel.AGENT,
        provider_name=AGENT_PROVIDER,
        payment_reference=f"{agent.id}:{idempotency_key}",
        idempotency_scope=f"agent:{agent.id}",
        idempotency_key=idempotency_key,
    )
    if quote.bundle is not None:
        # A bundle is a fixed package at its own price: no promotion bonus (as in quote()).
        order.bundle_id = quote.bundle.id
        order.bonus_minor = 0
        order.promotion_id = None
        session.flush()
    legs = [Leg(agent.float_account_id, -split.float_debit_minor)]
    if split.expense_minor:
        expense = operator_account(session, kind=AccountKind.COMMISSION_EXPENSE, currency=agent.currency)
        legs.append(Leg(expense, -split.expense_minor))
    legs += [
        Leg(parent.float_account_id, share)
        for parent, share in zip(chain[1:], split.parent_shares_minor, strict=True)
        if share
    ]
    try:
        credited = topups.credit(session, order_id=order.id, settings=settings, funding_legs=legs)
    except InsufficientFunds as refused:
        if refused.params.get("account_id") != agent.float_account_id:
            raise
        raise FloatInsufficient(
            "Your float has %(available)s available; this sale needs %(needed)s. Nothing was charged.",
            available=refused.params["available"],
            needed=format_money(split.float_debit_minor, agent.currency),
        ) from refused
    if not credited:
        # The line was terminated since it was looked up: refuse, and the float is not charged.
        raise topups.LineNotTopupable(
            "%(msisdn)s is no longer in service and cannot be topped up.", msisdn=line.msisdn, field="msisdn"
        )
    sale = AgentSale(
        agent_id=agent.id,
        order_id=order.id,
        transfer_id=f"topup:{order.id}:credit",
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        msisdn=line.msisdn,
        currency=agent.currency,
        amount_minor=amount,
        commission_minor=split.seller_commission_minor,
        commission_total_minor=split.expense_minor,
        float_debit_minor=split.float_debit_minor,
        staff_user_id=staff_user_id,
        created_at=utcnow(),
    )
    session.add(sale)
    session.flush()
    return Sale(sale=sale, order=order, replayed=False)


# --- reading -------------------------------------------------------------------------------


def sale_by_order(session: Session, *, agent: Agent, public_id: str) -> tuple[AgentSale, TopupOrder]:
    found = session.execute(
        select(AgentSale, TopupOrder)
        .join(TopupOrder, TopupOrder.id == AgentSale.order_id)
        .where(AgentSale.agent_id == agent.id, TopupOrder.public_id == public_id[:32])
    ).one_or_none()
    if found is None:
        raise NotFound("No such transaction.")
    return found[0], found[1]


def sale_by_key(session: Session, *, agent: Agent, idempotency_key: str) -> tuple[AgentSale, TopupOrder]:
    found = session.execute(
        select(AgentSale, TopupOrder)
        .join(TopupOrder, TopupOrder.id == AgentSale.order_id)
        .where(AgentSale.agent_id == agent.id, AgentSale.idempotency_key == idempotency_key[:100])
    ).one_or_none()
    if found is None:
        raise NotFound("No such transaction.")
    return found[0], found[1]


def list_sales(
    session: Session, *, agent: Agent, limit: int = 50, before_id: int | None = None
) -> list[tuple[AgentSale, TopupOrder]]:
    """The agent's sales, newest first, a page at a time (``before_id``: the last id seen)."""
    query = (
        select(AgentSale, TopupOrder)
        .join(TopupOrder, TopupOrder.id == AgentSale.order_id)
        .where(AgentSale.agent_id == agent.id)
        .order_by(AgentSale.id.desc())
        .limit(max(1, min(limit, SALES_PAGE_SIZE_MAX)))
    )
    if before_id is not None:
        query = query.where(AgentSale.id < before_id)
    return [(sale, order) for sale, order in session.execute(query).all()]


@dataclass(frozen=True, slots=True)
class FloatStatus:
    currency: str
    balance_minor: int
    credit_limit_minor: int
    available_minor: int
    daily_limit_minor: int | None
    sold_today_minor: int


def float_status(session: Session, *, agent: Agent) -> FloatStatus:
    account = session.get(LedgerAccount, agent.float_account_id)
    assert account is not None
    balance = balance_of(session, agent.float_account_id)
    floor = account.floor_minor or 0
    sold = session.scalar(
        select(AgentDailyUsage.amount_minor).where(
            AgentDailyUsage.agent_id == agent.id, AgentDailyUsage.day == today()
        )
    )
    return FloatStatus(
        currency=agent.currency,
        balance_minor=balance,
        credit_limit_minor=-floor,
        available_minor=balance - floor,
        daily_limit_minor=agent.daily_limit_minor,
        sold_today_minor=int(sold or 0),
    )


@dataclass(frozen=True, slots=True)
class StatementRow:
    at: datetime
    kind: str  # sale, funding, sub_agent_commission, other
    reference: str
    msisdn: str
    amount_minor: int  # sold (sales), else the float change
    commission_minor: int
    float_change_minor: int
    float_after_minor: int


@dataclass(frozen=True, slots=True)
class Statement:
    agent: Agent
    start: datetime
    end: datetime
    opening_minor: int
    sales_count: int
    sales_minor: int
    commission_minor: int
    sub_agent_commission_minor: int
    funding_minor: int
    other_minor: int
    closing_minor: int
    rows: list[StatementRow]


STATEMENT_ROWS_MAX = 50_000


def statement(session: Session, *, agent: Agent, start: datetime, end: datetime) -> Statement:
    """The float's movements in [start, end): opening, sales with their commission, what
    sub-agents' sales earned, funding, closing. Every figure comes from the ledger's entries,
    so opening + movements = closing exactly."""
    account_id = agent.float_account_id
    later = session.scalar(
        select(func.coalesce(func.sum(Entry.amount_minor), 0)).where(
            Entry.account_id == account_id, Entry.created_at >= end
        )
    )
    closing = balance_of(session, account_id) - int(later or 0)
    found = session.execute(
        select(
            Entry.created_at,
            Entry.amount_minor,
            Transfer.kind,
            Transfer.description,
            AgentSale.amount_minor,
            AgentSale.commission_minor,
            AgentSale.msisdn,
            TopupOrder.receipt_number,
        )
        .join(Transfer, Transfer.id == Entry.transfer_id)
        .outerjoin(AgentSale, (AgentSale.transfer_id == Entry.transfer_id) & (AgentSale.agent_id == agent.id))
        .outerjoin(TopupOrder, TopupOrder.id == AgentSale.order_id)
        .where(Entry.account_id == account_id, Entry.created_at >= start, Entry.created_at < end)
        .order_by(Entry.id)
        .limit(STATEMENT_ROWS_MAX)
    ).all()
    opening = closing - sum(row[1] for row in found)
    running = opening
    rows: list[StatementRow] = []
    totals = {"sales": 0, "count": 0, "commission": 0, "sub": 0, "funding": 0, "other": 0}
    for at, change, kind, description, sold, commission, msisdn, receipt in found:
        running += change
        if sold is not None:
            category = "sale"
            totals["sales"] += sold
            totals["count"] += 1
            totals["commission"] += commission
        elif kind == "agent_funding":
            category = "funding"
            totals["funding"] += change
        elif kind in ("topup", "bundle_purchase"):
            category = "sub_agent_commission"
            totals["sub"] += change
        else:
            category = "other"
            totals["other"] += change
        rows.append(
            StatementRow(
                at=at,
                kind=category,
                reference=receipt or description,
                msisdn=msisdn or "",
                amount_minor=sold if sold is not None else change,
                commission_minor=commission or (change if category == "sub_agent_commission" else 0),
                float_change_minor=change,
                float_after_minor=running,
            )
        )
    return Statement(
        agent=agent,
        start=start,
        end=end,
        opening_minor=opening,
        sales_count=totals["count"],
        sales_minor=totals["sales"],
        commission_minor=totals["commission"],
        sub_agent_commission_minor=totals["sub"],
        funding_minor=totals["funding"],
        other_minor=totals["other"],
        closing_minor=closing,
        rows=rows,
    )


def period_bounds(period: str, day: date) -> tuple[datetime, datetime]:
    """[start, end) of the UTC day, or of the month that contains ``day``."""
    if period == "month":
        first = day.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        return (
            datetime.combine(first, time.min, tzinfo=UTC),
            datetime.combine(following, time.min, tzinfo=UTC),
        )
    if period != "day":
        raise ValidationFailed("A statement is for a day or a month.", field="period")
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def statement_csv(statement_: Statement) -> str:
    """The statement as CSV: an opening row, one row per movement, a closing row."""
    import csv
    import io

    from airtime.money import minor_unit_exponent

    exponent = minor_unit_exponent(statement_.agent.currency)

    def amount(value: int) -> str:
        sign = "-" if value < 0 else ""
        whole, fraction = divmod(abs(value), 10**exponent)
        return f"{sign}{whole}.{fraction:0{exponent}d}" if exponent else f"{sign}{whole}"

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        [
            "time_utc",
            "type",
            "reference",
            "msisdn",
            "amount",
            "commission",
            "float_change",
            "float_after",
            "currency",
        ]
    )
    currency = statement_.agent.currency
    writer.writerow(
        [
            statement_.start.isoformat(),
            "opening",
            "",
            "",
            "",
            "",
            "",
            amount(statement_.opening_minor),
            currency,
        ]
    )
    for row in statement_.rows:
        writer.writerow(
            [
                row.at.isoformat(timespec="seconds"),
                row.kind,
                row.reference,
                row.msisdn,
                amount(row.amount_minor),
                amount(row.commission_minor),
                amount(row.float_change_minor),
                amount(row.float_after_minor),
                currency,
            ]
        )
    writer.writerow(
        [
            statement_.end.isoformat(),
            "closing",
            "",
            "",
            "",
            "",
            "",
            amount(statement_.closing_minor),
            currency,
        ]
    )
    return out.getvalue()


def lookup_line(session: Session, *, msisdn: str, settings: Settings) -> tuple[str, Line | None, Plan | None]:
    """The normalised number and, if it is one of ours still held by a line, the line and plan."""
    normalized = normalize_msisdn(msisdn, default_region=settings.default_region)
    found = session.execute(
        select(Line, Plan)
        .join(Plan, Plan.id == Line.plan_id)
        .where(Line.msisdn == normalized, Line.number_released_at.is_(None))
    ).first()
    if found is None:
        return normalized, None, None
    return normalized, found[0], found[1]
