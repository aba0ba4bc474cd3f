"""Agent API under /api/v1/agent: every request signed (see airtime.agents.signing);
money-moving calls need an Idempotency-Key. Errors are RFC 9457 problem details."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from airtime.accounts.models import LineState
from airtime.agents import service as agents
from airtime.agents.models import Agent, AgentSale
from airtime.api.v1.deps import Db, money_out, settings_of
from airtime.api.v1.schemas import MoneyOut, Strict
from airtime.db.session import unit_of_work
from airtime.errors import ValidationFailed
from airtime.topups import service as topups
from airtime.topups.models import AmountRule, Bundle, TopupOrder

router = APIRouter(prefix="/api/v1/agent", tags=["agents"])
BODY_BYTES_MAX = 16 * 1024


async def _raw_body(request: Request) -> bytes:
    """The exact bytes the signature covers (Starlette keeps them for the JSON parsing)."""
    body = await request.body()
    if len(body) > BODY_BYTES_MAX:
        raise ValidationFailed("The request body is larger than %(size)s bytes.", size=BODY_BYTES_MAX)
    return body


def signed_agent(
    request: Request,
    body: Annotated[bytes, Depends(_raw_body)],
    key_id: Annotated[str, Header(alias="X-Agent-Key", max_length=40, description="Your API key id.")] = "",
    timestamp: Annotated[
        str, Header(alias="X-Agent-Timestamp", max_length=12, description="Unix time in seconds.")
    ] = "",
    nonce: Annotated[
        str,
        Header(
            alias="X-Agent-Nonce",
            max_length=64,
            description="8 to 64 letters, digits, - or _; new per request.",
        ),
    ] = "",
    signature: Annotated[
        str,
        Header(
            alias="X-Agent-Signature",
            max_length=64,
            description="Hex HMAC-SHA256 of METHOD, path with query, timestamp, nonce and hex "
            "SHA-256 of the body, joined by newlines, keyed with your secret.",
        ),
    ] = "",
) -> Agent:
    """The agent behind a correctly signed, fresh, first-seen request within its rate limit.
    Checked in its own short transaction, so the seen signature and the request count stay
    recorded even when the request itself is then refused."""
    if not (key_id and timestamp and nonce and signature):
        raise agents.SignatureRefused(
            "Sign the request: X-Agent-Key, X-Agent-Timestamp, X-Agent-Nonce and X-Agent-Signature."
        )
    raw_path = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    path_with_query = raw_path.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
    with unit_of_work(request.app.state.session_factory) as session:
        return agents.authenticate(
            session,
            settings=settings_of(request),
            key_id=key_id,
            timestamp=timestamp,
            nonce=nonce,
            signature=signature,
            method=request.method,
            path_with_query=path_with_query,
            body=body,
        )


SignedAgent = Annotated[Agent, Depends(signed_agent)]
IdempotencyKey = Annotated[
    str,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=100,
        description="Required: a repeat with the same key and body returns the first sale; "
        "with another body it is refused (409).",
    ),
]


class AgentTopupIn(Strict):
    msisdn: str = Field(max_length=40, examples=["+447911123456"])
    amount_minor: int = Field(ge=1, le=10**9, examples=[1000])


class AgentBundleIn(Strict):
    msisdn: str = Field(max_length=40, examples=["+447911123456"])
    bundle_code: str = Field(max_length=40, examples=["DATA-5GB"])


class AgentTransactionOut(BaseModel):
    id: str = Field(description="The top-up's public id.")
    idempotency_key: str
    kind: str = Field(description="topup or bundle")
    status: str
    msisdn: str
    amount: MoneyOut
    bundle_code: str | None
    commission: MoneyOut = Field(description="What you earned on this sale.")
    float_debit: MoneyOut = Field(description="What left your float: amount minus commission.")
    receipt_number: str | None
    validity_after: date | None
    created_at: datetime
    credited_at: datetime | None


class AgentTransactionPage(BaseModel):
    items: list[AgentTransactionOut]
    next_before: int | None = Field(description="Pass as `before` to get the next (older) page.")


class BundleOfferOut(BaseModel):
    code: str
    name: str
    price: MoneyOut
    data_mb: int
    voice_minutes: int
    sms_count: int
    validity_days: int


class LookupOut(BaseModel):
    msisdn: str
    ours: bool = Field(description="Whether the number is one of this operator's lines.")
    topupable: bool
    state: str | None
    plan_code: str | None
    plan_name: str | None
    currency: str | None
    denominations: list[MoneyOut]
    custom_amount_min: MoneyOut | None = Field(description="Set when other amounts in a range are accepted.")
    custom_amount_max: MoneyOut | None
    bundles: list[BundleOfferOut]


class FloatOut(BaseModel):
    agent_code: str
    balance: MoneyOut
    credit_limit: MoneyOut
    available: MoneyOut
    daily_limit: MoneyOut | None
    sold_today: MoneyOut


def _transaction_out(session: Session, sale: AgentSale, order: TopupOrder) -> AgentTransactionOut:
    bundle = session.get(Bundle, order.bundle_id) if order.bundle_id else None
    return AgentTransactionOut(
        id=order.public_id,
        idempotency_key=sale.idempotency_key,
        kind="bundle" if bundle else "topup",
        status=order.status,
        msisdn=order.msisdn,
        amount=money_out(sale.amount_minor, sale.currency),
        bundle_code=bundle.code if bundle else None,
        commission=money_out(sale.commission_minor, sale.currency),
        float_debit=money_out(sale.float_debit_minor, sale.currency),
        receipt_number=order.receipt_number,
        validity_after=date.fromisoformat(order.validity_after) if order.validity_after else None,
        created_at=order.created_at,
        credited_at=order.credited_at,
    )


@router.get("/lookup", response_model=LookupOut)
def lookup(
    request: Request, agent: SignedAgent, session: Db, msisdn: Annotated[str, Query(max_length=40)]
) -> LookupOut:
    """Is this number ours, can it be topped up, and with which amounts and bundles."""
    normalized, line, plan = agents.lookup_line(session, msisdn=msisdn, settings=settings_of(request))
    if line is None or plan is None:
        return LookupOut(
            msisdn=normalized,
            ours=False,
            topupable=False,
            state=None,
            plan_code=None,
            plan_name=None,
            currency=None,
            denominations=[],
            custom_amount_min=None,
            custom_amount_max=None,
            bundles=[],
        )
    currency = plan.currency
    rule = session.get(AmountRule, currency)
    sellable = line.state != LineState.TERMINATED and currency == agent.currency
    return LookupOut(
        msisdn=normalized,
        ours=True,
        topupable=sellable,
        state=line.state,
        plan_code=plan.code,
        plan_name=plan.name,
        currency=currency,
        denominations=[money_out(value, currency) for value in (rule.denominations if rule else [])],
        custom_amount_min=money_out(rule.amount_min_minor, currency)
        if rule and rule.custom_allowed
        else None,
        custom_amount_max=money_out(rule.amount_max_minor, currency)
        if rule and rule.custom_allowed
        else None,
        bundles=[
            BundleOfferOut(
                code=bundle.code,
                name=bundle.name,
                price=money_out(bundle.price_minor, currency),
                data_mb=bundle.data_mb,
                voice_minutes=bundle.voice_minutes,
                sms_count=bundle.sms_count,
                validity_days=bundle.validity_days,
            )
            for bundle in topups.active_bundles(session, currency)
        ],
    )


def _sold(session: Session, response: Response, sale: agents.Sale) -> AgentTransactionOut:
    response.status_code = status.HTTP_200_OK if sale.replayed else status.HTTP_201_CREATED
    if sale.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return _transaction_out(session, sale.sale, sale.order)


@router.post("/topups", response_model=AgentTransactionOut, status_code=status.HTTP_201_CREATED)
def top_up(
    request: Request,
    response: Response,
    agent: SignedAgent,
    session: Db,
    idempotency_key: IdempotencyKey,
    body: AgentTopupIn,
) -> AgentTransactionOut:
    """Top up a line from your float; credited at once (201), or the first answer again (200)."""
    sale = agents.sell(
        session,
        agent=agent,
        msisdn=body.msisdn,
        amount_minor=body.amount_minor,
        idempotency_key=idempotency_key,
        settings=settings_of(request),
    )
    return _sold(session, response, sale)


@router.post("/bundles", response_model=AgentTransactionOut, status_code=status.HTTP_201_CREATED)
def buy_bundle(
    request: Request,
    response: Response,
    agent: SignedAgent,
    session: Db,
    idempotency_key: IdempotencyKey,
    body: AgentBundleIn,
) -> AgentTransactionOut:
    """Buy a bundle for a line from your float."""
    sale = agents.sell(
        session,
        agent=agent,
        msisdn=body.msisdn,
        bundle_code=body.bundle_code,
        idempotency_key=idempotency_key,
        settings=settings_of(request),
    )
    return _sold(session, response, sale)


@router.get("/transactions", response_model=AgentTransactionPage)
def transactions(
    agent: SignedAgent,
    session: Db,
    limit: Annotated[int, Query(ge=1, le=agents.SALES_PAGE_SIZE_MAX)] = 50,
    before: Annotated[int | None, Query(ge=1)] = None,
    idempotency_key: Annotated[str | None, Query(max_length=100)] = None,
) -> AgentTransactionPage:
    """Your sales, newest first; ``idempotency_key`` finds the one sale made with that key."""
    if idempotency_key is not None:
        sale, order = agents.sale_by_key(session, agent=agent, idempotency_key=idempotency_key)
        return AgentTransactionPage(items=[_transaction_out(session, sale, order)], next_before=None)
    rows = agents.list_sales(session, agent=agent, limit=limit, before_id=before)
    return AgentTransactionPage(
        items=[_transaction_out(session, sale, order) for sale, order in rows],
        next_before=rows[-1][0].id if len(rows) == limit else None,
    )


@router.get("/transactions/{transaction_id}", response_model=AgentTransactionOut)
def transaction(agent: SignedAgent, session: Db, transaction_id: str) -> AgentTransactionOut:
    """One of your sales by its id."""
    sale, order = agents.sale_by_order(session, agent=agent, public_id=transaction_id)
    return _transaction_out(session, sale, order)


@router.get("/float", response_model=FloatOut)
def float_balance(agent: SignedAgent, session: Db) -> FloatOut:
    """Your float: balance, credit limit, what is available, and today's sales against your limit."""
    state = agents.float_status(session, agent=agent)
    currency = state.currency
    return FloatOut(
        agent_code=agent.code,
        balance=money_out(state.balance_minor, currency),
        credit_limit=money_out(state.credit_limit_minor, currency),
        available=money_out(state.available_minor, currency),
        daily_limit=money_out(state.daily_limit_minor, currency)
        if state.daily_limit_minor is not None
        else None,
        sold_today=money_out(state.sold_today_minor, currency),
    )
