"""Customers, lines and authentication: the rules. Services flush, callers commit."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from airtime.accounts import ratelimit
from airtime.accounts.models import (
    AuthSession,
    Customer,
    Line,
    LineState,
    PasswordResetToken,
    Plan,
    StaffUser,
)
from airtime.accounts.passwords import check_password_rule, hash_password, needs_rehash, verify_password
from airtime.accounts.phone import normalize_msisdn, validate_iccid
from airtime.clock import utcnow
from airtime.config import Settings
from airtime.errors import AppError, AuthenticationFailed, Conflict, NotFound, RateLimited, ValidationFailed
from airtime.i18n import require_language
from airtime.ledger.models import AccountKind, Entry, LedgerAccount, Transfer
from airtime.ledger.service import open_account
from airtime.notifications.service import enqueue
from airtime.security import new_token, token_hash

STAFF_ROLES = ("care", "supervisor", "admin", "outlet", "agent")
HISTORY_PAGE_SIZE_MAX = 100


class LoginFailed(AuthenticationFailed):
    """Wrong email or password; the failure is counted even though the request fails."""

    persist_changes = True


class ResetLinkInvalid(AppError):
    status_code = 400
    code = "reset_link_invalid"
    title = "Reset link not usable"


def normalize_email(text: str) -> str:
    """The address in canonical form (lower-case), or a refusal a person understands."""
    try:
        result = validate_email((text or "").strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValidationFailed(
            "%(value)s is not a valid email address.", value=(text or "").strip()[:254], field="email"
        ) from exc
    return result.normalized.lower()


# --- customers -------------------------------------------------------------------------


def register_customer(
    session: Session, *, email: str, password: str, language: str, settings: Settings
) -> Customer:
    """Create a customer account and send the welcome email."""
    email = normalize_email(email)
    language = require_language(language)
    check_password_rule(password)
    if session.scalar(select(Customer.id).where(Customer.email == email)) is not None:
        raise Conflict(
            "An account with this email already exists. Log in or reset your password.", field="email"
        )
    now = utcnow()
    customer = Customer(
        email=email,
        password_hash=hash_password(password),
        language=language,
        created_at=now,
        password_changed_at=now,
    )
    session.add(customer)
    try:
        # The unique index decides a race between two registrations of one address.
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise Conflict(
            "An account with this email already exists. Log in or reset your password.", field="email"
        ) from exc
    enqueue(
        session,
        channel="email",
        recipient=email,
        template="welcome",
        language=language,
        context={"operator_name": settings.operator_name, "link": f"{settings.base_url}/login"},
        customer_id=customer.id,
    )
    return customer


def set_language(session: Session, *, customer_id: int, language: str) -> str:
    language = require_language(language)
    session.execute(update(Customer).where(Customer.id == customer_id).values(language=language))
    return language


@dataclass(frozen=True, slots=True)
class _LoginKeys:
    email: str
    ip: str


def _login_keys(prefix: str, email: str, ip_address: str) -> _LoginKeys:
    return _LoginKeys(
        email=f"{prefix}:email:{(email or '').strip().lower()[:200]}", ip=f"{prefix}:ip:{ip_address}"
    )


def _refuse_if_locked_out(session: Session, keys: _LoginKeys, settings: Settings) -> None:
    window = settings.login_window_minutes
    email_failures, until = ratelimit.failures(session, keys.email, window_minutes=window)
    ip_failures, _ = ratelimit.failures(session, keys.ip, window_minutes=window)
    if email_failures >= settings.login_failures_max or ip_failures >= settings.login_ip_failures_max:
        raise RateLimited(
            "Too many failed log-ins. Try again after %(until)s UTC or reset your password.",
            until=f"{until:%Y-%m-%d %H:%M}",
            retry_after=until.isoformat(),
        )


def _check_password(
    session: Session, keys: _LoginKeys, password_hash: str | None, password: str, settings: Settings
) -> None:
    """Verify (in constant time whether or not the user exists); count a failure."""
    if not verify_password(password_hash, password or ""):
        ratelimit.record_failure(session, keys.email, window_minutes=settings.login_window_minutes)
        ratelimit.record_failure(session, keys.ip, window_minutes=settings.login_window_minutes)
        raise LoginFailed("Wrong email or password.")


def authenticate(
    session: Session, *, email: str, password: str, ip_address: str, settings: Settings
) -> Customer:
    """The customer with these credentials; failures are counted per email and per IP."""
    keys = _login_keys("login", email, ip_address)
    _refuse_if_locked_out(session, keys, settings)
    try:
        normalized = normalize_email(email)
    except ValidationFailed:
        normalized = ""
    customer = session.scalar(select(Customer).where(Customer.email == normalized)) if normalized else None
    _check_password(session, keys, customer.password_hash if customer else None, password, settings)
    assert customer is not None
    if needs_rehash(customer.password_hash):
        customer.password_hash = hash_password(password)
    return customer


def authenticate_staff(
    session: Session, *, email: str, password: str, ip_address: str, settings: Settings
) -> StaffUser:
    """The active staff user with these credentials; failures are counted like customers'."""
    keys = _login_keys("staff-login", email, ip_address)
    _refuse_if_locked_out(session, keys, settings)
    normalized = (email or "").strip().lower()
    staff = session.scalar(select(StaffUser).where(StaffUser.email == normalized, StaffUser.active.is_(True)))
    _check_password(session, keys, staff.password_hash if staff else None, password, settings)
    assert staff is not None
    return staff


