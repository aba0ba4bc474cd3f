"""API v1 endpoints: customers, tokens, lines. Thin: the rules live in the services."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from airtime.accounts import service as accounts
from airtime.accounts.models import AuthSession, Customer
from airtime.accounts.service import LineView
from airtime.api.v1.deps import Db, Me, money_out, settings_of
from airtime.api.v1.schemas import (
    CustomerOut,
    CustomerPatch,
    HistoryItemOut,
    HistoryPage,
    LineOut,
    PasswordChangeIn,
    PasswordResetIn,
    PasswordResetRequestIn,
    RegisterIn,
    TokenIn,
    TokenOut,
)
from airtime.security import token_hash

router = APIRouter(prefix="/api/v1")


def _line_out(line: LineView) -> LineOut:
    return LineOut(
        id=line.id,
        msisdn=line.msisdn,
        iccid=line.iccid,
        nickname=line.nickname,
        state=line.state,
        validity_date=line.validity_date,
        plan_code=line.plan_code,
        balance=money_out(line.balance_minor, line.currency),
        bonus=money_out(line.bonus_minor, line.currency),
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
        session,
        email=body.email,
        password=body.password,
        language=body.language,
        settings=settings_of(request),
    )
    return _customer_out(customer)


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenOut, tags=["auth"])
def create_token(body: TokenIn, request: Request, session: Db) -> TokenOut:
    """Exchange email and password for a bearer token (failures are rate limited)."""
    settings = settings_of(request)
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
    accounts.request_password_reset(session, email=body.email, settings=settings_of(request))
    return {"status": "accepted"}


@router.post("/password-resets/{token}", status_code=status.HTTP_204_NO_CONTENT, tags=["auth"])
def reset_password(token: str, body: PasswordResetIn, request: Request, session: Db) -> Response:
    """Use a reset link's token once to set a new password."""
    accounts.reset_password(session, token=token, new_password=body.password, settings=settings_of(request))
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
                amount=money_out(item.amount_minor, item.currency),
            )
            for item in items
        ],
        next_before=items[-1].entry_id if len(items) == limit else None,
    )
