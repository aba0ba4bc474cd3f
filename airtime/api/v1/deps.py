"""What every API v1 endpoint shares: the unit of work, the caller, money in responses."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from airtime.accounts import service as accounts
from airtime.accounts.models import AuthSession, Customer
from airtime.api.v1.schemas import MoneyOut
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.errors import AuthenticationFailed
from airtime.money import format_money

bearer = HTTPBearer(auto_error=False, description="A token from POST /api/v1/tokens")


def settings_of(request: Request) -> Settings:
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


def money_out(amount_minor: int, currency: str) -> MoneyOut:
    return MoneyOut(
        amount_minor=amount_minor, currency=currency, formatted=format_money(amount_minor, currency)
    )
