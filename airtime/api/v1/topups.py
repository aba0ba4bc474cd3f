"""API v1 top-ups: the same rules as the pages; money-moving calls need an Idempotency-Key."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from airtime.accounts import service as accounts
from airtime.accounts.models import Customer, Line
from airtime.api.v1.deps import Db, Me, bearer, money_out
from airtime.api.v1.schemas import MoneyOut, Strict
from airtime.config import Settings
from airtime.errors import AuthenticationFailed, NotFound, ValidationFailed
from airtime.i18n import require_language
from airtime.payments.base import PaymentProvider
from airtime.payments.registry import provider_named
from airtime.topups import service as topups
from airtime.topups.checkout import refresh_from_provider
from airtime.topups.models import Bundle, Channel, TopupOrder

router = APIRouter(prefix="/api/v1", tags=["top-ups"])
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=100,
        description="Required on calls that move money: a repeat with the same key returns the first answer.",
    ),
]


class TopupIn(Strict):
    msisdn: str = Field(max_length=40, examples=["+447911123456"])
    amount_minor: int | None = Field(default=None, ge=1, le=10**9, description="Omit when buying a bundle.")
    bundle_code: str | None = Field(default=None, max_length=40)
    provider: str = Field(default="sandbox", max_length=20)
    receipt_email: str = Field(default="", max_length=254)
    language: str = Field(default="en", max_length=20)


class TopupOut(BaseModel):
    id: str = Field(description="The order's public id; also its status page: /topup/orders/{id}")
    status: str
    channel: str
    msisdn: str
    amount: MoneyOut
    bonus: MoneyOut
    bundle_code: str | None
    payment_provider: str
    payment_url: str | None
    failure_code: str
    failure_message: str
    receipt_number: str | None
    balance_after: MoneyOut | None
    validity_after: date | None
    created_at: datetime
    paid_at: datetime | None
    credited_at: datetime | None


class BundleIn(Strict):
    bundle_code: str = Field(max_length=40)


class AllowanceOut(BaseModel):
    bundle_code: str
    data_mb_remaining: int
    voice_minutes_remaining: int
    sms_remaining: int
    expires_at: datetime


def _order_out(session: Session, order: TopupOrder) -> TopupOut:
    bundle = session.get(Bundle, order.bundle_id) if order.bundle_id else None
    return order_out(order, bundle.code if bundle else None)


def order_out(order: TopupOrder, bundle_code: str | None) -> TopupOut:
    """The API's view of an order."""
    return TopupOut(
        id=order.public_id,
        status=order.status,
        channel=order.channel,
        msisdn=order.msisdn,
        amount=money_out(order.amount_minor, order.currency),
        bonus=money_out(order.bonus_minor, order.currency),
        bundle_code=bundle_code,
        payment_provider=order.payment_provider,
        payment_url=order.payment_redirect_url if order.status == "awaiting_payment" else None,
        failure_code=order.failure_code,
        failure_message=topups.FAILURE_MESSAGES.get(order.failure_code, ""),
        receipt_number=order.receipt_number,
        balance_after=money_out(order.balance_after_minor, order.currency)
        if order.balance_after_minor is not None
        else None,
        validity_after=date.fromisoformat(order.validity_after) if order.validity_after else None,
        created_at=order.created_at,
        paid_at=order.paid_at,
        credited_at=order.credited_at,
    )