def change_password(
    session: Session,
    *,
    customer_id: int,
    current_password: str,
    new_password: str,
    keep_session_hash: str | None,
) -> None:
    """Change a password after checking the current one; other sessions are logged out."""
    customer = session.get(Customer, customer_id)
    if customer is None:
        raise NotFound("No such customer")
    if not verify_password(customer.password_hash, current_password):
        raise AuthenticationFailed("Your current password is not right.", field="current_password")
    _set_password(session, customer, new_password, keep_session_hash=keep_session_hash)


def _set_password(
    session: Session, customer: Customer, password: str, *, keep_session_hash: str | None
) -> None:
    now = utcnow()
    customer.password_hash = hash_password(password)
    customer.password_changed_at = now
    revoke = update(AuthSession).where(
        AuthSession.customer_id == customer.id, AuthSession.revoked_at.is_(None)
    )
    if keep_session_hash:
        revoke = revoke.where(AuthSession.token_hash != keep_session_hash)
    session.execute(revoke.values(revoked_at=now))
    session.execute(
        update(PasswordResetToken)
        .where(PasswordResetToken.customer_id == customer.id, PasswordResetToken.used_at.is_(None))
        .values(used_at=now)
    )


def request_password_reset(session: Session, *, email: str, settings: Settings) -> None:
    """Email a single-use reset link if the account exists; says nothing either way."""
    normalized = normalize_email(email)
    customer = session.scalar(select(Customer).where(Customer.email == normalized))
    if customer is None:
        return
    # At most a few emails per address per hour, so the form cannot be used to flood an inbox.
    sent = ratelimit.record_failure(session, f"reset:{normalized}", window_minutes=60)
    if sent > 3:
        return
    token = new_token()
    now = utcnow()
    session.add(
        PasswordResetToken(
            token_hash=token_hash(token),
            customer_id=customer.id,
            created_at=now,
            expires_at=now + timedelta(minutes=settings.password_reset_minutes),
        )
    )
    enqueue(
        session,
        channel="email",
        recipient=customer.email,
        template="password_reset",
        language=customer.language,
        context={
            "operator_name": settings.operator_name,
            "link": f"{settings.base_url}/reset-password/{token}",
            "minutes": settings.password_reset_minutes,
        },
        customer_id=customer.id,
    )


def check_reset_token(session: Session, *, token: str) -> PasswordResetToken:
    """The reset token if it can still be used, else a refusal that says why."""
    row = session.get(PasswordResetToken, token_hash(token or ""))
    if row is None:
        raise ResetLinkInvalid("This reset link is not valid. Ask for a new one.")
    if row.used_at is not None:
        raise ResetLinkInvalid("This reset link has already been used. Ask for a new one.")
    if row.expires_at <= utcnow():
        raise ResetLinkInvalid("This reset link has expired. Ask for a new one.")
    return row


def reset_password(session: Session, *, token: str, new_password: str, settings: Settings) -> Customer:
    """Use a reset link once: set the new password and log out every session."""
    check_password_rule(new_password)
    now = utcnow()
    hashed = token_hash(token or "")
    # Conditional update: of two requests with one link, exactly one wins.
    used = session.execute(
        update(PasswordResetToken)
        .where(
            PasswordResetToken.token_hash == hashed,
            PasswordResetToken.used_at.is_(None),
            PasswordResetToken.expires_at > now,
        )
        .values(used_at=now)
    )
    if used.rowcount != 1:  # type: ignore[attr-defined]
        check_reset_token(session, token=token)
        raise ResetLinkInvalid("This reset link has already been used. Ask for a new one.")
    row = session.get(PasswordResetToken, hashed)
    assert row is not None
    customer = session.get(Customer, row.customer_id)
    assert customer is not None
    _set_password(session, customer, new_password, keep_session_hash=None)
    enqueue(
        session,
        channel="email",
        recipient=customer.email,
        template="password_changed",
        language=customer.language,
        context={"operator_name": settings.operator_name, "link": f"{settings.base_url}/forgot-password"},
        customer_id=customer.id,
    )
    return customer


