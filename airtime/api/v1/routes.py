"""API v1 endpoints: customers, tokens, lines. Thin: the rules live in the services."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from airtime.accounts import service as accounts
from airtime.accounts.models import AuthSession, Customer
from airtime.accounts.service import LineView
from airtime.api.v1.schemas import (
    CustomerOut,
    CustomerPatch,
    HistoryItemOut,
    HistoryPage,
    LineOut,
    MoneyOut,
    PasswordChangeIn,
    PasswordResetIn,
    PasswordResetRequestIn,
    RegisterIn,
    TokenIn,
    TokenOut,
)
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.errors import AuthenticationFailed
from airtime.money import format_money
from airtime.security import token_hash

router = APIRouter(prefix="/api/v1")
bearer = HTTPBearer(auto_error=False, description="A token from POST /api/v1/tokens")


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def db(request: Request) -> Iterator[Session]:
    """One unit of work for the request; it commits before the response is built."""
    with unit_of_work(request.app.state.session_factory) as session:
        yield session


# scope="function": commit (or roll back) before the response leaves, so a client never
# sees success for work that then failed to commit.
Db = Annotated[Session, Depends(db, scope="function")]


@dataclass
class Caller:
    customer: Customer
    auth: AuthSession


def caller(
    session: Db, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Caller:
    if credentials is None:
        raise AuthenticationFailed("Send a bearer token: POST /api/v1/tokens gives one.")
    auth = accounts.resolve_session(session, token=credentials.credentials, kind="api")
    customer = session.get(Customer, auth.customer_id) if auth and auth.customer_id else None
    if auth is None or customer is None:
        raise AuthenticationFailed("The token is not valid or has expired.")
    return Caller(customer=customer, auth=auth)


Me = Annotated[Caller, Depends(caller)]


def _money(amount_minor: int, currency: str) -> MoneyOut:
    return MoneyOut(
        amount_minor=amount_minor, currency=currency, formatted=format_money(amount_minor, currency)
    )


def _line_out(line: LineView) -> LineOut:
    return LineOut(
        id=line.id,
        msisdn=line.msisdn,
        iccid=line.iccid,
        nickname=line.nickname,
        state=line.state,
        validity_date=line.validity_date,
        plan_code=line.plan_code,
        balance=_money(line.balance_minor, line.currency),
        bonus=_money(line.bonus_minor, line.currency),
    )


def _customer_out(customer: Customer) -> CustomerOut:
    return CustomerOut(
        id=customer.id, email=customer.email, language=customer.language, created_at=customer.created_at
    )


@router.post(
    "/customers", status_code=status.HTTP_201_CREATED, response_model=CustomerOut, tags=["customers"]
)
def register(body: RegisterIn, request: Request, session: Db) -> CustomerOut:
    """Create a customer account."""
    customer = accounts.register_customer(
        session, email=body.email, password=body.password, language=body.language, settings=_settings(request)
    )
    return _customer_out(customer)


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenOut, tags=["auth"])
def create_token(body: TokenIn, request: Request, session: Db) -> TokenOut:
    """Exchange email and password for a bearer token (failures are rate limited)."""
    settings = _settings(request)
    ip_address = request.client.host if request.client else ""
    customer = accounts.authenticate(
        session, email=body.email, password=body.password, ip_address=ip_address, settings=settings
    )
    lifetime = timedelta(days=settings.api_token_days)
    token = accounts.open_session(
        session,
        kind="api",
        lifetime=lifetime,
        customer_id=customer.id,
        ip_address=ip_address,
        user_agent=request.headers.get("user-agent", ""),
    )
    auth = session.get(AuthSession, token_hash(token))
    assert auth is not None
    return TokenOut(access_token=token, expires_at=auth.expires_at)


@router.delete("/tokens/current", status_code=status.HTTP_204_NO_CONTENT, tags=["auth"])
def revoke_token(me: Me, session: Db) -> Response:
    """Log out: the token stops working at once."""
    accounts.revoke_session_by_hash(session, token_hash=me.auth.token_hash)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", response_model=CustomerOut, tags=["customers"])
def get_me(me: Me) -> CustomerOut:
    return _customer_out(me.customer)


@router.patch("/me", response_model=CustomerOut, tags=["customers"])
def patch_me(body: CustomerPatch, me: Me, session: Db) -> CustomerOut:
    """Change the preferred language (``en`` or ``zh_Hans``)."""
    me.customer.language = accounts.set_language(session, customer_id=me.customer.id, language=body.language)
    return _customer_out(me.customer)


@router.post("/me/password", status_code=status.HTTP_204_NO_CONTENT, tags=["auth"])
def change_password(body: PasswordChangeIn, me: Me, session: Db) -> Response:
    """Change the password; every other session and token is revoked."""
    accounts.change_password(
        session,
        customer_id=me.customer.id,
        current_password=body.current_password,
        new_password=body.new_password,
        keep_session_hash=me.auth.token_hash,
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/password-resets", status_code=status.HTTP_202_ACCEPTED, tags=["auth"])
def request_password_reset(body: PasswordResetRequestIn, request: Request, session: Db) -> dict[str, str]:
    """Email a reset link if the account exists; the answer is the same either way."""
    accounts.request_password_reset(session, email=body.email, settings=_settings(request))
    return {"status": "accepted"}


@router.post("/password-resets/{token}", status_code=status.HTTP_204_NO_CONTENT, tags=["auth"])
def reset_password(token: str, body: PasswordResetIn, request: Request, session: Db) -> Response:
    """Use a reset link's token once to set a new password."""
    accounts.reset_password(session, token=token, new_password=body.password, settings=_settings(request))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/lines", response_model=list[LineOut], tags=["lines"])
def list_lines(me: Me, session: Db) -> list[LineOut]:
    return [_line_out(line) for line in accounts.customer_lines(session, customer_id=me.customer.id)]


@router.get("/lines/{line_id}", response_model=LineOut, tags=["lines"])
def get_line(line_id: int, me: Me, session: Db) -> LineOut:
    return _line_out(accounts.customer_line(session, customer_id=me.customer.id, line_id=line_id))


@router.get("/lines/{line_id}/history", response_model=HistoryPage, tags=["lines"])
def line_history(
    line_id: int,
    me: Me,
    session: Db,
    before: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> HistoryPage:
    """Money movements on the line, newest first; page with ``before``."""
    line = accounts.customer_line(session, customer_id=me.customer.id, line_id=line_id)
    items = accounts.line_history(session, line=line, before_entry_id=before, limit=limit)
    return HistoryPage(
        items=[
            HistoryItemOut(
                entry_id=item.entry_id,
                at=item.at,
                kind=item.kind,
                description=item.description,
                balance=item.balance,
                amount=_money(item.amount_minor, item.currency),
            )
            for item in items
        ],
        next_before=items[-1].entry_id if len(items) == limit else None,
    )