def _optional_customer(
    session: Db, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Customer | None:
    """Anyone may top up any number; a valid token links the top-up to the customer."""
    if credentials is None:
        return None
    auth = accounts.resolve_session(session, token=credentials.credentials, kind="api")
    if auth is None or auth.customer_id is None:
        raise AuthenticationFailed("The token is not valid or has expired.")
    return session.get(Customer, auth.customer_id)


def _providers(request: Request) -> dict[str, PaymentProvider]:
    providers: dict[str, PaymentProvider] = request.app.state.payment_providers
    return providers


@router.post("/topups", status_code=status.HTTP_201_CREATED, response_model=TopupOut)
def create_topup(
    body: TopupIn,
    request: Request,
    response: Response,
    session: Db,
    idempotency_key: IdempotencyKey,
    customer: Annotated[Customer | None, Depends(_optional_customer)],
) -> TopupOut:
    """Start a top-up; send the customer to ``payment_url``. A replay answers 200 with the same top-up."""
    settings: Settings = request.app.state.settings
    if (body.amount_minor is None) == (body.bundle_code is None):
        raise ValidationFailed("Give either amount_minor or bundle_code.", field="amount_minor")
    language = require_language(body.language)
    receipt_email = accounts.normalize_email(body.receipt_email) if body.receipt_email else ""
    line = topups.find_topupable_line(session, msisdn=body.msisdn, settings=settings)
    quote = topups.quote(
        session, line=line, channel=Channel.API, amount_minor=body.amount_minor, bundle_code=body.bundle_code
    )
    order, created = topups.create_order(
        session,
        quote=quote,
        channel=Channel.API,
        provider=provider_named(_providers(request), body.provider),
        idempotency_scope=f"api:{customer.id}" if customer else "api:anonymous",
        idempotency_key=idempotency_key,
        settings=settings,
        customer_id=customer.id if customer else None,
        receipt_email=receipt_email,
        language=language,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return _order_out(session, order)


@router.get("/topups/{public_id}", response_model=TopupOut)
def get_topup(public_id: str, request: Request, session: Db) -> TopupOut:
    """Where a top-up is now (asks the provider if it is still waiting for payment)."""
    refresh_from_provider(
        request.app.state.session_factory,
        public_id=public_id,
        providers=_providers(request),
        settings=request.app.state.settings,
    )
    return _order_out(session, topups.get_order(session, public_id))


def _own_line(session: Session, customer: Customer, line_id: int) -> Line:
    line = session.get(Line, line_id)
    if line is None or line.customer_id != customer.id:
        raise NotFound("No such line on your account.")
    return line


@router.get("/lines/{line_id}/topups", response_model=list[TopupOut])
def list_line_topups(line_id: int, me: Me, session: Db) -> list[TopupOut]:
    """The line's latest top-ups, newest first."""
    line = _own_line(session, me.customer, line_id)
    return [_order_out(session, order) for order in topups.line_orders(session, line_id=line.id)]


@router.post("/lines/{line_id}/bundles", status_code=status.HTTP_201_CREATED, response_model=AllowanceOut)
def buy_bundle(
    line_id: int, body: BundleIn, me: Me, session: Db, idempotency_key: IdempotencyKey
) -> AllowanceOut:
    """Buy a bundle from the line's balance (refused with nothing moved if the balance is short)."""
    line = _own_line(session, me.customer, line_id)
    allowance = topups.buy_bundle_from_balance(
        session, line=line, bundle_code=body.bundle_code, idempotency_key=idempotency_key
    )
    return AllowanceOut(
        bundle_code=body.bundle_code,
        data_mb_remaining=allowance.data_mb_remaining,
        voice_minutes_remaining=allowance.voice_minutes_remaining,
        sms_remaining=allowance.sms_remaining,
        expires_at=allowance.expires_at,
    )


@router.get("/lines/{line_id}/allowances", response_model=list[AllowanceOut])
def list_allowances(line_id: int, me: Me, session: Db) -> list[AllowanceOut]:
    line = _own_line(session, me.customer, line_id)
    return [
        AllowanceOut(
            bundle_code=bundle.code,
            data_mb_remaining=allowance.data_mb_remaining,
            voice_minutes_remaining=allowance.voice_minutes_remaining,
            sms_remaining=allowance.sms_remaining,
            expires_at=allowance.expires_at,
        )
        for allowance, bundle in topups.line_allowances(session, line_id=line.id)
    ]


class RedeemIn(Strict):
    pin: str = Field(max_length=40, examples=["1234 5678 9012 3456"])
    msisdn: str = Field(max_length=40, examples=["+447911123456"])
    language: str = Field(default="en", max_length=20)


@router.post(
    "/vouchers/redeem", status_code=status.HTTP_201_CREATED, response_model=TopupOut, tags=["vouchers"]
)
def redeem_voucher(
    body: RedeemIn,
    request: Request,
    response: Response,
    session: Db,
    idempotency_key: IdempotencyKey,
    customer: Annotated[Customer | None, Depends(_optional_customer)],
) -> TopupOut:
    """Redeem a voucher PIN onto any line. Wrong PINs are counted per line, customer and
    address; after too many the caller is locked out until the time the error gives."""
    from airtime.vouchers.service import redeem

    settings: Settings = request.app.state.settings
    line = topups.find_topupable_line(session, msisdn=body.msisdn, settings=settings)
    caller = f"customer:{customer.id}" if customer else f"ip:{request.client.host if request.client else '-'}"
    result = redeem(
        session,
        settings=settings,
        pin=body.pin,
        line=line,
        channel=Channel.VOUCHER,
        customer_id=customer.id if customer else None,
        ip_address=request.client.host if request.client else None,
        idempotency_scope=f"api-redeem:{caller}",
        idempotency_key=idempotency_key,
        language=require_language(body.language),
    )
    if result.replayed:
        response.status_code = status.HTTP_200_OK
    return _order_out(session, result.order)