# --- sessions and tokens ---------------------------------------------------------------


def open_session(
    session: Session,
    *,
    kind: str,
    lifetime: timedelta,
    customer_id: int | None = None,
    staff_user_id: int | None = None,
    ip_address: str = "",
    user_agent: str = "",
) -> str:
    """Start a web session or API token; returns the secret to hand out (stored hashed)."""
    token = new_token()
    now = utcnow()
    session.add(
        AuthSession(
            token_hash=token_hash(token),
            kind=kind,
            customer_id=customer_id,
            staff_user_id=staff_user_id,
            created_at=now,
            expires_at=now + lifetime,
            ip_address=ip_address[:45],
            user_agent=user_agent[:200],
        )
    )
    return token


def resolve_session(session: Session, *, token: str, kind: str) -> AuthSession | None:
    """The live session for a token, or None if unknown, revoked or expired."""
    if not token:
        return None
    row = session.get(AuthSession, token_hash(token))
    if row is None or row.kind != kind or row.revoked_at is not None or row.expires_at <= utcnow():
        return None
    return row


def revoke_session(session: Session, *, token: str) -> None:
    revoke_session_by_hash(session, token_hash=token_hash(token))


def revoke_session_by_hash(session: Session, *, token_hash: str) -> None:
    session.execute(
        update(AuthSession)
        .where(AuthSession.token_hash == token_hash, AuthSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


# --- staff -----------------------------------------------------------------------------


def create_staff(
    session: Session,
    *,
    email: str,
    password: str,
    role: str,
    outlet_id: int | None = None,
    agent_id: int | None = None,
) -> StaffUser:
    email = normalize_email(email)
    if role not in STAFF_ROLES:
        raise ValidationFailed(
            "Unknown role %(role)s; choose one of: %(roles)s.",
            role=role,
            roles=", ".join(STAFF_ROLES),
            field="role",
        )
    if session.scalar(select(StaffUser.id).where(StaffUser.email == email)) is not None:
        raise Conflict("A staff user %(email)s already exists.", email=email, field="email")
    if role == "outlet" and outlet_id is None:
        raise ValidationFailed("Outlet staff belong to an outlet.", field="outlet")
    if role == "agent" and agent_id is None:
        raise ValidationFailed("Agent staff belong to an agent.", field="agent")
    staff = StaffUser(
        email=email,
        password_hash=hash_password(password),
        role=role,
        outlet_id=outlet_id,
        agent_id=agent_id,
        created_at=utcnow(),
    )
    session.add(staff)
    session.flush()
    return staff


# --- plans and lines -------------------------------------------------------------------


def add_line(
    session: Session,
    *,
    msisdn: str,
    plan_code: str,
    settings: Settings,
    customer_id: int | None = None,
    iccid: str | None = None,
    state: str = LineState.ACTIVE,
    validity_date: date | None = None,
    nickname: str = "",
) -> Line:
    """Provision a line with its main and bonus balances in the ledger."""
    msisdn = normalize_msisdn(msisdn, default_region=settings.default_region)
    iccid = validate_iccid(iccid) if iccid else None
    if state not in LineState.ALL:
        raise ValidationFailed("Unknown line state %(state)s.", state=state)
    plan = session.scalar(select(Plan).where(Plan.code == plan_code))
    if plan is None:
        raise NotFound("No plan %(plan)s.", plan=plan_code)
    holder = session.execute(
        select(Line.state, Line.state_changed_at, Plan.quarantine_days)
        .join(Plan, Plan.id == Line.plan_id)
        .where(Line.msisdn == msisdn, Line.number_released_at.is_(None))
    ).first()
    if holder is not None:
        if holder.state == LineState.TERMINATED:
            raise Conflict(
                "The number %(msisdn)s is in quarantine until %(date)s.",
                msisdn=msisdn,
                date=(holder.state_changed_at + timedelta(days=holder.quarantine_days)).date().isoformat(),
                field="msisdn",
            )
        raise Conflict("The number %(msisdn)s is already in use.", msisdn=msisdn, field="msisdn")
    # Account codes carry a fresh suffix: a number recycled after quarantine gets new accounts.
    suffix = uuid.uuid4().hex[:12]
    main_account_id = open_account(
        session,
        code=f"line:{msisdn}:{suffix}:main",
        kind=AccountKind.CUSTOMER_MAIN,
        currency=plan.currency,
        name=f"Main balance of {msisdn}",
        balance_tracked=True,
        floor_minor=0,
    )
    bonus_account_id = open_account(
        session,
        code=f"line:{msisdn}:{suffix}:bonus",
        kind=AccountKind.CUSTOMER_BONUS,
        currency=plan.currency,
        name=f"Bonus balance of {msisdn}",
        balance_tracked=True,
        floor_minor=0,
    )
    now = utcnow()
    line = Line(
        customer_id=customer_id,
        msisdn=msisdn,
        iccid=iccid,
        plan_id=plan.id,
        state=state,
        validity_date=validity_date,
        state_changed_at=now,
        main_account_id=main_account_id,
        bonus_account_id=bonus_account_id,
        nickname=nickname[:60],
        created_at=now,
    )
    session.add(line)
    session.flush()
    return line


@dataclass(frozen=True, slots=True)
class LineView:
    id: int
    msisdn: str
    iccid: str | None
    nickname: str
    state: str
    validity_date: date | None
    plan_code: str
    plan_name: str
    plan_name_zh: str
    currency: str
    balance_minor: int
    bonus_minor: int


def _line_views(session: Session, *conditions: object) -> list[LineView]:
    main = aliased(LedgerAccount)
    bonus = aliased(LedgerAccount)
    rows = session.execute(
        select(Line, Plan, main.balance_minor, bonus.balance_minor)
        .join(Plan, Plan.id == Line.plan_id)
        .join(main, main.id == Line.main_account_id)
        .join(bonus, bonus.id == Line.bonus_account_id)
        .where(*conditions)  # type: ignore[arg-type]
        .order_by(Line.id)
    ).all()
    return [
        LineView(
            id=line.id,
            msisdn=line.msisdn,
            iccid=line.iccid,
            nickname=line.nickname,
            state=line.state,
            validity_date=line.validity_date,
            plan_code=plan.code,
            plan_name=plan.name,
            plan_name_zh=plan.name_zh or plan.name,
            currency=plan.currency,
            balance_minor=main_balance,
            bonus_minor=bonus_balance,
        )
        for line, plan, main_balance, bonus_balance in rows
    ]


def customer_lines(session: Session, *, customer_id: int) -> list[LineView]:
    return _line_views(session, Line.customer_id == customer_id)


def customer_line(session: Session, *, customer_id: int, line_id: int) -> LineView:
    """One of the customer's own lines; another customer's line is "not found", not "forbidden"."""
    views = _line_views(session, Line.customer_id == customer_id, Line.id == line_id)
    if not views:
        raise NotFound("No such line on your account.")
    return views[0]


def line_view(session: Session, *, line_id: int) -> LineView | None:
    """Any one line with its plan and balances (phone channels read the caller's own line)."""
    views = _line_views(session, Line.id == line_id)
    return views[0] if views else None


@dataclass(frozen=True, slots=True)
class HistoryItem:
    entry_id: int
    at: datetime
    kind: str
    description: str
    balance: str  # "main" or "bonus"
    amount_minor: int
    currency: str


def line_history(
    session: Session, *, line: LineView, before_entry_id: int | None = None, limit: int = 50
) -> list[HistoryItem]:
    """Money movements on a line's balances, newest first, a page at a time (keyset paging)."""
    line_row = session.get(Line, line.id)
    assert line_row is not None
    accounts = {line_row.main_account_id: "main", line_row.bonus_account_id: "bonus"}
    query = (
        select(
            Entry.id,
            Entry.created_at,
            Entry.account_id,
            Entry.amount_minor,
            Transfer.kind,
            Transfer.description,
        )
        .join(Transfer, Transfer.id == Entry.transfer_id)
        .where(Entry.account_id.in_(list(accounts)))
        .order_by(Entry.id.desc())
        .limit(max(1, min(limit, HISTORY_PAGE_SIZE_MAX)))
    )
    if before_entry_id is not None:
        query = query.where(Entry.id < before_entry_id)
    return [
        HistoryItem(
            entry_id=entry_id,
            at=created_at,
            kind=kind,
            description=description,
            balance=accounts[account_id],
            amount_minor=amount_minor,
            currency=line.currency,
        )
        for entry_id, created_at, account_id, amount_minor, kind, description in session.execute(query)
    ]


def count_customers(session: Session) -> int:
    return int(session.scalar(select(func.count(Customer.id))) or 0)
