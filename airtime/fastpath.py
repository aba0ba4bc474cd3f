"""The fast path: the requests that carry a busy day's money, on PostgreSQL.

Starting an API top-up, approving a sandbox payment, Stripe's "paid" webhook and redeeming
a voucher PIN by API run here in a few hand-written statements over asyncpg, on the event
loop, instead of through the ORM in a worker thread (about ten times the CPU per request).

The fast path takes only the common case and decides nothing on its own: the amount
check, the bonus, the validity date, the receipt messages and the transfer's content
come from the same functions the ORM path calls. Anything else is handed over,
untouched, to the app, which answers exactly as it always does. That covers bad input,
a refusal, a replayed key or event, a line that is not active, a bundle, a signed-in
caller, and a provider other than the sandbox (or Stripe, for webhooks).

Money moves in one statement, with no transaction around it: what crediting needs (the
order or voucher, the line's validity and balance, its plan) is read first without locks
(or, for the approval of a top-up started in the same process, taken from its start),
the decisions are made, then one statement locks the rows in the ORM path's order
(payment or voucher, then order, then line with its balance) and writes everything only if
they are still as read. If anything changed in between, it writes nothing and the request
is handed over, so the app does it on the new facts. A statement that fails is rolled back
whole, so a hand-over never leaves anything the fast path wrote.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import parse_qs, quote

import asyncpg
import structlog
from prometheus_client import Counter
from sqlalchemy import make_url
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airtime.accounts.models import LineState, Plan
from airtime.accounts.phone import normalize_msisdn
from airtime.accounts.service import normalize_email
from airtime.api.problems import internal_error
from airtime.api.v1.topups import order_out
from airtime.clock import today, utcnow
from airtime.config import Settings
from airtime.db.base import as_read
from airtime.errors import AppError
from airtime.i18n import require_language
from airtime.ledger.models import AccountKind
from airtime.ledger.service import Leg, TransferRequest
from airtime.notifications.service import outbox_row, wake_senders
from airtime.payments.base import PaymentOutcome, PaymentProvider
from airtime.payments.sandbox import SandboxProvider
from airtime.payments.stripe_provider import PAID_EVENTS, StripeProvider
from airtime.payments.webhooks import check_event_age
from airtime.topups import service as topups
from airtime.topups.models import CREDITED_ONCE_WHERE, AmountRule, Channel, OrderStatus, Promotion, TopupOrder
from airtime.topups.promotions import choose_bonus
from airtime.topups.validity import validity_after_days, validity_after_topup
from airtime.vouchers.models import VoucherState
from airtime.vouchers.pins import hash_pin, normalize_pin, pin_key
from airtime.vouchers.service import attempt_keys
from airtime.web.context import CSRF_COOKIE, CSRF_FIELD, SESSION_COOKIE, read_signed_cookie

BODY_LENGTH_MAX = 16_384
TOPUPS_PATH = "/api/v1/topups"
REDEEM_PATH = "/api/v1/vouchers/redeem"
SANDBOX_PAY_PREFIX = "/sandbox/pay/"
WEBHOOKS_PREFIX = "/webhooks/"
SANDBOX_METHOD = "sandbox card"
_POOL_CONNECTIONS_MIN = 2
_PAYABLE = list(OrderStatus.PAYABLE)
# Top-ups started here and kept for their approval (see :class:`_Started`): at most so many,
# for so long (an approval later than that reads what it needs again).
_STARTED_KEPT_MAX = 4_096
_STARTED_KEPT_SECONDS = 300.0
log = structlog.get_logger(__name__)
FAST_PATH = Counter(
    "airtime_fast_path_requests_total",
    "Requests the fast path served, or handed over to the app",
    ["route", "outcome"],
)


class HandOver(Exception):
    """Not the common case: the app answers this request."""


@dataclass(frozen=True, slots=True)
class _Started:
    """A top-up this process started, kept for its approval, which usually follows on the same
    keep-alive connection: the order and ``facts``, its line and plan as the quote read them
    (by the names of :data:`_READ_PAID`'s columns). The approval then writes in one statement
    without reading them again; that statement checks every fact it relies on that can change
    (the payment, the order, the line's state, validity, balance and plan), so a stale one
    costs a read, never a wrong credit."""

    order: TopupOrder
    facts: Mapping[str, Any]
    kept_at: float


@dataclass(frozen=True, slots=True)
class _PaidEvent:
    """A "paid" event as its crediting statement ``write`` takes it (``amount`` is a
    provider's amount and currency, empty for the sandbox, whose payment row holds them)."""

    write: str
    reference: str
    provider: str
    event_id: str
    event_type: str
    payload: str
    occurred_at: datetime
    method: str
    now: datetime
    amount: tuple[int | None, str | None] | tuple[()] = ()


@dataclass(frozen=True, slots=True)
class _Route:
    """What the metrics middleware labels a request with (the app's route template)."""

    path: str


_ROUTES = {
    TOPUPS_PATH: _Route(TOPUPS_PATH),
    REDEEM_PATH: _Route(REDEEM_PATH),
    SANDBOX_PAY_PREFIX: _Route(SANDBOX_PAY_PREFIX + "{reference}"),
    WEBHOOKS_PREFIX: _Route(WEBHOOKS_PREFIX + "{provider_name}"),
}


async def _nothing_to_reset(connection: asyncpg.Connection) -> None:
    """The fast path leaves no session state behind (no settings, cursors, listeners or
    advisory locks; an open transaction is rolled back by the pool itself), so a
    connection goes back to the pool without asyncpg's reset query: a round trip and a
    transaction saved per request."""


def asyncpg_dsn(database_url: str) -> str:
    """The SQLAlchemy URL (``postgresql+psycopg://...``) as a plain libpq DSN."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class FastPath:
    """The fast path of one app: its connection pool and its handlers."""

    def __init__(self, settings: Settings, providers: dict[str, PaymentProvider]) -> None:
        self.settings = settings
        self.providers = providers
        sandbox = providers.get("sandbox")
        self.sandbox = sandbox if isinstance(sandbox, SandboxProvider) else None
        self.pin_key = pin_key(settings)
        self._dsn = asyncpg_dsn(settings.database_url)
        self._pool: asyncio.Task[asyncpg.Pool] | None = None
        self._pool_loop: asyncio.AbstractEventLoop | None = None
        # Operator accounts are never renumbered: their ids are kept once read.
        self._accounts: dict[str, int] = {}
        # By payment reference, oldest first.
        self._started: OrderedDict[str, _Started] = OrderedDict()
        # Called with each new pool connection (e.g. to add a query logger when tracing).
        self.on_connect: list[Callable[[asyncpg.Connection], None]] = []

    async def pool(self) -> asyncpg.Pool:
        # A pool belongs to one event loop; a test client may run the app on a new one.
        loop = asyncio.get_running_loop()
        failed = self._pool is not None and self._pool.done() and self._pool.exception() is not None
        if self._pool is None or self._pool_loop is not loop or failed:
            await self.close()
            self._pool_loop = loop
            self._pool = loop.create_task(self._open_pool())
        return await self._pool

    async def _open_pool(self) -> asyncpg.Pool:
        return await asyncpg.create_pool(
            self._dsn,
            min_size=min(_POOL_CONNECTIONS_MIN, self.settings.database_pool_size),
            max_size=self.settings.database_pool_size,
            reset=_nothing_to_reset,
            init=self._connected,
            # Each statement here has one good plan whatever its parameters (every table is
            # reached by a unique or partial index, arrays are a row or two), so it is planned
            # once per connection. Left to choose, PostgreSQL planned the crediting statement
            # afresh on every call (it estimates its arrays at 10 rows each time): 0.25 ms of
            # server CPU per top-up. The plans are renewed when ANALYZE changes statistics.
            server_settings={"plan_cache_mode": "force_generic_plan"},
        )

    async def _connected(self, connection: asyncpg.Connection) -> None:
        for hook in self.on_connect:
            hook(connection)

    async def close(self) -> None:
        task, self._pool = self._pool, None
        if task is None or not task.done() or task.cancelled() or task.exception() is not None:
            return
        pool = task.result()
        if self._pool_loop is asyncio.get_running_loop():
            await pool.close()
        else:
            pool.terminate()

    # --- starting a top-up -------------------------------------------------------------

    async def create_topup(self, scope: Scope, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """``POST /api/v1/topups`` by an anonymous caller, for an amount, through the sandbox."""
        headers = _headers(scope)
        key = headers.get(b"idempotency-key", b"").decode("latin-1")
        if b"authorization" in headers or not 1 <= len(key) <= topups.IDEMPOTENCY_KEY_LENGTH_MAX:
            raise HandOver
        fields = _json_object(
            headers, body, {"msisdn", "amount_minor", "provider", "receipt_email", "language"}
        )
        msisdn, amount = fields.get("msisdn"), fields.get("amount_minor")
        if (
            self.sandbox is None
            or fields.get("provider", "sandbox") != "sandbox"
            or not isinstance(msisdn, str)
            or len(msisdn) > 40
            or type(amount) is not int
            or not 1 <= amount <= 10**9
        ):
            raise HandOver
        language = require_language(_text(fields, "language", "en", 20))
        email = _text(fields, "receipt_email", "", 254)
        receipt_email = normalize_email(email) if email else ""
        normalized = normalize_msisdn(msisdn, default_region=self.settings.default_region)
        now = utcnow()
        pool = await self.pool()
        async with pool.acquire() as connection:
            found = await connection.fetchrow(_TOPUP_QUOTE, normalized, now, amount)
            if found is None or found["state"] == LineState.TERMINATED or found["denominations"] is None:
                raise HandOver
            rule = as_read(
                AmountRule,
                currency=found["currency"],
                denominations=json.loads(found["denominations"]),
                amount_min_minor=found["amount_min_minor"],
                amount_max_minor=found["amount_max_minor"],
                custom_allowed=found["custom_allowed"],
            )
            topups.check_amount(rule, amount)
            bonus = choose_bonus(
                _promotions(found["promotions"]),
                amount_minor=amount,
                channel=Channel.API,
                topped_up_before=lambda: bool(found["topped_up_before"]),
            )
            order = as_read(
                TopupOrder,
                public_id=secrets.token_urlsafe(16),
                idempotency_scope="api:anonymous",
                idempotency_key=key,
                channel=Channel.API,
                line_id=found["id"],
                msisdn=found["msisdn"],
                customer_id=None,
                currency=found["currency"],
                amount_minor=amount,
                bundle_id=None,
                bonus_minor=bonus.bonus_minor,
                promotion_id=bonus.promotion.id if bonus.promotion else None,
                payment_provider=self.sandbox.name,
                status=OrderStatus.AWAITING_PAYMENT,
                failure_code="",
                receipt_email=receipt_email,
                language=language,
                payment_method="",
                refunded_minor=0,
                refund_shortfall_minor=0,
                created_at=now,
                awaiting_payment_at=now,
            )
            order.request_hash = topups.order_request_hash(
                channel=Channel.API,
                line_id=order.line_id,
                amount_minor=amount,
                bundle_code=None,
                provider_name=self.sandbox.name,
                customer_id=None,
            )
            request = topups.payment_request(order, self.settings)
            order.payment_reference = self.sandbox.new_reference()
            order.payment_redirect_url = self.sandbox.payment_url(order.payment_reference)
            order_id = await connection.fetchval(
                _START_TOPUP,
                order.public_id,
                order.idempotency_scope,
                order.idempotency_key,
                order.request_hash,
                order.line_id,
                order.msisdn,
                order.currency,
                order.amount_minor,
                order.bonus_minor,
                order.promotion_id,
                order.payment_provider,
                order.payment_reference,
                order.payment_redirect_url,
                order.receipt_email,
                order.language,
                now,
                request.description[:200],
                request.return_url,
            )
        if order_id is None:
            raise HandOver  # the key was used before: the app replays or refuses
        order.id = order_id
        if found["state"] == LineState.ACTIVE:
            self._keep_started(order, {**found, "return_url": request.return_url, "email": None})
        return _json_response(201, order_out(order, None).model_dump_json().encode())

    def _keep_started(self, order: TopupOrder, facts: Mapping[str, Any]) -> None:
        now = time.monotonic()
        started = self._started
        started[str(order.payment_reference)] = _Started(order, facts, now)
        while (
            len(started) > _STARTED_KEPT_MAX
            or next(iter(started.values())).kept_at < now - _STARTED_KEPT_SECONDS
        ):
            started.popitem(last=False)

    def _take_started(self, reference: str) -> _Started | None:
        started = self._started.pop(reference, None)
        if started is None or started.kept_at < time.monotonic() - _STARTED_KEPT_SECONDS:
            return None
        return started

    # --- the sandbox's approval ---------------------------------------------------------

    async def approve_sandbox(
        self, scope: Scope, body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """``POST /sandbox/pay/{reference}`` with ``decision=approve``: the payment event is
        stored, the order is paid and credited, in one transaction."""
        if self.sandbox is None:
            raise HandOver
        reference = scope["path"][len(SANDBOX_PAY_PREFIX) :]
        form = _form(scope, body)
        if form.get("decision") != "approve" or not 1 <= len(reference) <= 120:
            raise HandOver
        request = Request(scope)
        expected = read_signed_cookie(request, CSRF_COOKIE, self.settings)
        submitted = form.get(CSRF_FIELD, "")
        if not expected or not submitted or not hmac.compare_digest(submitted, expected):
            raise HandOver
        now = utcnow()
        found = await self._credit_paid_event(
            _READ_SANDBOX_PAID,
            _PaidEvent(
                write=_WRITE_SANDBOX_PAID,
                reference=reference,
                provider=self.sandbox.name,
                event_id=f"{reference}:succeeded",
                event_type="payment.succeeded",
                payload="{}",
                occurred_at=now,
                method=SANDBOX_METHOD,
                now=now,
            ),
            started=self._take_started(reference),
        )
        return (
            303,
            [(b"location", quote(found["return_url"], safe=_URL_SAFE).encode()), (b"content-length", b"0")],
            b"",
        )

    # --- a provider's webhook -----------------------------------------------------------

    async def provider_webhook(
        self, scope: Scope, body: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """``POST /webhooks/stripe`` with a verified "paid" event for a credit top-up: the
        event stored once, the order paid and credited, in one transaction. (Stripe's
        signature is checked without a network call; PayPal's is not, so it stays with the
        app.)"""
        name = scope["path"][len(WEBHOOKS_PREFIX) :]
        provider = self.providers.get(name)
        if not isinstance(provider, StripeProvider):
            raise HandOver
        # Only "paid" events are parsed here: reading a refund event asks Stripe over the
        # network, which must not block the event loop. (The type is read before the
        # signature is checked only to choose; the app checks it for everything else.)
        try:
            event_type = json.loads(body).get("type")
        except (ValueError, AttributeError) as error:
            raise HandOver from error
        if event_type not in PAID_EVENTS:
            raise HandOver
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        event = provider.parse_webhook(body, headers)
        if event is None or event.outcome != PaymentOutcome.SUCCEEDED:
            raise HandOver
        check_event_age(event, self.settings)
        now = utcnow()
        await self._credit_paid_event(
            _READ_PROVIDER_PAID,
            _PaidEvent(
                write=_WRITE_PROVIDER_PAID,
                reference=event.reference,
                provider=name,
                event_id=event.event_id[:120],
                event_type=event.event_type[:80],
                payload=json.dumps(dict(event.payload)),
                occurred_at=event.occurred_at,
                amount=(event.amount_minor, event.currency),
                method=event.method[:40],
                now=now,
            ),
        )
        # As the app's webhook endpoint answers it (Starlette's compact JSON).
        answer = {"status": "processed", "change": "paid", "credited": True}
        return _json_response(200, json.dumps(answer, separators=(",", ":")).encode())

    # --- redeeming a voucher ------------------------------------------------------------

    async def redeem_voucher(self, scope: Scope, body: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """``POST /api/v1/vouchers/redeem`` by an anonymous caller with a PIN that is good."""
        headers = _headers(scope)
        key = headers.get(b"idempotency-key", b"").decode("latin-1")
        if b"authorization" in headers or not 1 <= len(key) <= topups.IDEMPOTENCY_KEY_LENGTH_MAX:
            raise HandOver
        fields = _json_object(headers, body, {"pin", "msisdn", "language"})
        pin, msisdn = fields.get("pin"), fields.get("msisdn")
        if not isinstance(pin, str) or not isinstance(msisdn, str) or len(pin) > 40 or len(msisdn) > 40:
            raise HandOver
        digits = normalize_pin(pin)
        if digits is None:
            raise HandOver  # a wrong PIN is counted by the app
        normalized = normalize_msisdn(msisdn, default_region=self.settings.default_region)
        language = require_language(_text(fields, "language", "en", 20))
        client = scope.get("client")
        ip_address = client[0] if client else None
        scope_name = f"api-redeem:ip:{ip_address or '-'}"
        now, day = utcnow(), today()
        pool = await self.pool()
        # No transaction: one read, then one statement that writes only if what was read still
        # holds (or nothing: the app answers then, as for any refusal).
        async with pool.acquire() as connection:
            won = await connection.fetchrow(
                _READ_REDEMPTION,
                normalized,
                hash_pin(self.pin_key, digits),
                now,
                day,
                scope_name,
                key,
                f"ip:{ip_address}" if ip_address else "",
            )
            if won is None:
                # No such line or not active, a lockout, a replay, or a PIN that is not good.
                raise HandOver
            bonus = choose_bonus(
                _promotions(won["promotions"]),
                amount_minor=won["face_value_minor"],
                channel=Channel.VOUCHER,
                topped_up_before=lambda: bool(won["topped_up_before"]),
            )
            order = topups.paid_order(
                line_id=won["line_id"],
                msisdn=won["msisdn"],
                currency=won["currency"],
                amount_minor=won["face_value_minor"],
                bonus=bonus,
                channel=Channel.VOUCHER,
                provider_name=topups.VOUCHER_PROVIDER,
                payment_reference=str(won["serial"]),
                idempotency_scope=scope_name,
                idempotency_key=key,
                customer_id=None,
                language=language,
                now=now,
                as_row=True,
            )
            order.id = won["order_id"]
            plan = _plan(won)
            validity_days = won["validity_days"]
            keys = attempt_keys(line_id=order.line_id, customer_id=None, ip_address=ip_address)
            await self._credit(
                connection,
                order,
                won,
                funding_code=_operator_code(AccountKind.VOUCHER_LIABILITY, order.currency),
                validity=validity_after_days(
                    plan, current=won["validity_date"], today=day, days=validity_days
                )
                if validity_days is not None
                else validity_after_topup(
                    plan, current=won["validity_date"], today=day, amount_minor=order.amount_minor
                ),
                now=now,
                statement=_WRITE_REDEMPTION,
                more=(
                    order.public_id,
                    order.idempotency_scope,
                    order.idempotency_key,
                    order.request_hash,
                    order.channel,
                    order.msisdn,
                    order.amount_minor,
                    order.bonus_minor,
                    order.promotion_id,
                    order.payment_provider,
                    order.payment_reference,
                    order.language,
                    won["id"],
                    won["serial"],
                    keys,
                    won["batch_id"],
                    VoucherState.ACTIVE,
                    VoucherState.REDEEMED,
                    f"{Channel.VOUCHER}:ip {ip_address or '-'}",
                    f"line {order.msisdn}, order {order.public_id}",
                    day,
                    won["validity_date"],
                    won["main_balance_minor"],
                    won["plan_id"],
                ),
            )
        wake_senders.set()
        return _json_response(201, order_out(order, None).model_dump_json().encode())

    # --- the one crediting step, as statements ------------------------------------------

    async def _credit_paid_event(
        self, read: str, event: _PaidEvent, *, started: _Started | None = None
    ) -> Mapping[str, Any]:
        """Store a "paid" event once, then pay and credit its order: one read (none if the
        order was ``started`` here), then one statement that writes only if what was read still
        holds (``read`` and the event's statement are the sandbox's or a provider's, which also
        sends the event's amount); the facts it acted on, for the answer."""
        pool = await self.pool()
        async with pool.acquire() as connection:
            found: Mapping[str, Any] | None = None
            if started is not None:
                try:
                    await self._pay_and_credit(connection, started.order, started.facts, event)
                    found = started.facts
                except HandOver:
                    pass  # something it relied on moved since the top-up started: read it all again
            if found is None:
                found = await connection.fetchrow(
                    read, event.reference, event.provider, _PAYABLE, event.event_id, *event.amount
                )
                if found is None:
                    raise HandOver  # unknown, a duplicate, a mismatch, a bundle or a line not active
                await self._pay_and_credit(connection, _order(found), found, event)
        wake_senders.set()
        return found

    async def _pay_and_credit(
        self, connection: asyncpg.Connection, order: TopupOrder, found: Mapping[str, Any], event: _PaidEvent
    ) -> None:
        """The event's statement for ``order``, on the ``found`` facts of its line."""
        order.payment_method = event.method
        order.paid_at = event.now
        await self._credit(
            connection,
            order,
            found,
            funding_code=_operator_code(
                AccountKind.PAYMENT_CLEARING, order.currency, qualifier=order.payment_provider
            ),
            validity=validity_after_topup(
                _plan(found),
                current=found["validity_date"],
                today=today(),
                amount_minor=order.amount_minor,
            ),
            now=event.now,
            statement=event.write,
            more=(
                event.reference,
                event.provider,
                event.event_id,
                _PAYABLE,
                event.event_type,
                event.payload,
                event.occurred_at,
                found["validity_date"],
                found["main_balance_minor"],
                found["plan_id"],
                *event.amount,
            ),
        )

    async def _credit(
        self,
        connection: asyncpg.Connection,
        order: TopupOrder,
        found: Mapping[str, Any],
        *,
        funding_code: str,
        validity: date | None,
        now: datetime,
        statement: str,
        more: Sequence[Any],
    ) -> None:
        """What :func:`airtime.topups.service.credit` writes for a paid credit top-up of an
        active line, as one ``statement`` (with ``more`` parameters after the credit's): it
        takes its locks itself and writes nothing (a hand-over) unless what ``found`` read
        of the order and the line still holds."""
        order.status = OrderStatus.CREDITED
        order.credited_at = now
        order.receipt_number = topups.receipt_number(order.id, now)
        main_id, bonus_id = found["main_account_id"], found["bonus_account_id"]
        legs = [
            Leg(await self._account(connection, funding_code), -order.amount_minor),
            Leg(main_id, order.amount_minor),
        ]
        if order.bonus_minor:
            expense = _operator_code(AccountKind.PROMOTION_EXPENSE, order.currency)
            legs += [Leg(await self._account(connection, expense), -order.bonus_minor)]
            legs += [Leg(bonus_id, order.bonus_minor)]
        transfer = TransferRequest(
            transfer_id=f"topup:{order.id}:credit",
            kind="topup",
            currency=order.currency,
            legs=tuple(legs),
            description=f"Top-up {order.receipt_number}",
            details={"order": order.public_id, "channel": order.channel},
        )
        order.balance_after_minor = found["main_balance_minor"] + order.amount_minor
        order.validity_after = validity.isoformat() if validity else None
        context = topups.receipt_context_of(order, None, self.settings)
        messages = [
            outbox_row(**message, now=now)
            for message in topups.receipt_messages(
                order, context, email=order.receipt_email or found["email"] or ""
            )
        ]
        tracked = sorted(
            (leg.account_id, leg.amount_minor) for leg in legs if leg.account_id in (main_id, bonus_id)
        )
        balances = await connection.fetch(
            statement,
            order.id,
            now,
            order.payment_method,
            order.receipt_number,
            order.balance_after_minor,
            order.validity_after,
            transfer.transfer_id,
            transfer.kind,
            transfer.currency,
            transfer.content_hash(),
            transfer.description,
            json.dumps(dict(transfer.details)),
            [leg.account_id for leg in legs],
            [leg.amount_minor for leg in legs],
            [account_id for account_id, _ in tracked],
            [delta for _, delta in tracked],
            order.line_id,
            validity,
            [message["channel"] for message in messages],
            [message["recipient"] for message in messages],
            [message["subject"] for message in messages],
            [message["body_text"] for message in messages],
            [message["template"] for message in messages],
            [message["language"] for message in messages],
            [message["dedup_key"] for message in messages],
            *more,
        )
        if not balances:
            raise HandOver  # what was read no longer holds: nothing was written
        if dict(balances).get(main_id) != order.balance_after_minor:
            # The locked balance moved under us: not something to paper over.
            raise RuntimeError(f"line {order.line_id}: balance after credit is not what was locked")

    async def _account(self, connection: asyncpg.Connection, code: str) -> int:
        account_id = self._accounts.get(code)
        if account_id is None:
            account_id = await connection.fetchval(_UNTRACKED_ACCOUNT, code)
            if account_id is None:
                raise HandOver  # made on first use, by the app
            self._accounts[code] = account_id
        return int(account_id)


class FastPathMiddleware:
    """Plain ASGI, in front of the app's middleware stack: the fast path's requests go to
    :class:`FastPath`, the rest to the app. A bug in a handler gets the app's problem+json
    500 here, where the stack's error handling does not reach."""

    def __init__(self, app: ASGIApp, fast_path: FastPath) -> None:
        self.app = app
        self.fast_path = fast_path
        self.handlers: dict[
            str, Callable[[Scope, bytes], Awaitable[tuple[int, list[tuple[bytes, bytes]], bytes]]]
        ] = {
            TOPUPS_PATH: fast_path.create_topup,
            REDEEM_PATH: fast_path.redeem_voucher,
            SANDBOX_PAY_PREFIX: fast_path.approve_sandbox,
            WEBHOOKS_PREFIX: fast_path.provider_webhook,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        route = path
        if path.startswith(SANDBOX_PAY_PREFIX) and path.count("/") == 3:
            route = SANDBOX_PAY_PREFIX
        elif path.startswith(WEBHOOKS_PREFIX) and path.count("/") == 2:
            route = WEBHOOKS_PREFIX
        handler = self.handlers.get(route)
        if handler is None:
            await self.app(scope, receive, send)
            return
        body, complete = await _read_body(receive)
        if complete:
            try:
                status, headers, content = await handler(scope, body)
            except (HandOver, AppError, asyncpg.DeadlockDetectedError, asyncpg.UniqueViolationError):
                # A deadlock victim was rolled back like any hand-over, and so was a statement
                # that met a simultaneous request's key or event: the app answers both.
                FAST_PATH.labels(_ROUTES[route].path, "handed_over").inc()
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as error:
                # The connection failed. Each of the three requests is idempotent by its key
                # (or the sandbox payment's state), so the app may safely do it again even if
                # the commit went through; if the database is down, it answers as it does then.
                log.warning("fast_path_connection_failed", path=path, error=repr(error))
                FAST_PATH.labels(_ROUTES[route].path, "handed_over").inc()
            except Exception:  # noqa: BLE001 - a bug: answered as the app answers one
                scope["route"] = _ROUTES[route]
                await internal_error(Request(scope))(scope, receive, send)
                return
            else:
                FAST_PATH.labels(_ROUTES[route].path, "served").inc()
                scope["route"] = _ROUTES[route]
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": content})
                return
        await self.app(scope, _replay(body, complete, receive), send)


# --- request parsing ---------------------------------------------------------------------

# What Starlette's RedirectResponse leaves unquoted in a Location.
_URL_SAFE = ":/%#?=@[]!$&'()*+,;"


def _json_response(status: int, content: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(content)).encode())]
    return status, headers, content


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return dict(scope["headers"])


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The request body, up to :data:`BODY_LENGTH_MAX` (False: longer, left for the app)."""
    chunks: list[bytes] = []
    length = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False
        chunk = message.get("body", b"")
        chunks.append(chunk)
        length += len(chunk)
        if length > BODY_LENGTH_MAX:
            return b"".join(chunks), False
        if not message.get("more_body", False):
            return b"".join(chunks), True


def _replay(body: bytes, complete: bool, receive: Receive) -> Receive:
    """A ``receive`` that gives the app the body already read, then whatever is left."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": not complete}
        return await receive()

    return replayed


def _json_object(headers: dict[bytes, bytes], body: bytes, allowed: set[str]) -> dict[str, Any]:
    """The body, sent as JSON, as a JSON object with only ``allowed`` keys, or a hand-over."""
    if not headers.get(b"content-type", b"").startswith(b"application/json"):
        raise HandOver
    try:
        fields = json.loads(body)
    except ValueError as error:
        raise HandOver from error
    if not isinstance(fields, dict) or not fields.keys() <= allowed:
        raise HandOver
    return fields


def _text(fields: dict[str, Any], name: str, default: str, length_max: int) -> str:
    value = fields.get(name, default)
    if not isinstance(value, str) or len(value) > length_max:
        raise HandOver
    return value


def _form(scope: Scope, body: bytes) -> dict[str, str]:
    content_type = _headers(scope).get(b"content-type", b"")
    if not content_type.startswith(b"application/x-www-form-urlencoded"):
        raise HandOver
    if SESSION_COOKIE.encode() in _headers(scope).get(b"cookie", b""):
        raise HandOver  # a signed-in visitor: the app keeps its session fresh
    parsed = parse_qs(body.decode("latin-1"), keep_blank_values=True)
    return {name: values[-1] for name, values in parsed.items()}


# --- rows into the ORM path's objects ----------------------------------------------------


def _operator_code(kind: str, currency: str, *, qualifier: str = "") -> str:
    return ":".join(part for part in ("operator", kind, qualifier, currency.upper()) if part)


def _plan(found: Mapping[str, Any]) -> Plan:
    return as_read(
        Plan,
        validity_rule=found["validity_rule"],
        validity_tiers=json.loads(found["validity_tiers"]),
        validity_days_max=found["validity_days_max"],
        activity_days=found["activity_days"],
    )


def _promotions(rows: str | None) -> list[Promotion]:
    return [
        as_read(
            Promotion,
            id=row["id"],
            kind=row["kind"],
            value=row["value"],
            bonus_max_minor=row["bonus_max_minor"],
            first_topup_only=row["first_topup_only"],
            channels=row["channels"],
        )
        for row in json.loads(rows or "[]")
    ]


def _order(found: asyncpg.Record) -> TopupOrder:
    return as_read(
        TopupOrder,
        **{name: found[name] for name in _ORDER_COLUMNS},
        failure_code="",
    )


_ORDER_COLUMNS = (
    "id",
    "public_id",
    "channel",
    "line_id",
    "msisdn",
    "customer_id",
    "currency",
    "amount_minor",
    "bonus_minor",
    "promotion_id",
    "payment_provider",
    "payment_reference",
    "receipt_email",
    "language",
    "created_at",
)


# --- the statements ----------------------------------------------------------------------


# For a line ``l`` of plan ``p``: the promotions of its currency running at ``now`` for an
# amount of ``amount`` (SQL expressions), as JSON, and whether the line was ever credited
# (first-top-up promotions; by the predicate of its partial index).
def _offers(now: str, amount: str) -> str:
    return "".join(
        (
            """
       (SELECT json_agg(json_build_object('id', pr.id, 'kind', pr.kind, 'value', pr.value,
                'bonus_max_minor', pr.bonus_max_minor, 'first_topup_only', pr.first_topup_only,
                'channels', pr.channels))::text
          FROM promotions pr
         WHERE pr.active AND pr.currency = p.currency AND pr.starts_at <= """,
            now,
            " AND pr.ends_at > ",
            now,
            """
           AND pr.amount_min_minor <= """,
            amount,
            """) AS promotions,
       EXISTS (SELECT 1 FROM topup_orders o WHERE o.line_id = l.id AND o.""",
            CREDITED_ONCE_WHERE,
            """) AS topped_up_before
""",
        )
    )


# The line behind a number with its plan, the amount rule of its currency and the
# promotions running now (as JSON), and whether it was ever credited; with what crediting
# needs of the line (kept for the approval, see :class:`_Started`).
_TOPUP_QUOTE = "".join(
    (
        """
SELECT l.id, l.msisdn, l.state, p.currency,
       r.denominations::text AS denominations, r.amount_min_minor, r.amount_max_minor, r.custom_allowed,
       l.plan_id, l.validity_date, l.main_account_id, l.bonus_account_id,
       a.balance_minor AS main_balance_minor, p.validity_rule, p.validity_tiers::text AS validity_tiers,
       p.validity_days_max, p.activity_days,
""",
        _offers("$2", "$3"),
        """
  FROM lines l
  JOIN plans p ON p.id = l.plan_id
  JOIN ledger_accounts a ON a.id = l.main_account_id
  LEFT JOIN topup_amount_rules r ON r.currency = p.currency
 WHERE l.msisdn = $1 AND l.number_released_at IS NULL
 LIMIT 1
""",
    )
)

# The order, awaiting payment, with its sandbox payment; nothing if the key was used.
_START_TOPUP = """
WITH o AS (
  INSERT INTO topup_orders (public_id, idempotency_scope, idempotency_key, request_hash, channel,
         line_id, msisdn, customer_id, currency, amount_minor, bundle_id, bonus_minor, promotion_id,
         payment_provider, payment_reference, payment_redirect_url, payment_method, status,
         failure_code, receipt_email, language, refunded_minor, refund_shortfall_minor,
         created_at, awaiting_payment_at)
  VALUES ($1, $2, $3, $4, 'api', $5, $6, NULL, $7, $8, NULL, $9, $10, $11, $12, $13, '',
          'awaiting_payment', '', $14, $15, 0, 0, $16, $16)
  ON CONFLICT DO NOTHING
  RETURNING id, amount_minor, currency, payment_reference
), s AS (
  INSERT INTO sandbox_payments (reference, amount_minor, currency, description, return_url, status,
         refunded_minor, created_at, updated_at)
  SELECT payment_reference, amount_minor, currency, $17, $18, 'pending', 0, $16, $16 FROM o
)
SELECT id FROM o
"""

# After a ``pay`` CTE (reference $1, amount, currency, return URL): the order it pays and
# its line, read without locks, with what crediting needs, unless the event was stored
# before ($2 provider, $4 event id). Only a payable credit top-up ($3 the payable states)
# whose amount and currency match, of an active line, qualifies. (The order is found by both
# columns of its unique (provider, reference) index: a join on the reference alone was
# planned as a scan of every order of the provider.) :data:`_WRITE_PAID` acts on it
# only if it still holds under its locks.
_READ_PAID = """
ord AS (
  SELECT o.* FROM topup_orders o JOIN pay ON true
   WHERE o.payment_provider = $2 AND o.payment_reference = $1
     AND o.status = ANY($3::varchar[]) AND o.bundle_id IS NULL
     AND o.amount_minor = pay.amount_minor AND o.currency = pay.currency
     AND NOT EXISTS (SELECT 1 FROM payment_events e WHERE e.provider = $2 AND e.event_id = $4)
)
SELECT ord.*, pay.return_url, l.state AS line_state, l.plan_id, l.validity_date, l.main_account_id,
       l.bonus_account_id, a.balance_minor AS main_balance_minor,
       p.validity_rule, p.validity_tiers::text AS validity_tiers, p.validity_days_max, p.activity_days,
       c.email
  FROM ord JOIN pay ON true
  JOIN lines l ON l.id = ord.line_id
  JOIN ledger_accounts a ON a.id = l.main_account_id
  JOIN plans p ON p.id = l.plan_id
  LEFT JOIN customers c ON c.id = ord.customer_id
 WHERE l.state = 'active'
"""

# The sandbox's payment, still pending.
_READ_SANDBOX_PAID = "".join(
    (
        """
WITH pay AS (
  SELECT reference, amount_minor, currency, return_url FROM sandbox_payments
   WHERE reference = $1 AND status = 'pending'
),""",
        _READ_PAID,
    )
)

# A provider's verified "paid" event ($5 amount, $6 currency).
_READ_PROVIDER_PAID = "".join(
    (
        """
WITH pay AS (
  SELECT $1::varchar AS reference, $5::bigint AS amount_minor, $6::varchar AS currency,
         NULL::varchar AS return_url
),""",
        _READ_PAID,
    )
)

# A redemption's facts, read without locks: the PIN's voucher if it is good (active, not
# expired, in the line's currency) and the active line behind the number, unless the caller
# is locked out or the key was used before; with the line's plan and balance, the promotions
# running now and the new order's id. :data:`_WRITE_REDEMPTION` acts on them only if they
# still hold under its locks.
_READ_REDEMPTION = "".join(
    (
        """
SELECT v.id, v.serial, v.face_value_minor, v.batch_id, b.validity_days,
       l.id AS line_id, l.msisdn, l.state AS line_state, l.plan_id, l.validity_date, l.main_account_id,
       l.bonus_account_id, a.balance_minor AS main_balance_minor, p.currency,
       p.validity_rule, p.validity_tiers::text AS validity_tiers, p.validity_days_max, p.activity_days,
       NULL::varchar AS email,
""",
        _offers("$3", "v.face_value_minor"),
        """,
       nextval(pg_get_serial_sequence('topup_orders', 'id')) AS order_id
  FROM lines l
  JOIN plans p ON p.id = l.plan_id
  JOIN ledger_accounts a ON a.id = l.main_account_id
  JOIN vouchers v ON v.pin_hash = $2 AND v.state = 'active' AND v.expires_on >= $4 AND v.currency = p.currency
  JOIN voucher_batches b ON b.id = v.batch_id
 WHERE l.msisdn = $1 AND l.number_released_at IS NULL AND l.state = 'active'
   AND NOT EXISTS (SELECT 1 FROM topup_orders o WHERE o.idempotency_scope = $5 AND o.idempotency_key = $6)
   AND NOT EXISTS (SELECT 1 FROM voucher_locks k
                    WHERE k.key IN ('line:' || l.id, $7) AND k.locked_until > $3)
""",
    )
)


def _credit_writes(guard: str) -> str:
    """The order's transfer with its entries, the line's validity (if it moves) and balances,
    and the receipt messages, each written only if the CTE ``guard`` has a row; returns the
    new balances (no row if it has none)."""
    source = f" FROM {guard}"
    joined = f", {guard}"
    return "".join(
        (
            """
t AS (
  INSERT INTO ledger_transfers (id, kind, currency, content_hash, description, details, created_at)
  SELECT $7, $8, $9, $10, $11, $12::json, $2""",
            source,
            """
), e AS (
  INSERT INTO ledger_entries (transfer_id, account_id, amount_minor, created_at)
  SELECT $7, a, m, $2 FROM unnest($13::bigint[], $14::bigint[]) AS e(a, m)""",
            joined,
            """
), l AS (
  UPDATE lines SET validity_date = $18""",
            source,
            """ WHERE lines.id = $17 AND lines.validity_date IS DISTINCT FROM $18
), n AS (
  INSERT INTO notifications (channel, recipient, subject, body_text, template, language, dedup_key,
         status, attempts, next_attempt_at, created_at, provider, last_error)
  SELECT c, r, s, b, t, g, d, 'pending', 0, $2, $2, '', ''
    FROM unnest($19::varchar[], $20::varchar[], $21::varchar[], $22::text[], $23::varchar[],
                $24::varchar[], $25::varchar[]) AS n(c, r, s, b, t, g, d)""",
            joined,
            """
  ON CONFLICT DO NOTHING
)
UPDATE ledger_accounts AS a SET balance_minor = a.balance_minor + d.delta
  FROM unnest($15::bigint[], $16::bigint[]) AS d(id, delta)""",
            joined,
            """
 WHERE a.id = d.id
RETURNING a.id, a.balance_minor
""",
        )
    )


def _line_guard(*, after: str, validity: str, balance: str, plan: str) -> str:
    """The CTE ``guard``: the line ($17) and its main balance locked, once the CTE ``after``
    has a row, if the line is active and its validity, balance and plan are still
    ``validity``, ``balance`` and ``plan`` (the parameters holding what was read); one row,
    or none."""
    return "".join(
        (
            """
guard AS (
  SELECT l.id AS guarded_line_id
    FROM """,
            after,
            """, lines l JOIN ledger_accounts a ON a.id = l.main_account_id
   WHERE l.id = $17 AND l.state = 'active' AND l.validity_date IS NOT DISTINCT FROM """,
            validity,
            """::date
     AND a.balance_minor = """,
            balance,
            " AND l.plan_id = ",
            plan,
            """
   FOR NO KEY UPDATE OF l, a
),""",
        )
    )


# After a ``pay`` CTE locking the payment (reference $26, amount, currency), a "paid" event
# as one statement, on what :data:`_READ_PAID` read: the order locked if it is still payable
# ($1, $27 provider, $29 payable states), then its line and balance if their state, validity,
# balance and plan are still the ones read ($17, $33, $34, $35); then the event stored once ($28 event
# id, $30 type, $31 payload, $32 when) and, only if it was new, the order credited with its
# receipt ($2-$6) and the credit. Otherwise nothing is written and no row comes back. (Locks
# in the ORM path's order: payment, order, line, balances.)
_WRITE_PAID = "".join(
    (
        """
ord AS (
  SELECT o.id FROM topup_orders o JOIN pay ON true
   WHERE o.id = $1 AND o.payment_provider = $27 AND o.payment_reference = $26
     AND o.status = ANY($29::varchar[]) AND o.bundle_id IS NULL
     AND o.amount_minor = pay.amount_minor AND o.currency = pay.currency
   FOR NO KEY UPDATE OF o
),""",
        _line_guard(after="ord", validity="$33", balance="$34", plan="$35"),
        """ ev AS (
  INSERT INTO payment_events (provider, event_id, event_type, payment_reference, outcome, order_id,
         payload, occurred_at, received_at)
  SELECT $27, $28, $30, $26, 'succeeded', $1, $31::json, $32, $2 FROM guard
  ON CONFLICT DO NOTHING
  RETURNING event_id
), o AS (
  UPDATE topup_orders SET status = 'credited', paid_at = $2, payment_method = $3, failure_code = '',
         credited_at = $2, receipt_number = $4, balance_after_minor = $5, validity_after = $6
    FROM ev WHERE topup_orders.id = $1
),""",
    )
)

# The sandbox's payment approved, with its order's event.
_WRITE_SANDBOX_PAID = "".join(
    (
        """
WITH pay AS (
  SELECT reference, amount_minor, currency FROM sandbox_payments
   WHERE reference = $26 AND status = 'pending'
   FOR NO KEY UPDATE
),""",
        _WRITE_PAID,
        """ sp AS (
  UPDATE sandbox_payments SET status = 'succeeded', updated_at = $2 FROM ev WHERE reference = $26
),""",
        _credit_writes("ev"),
    )
)

# A provider's verified "paid" event ($36 amount, $37 currency).
_WRITE_PROVIDER_PAID = "".join(
    (
        """
WITH pay AS (SELECT $36::bigint AS amount_minor, $37::varchar AS currency),""",
        _WRITE_PAID,
        _credit_writes("ev"),
    )
)

# A redemption as one statement, on what :data:`_READ_REDEMPTION` read: the voucher is
# locked if it is still good on $46 (today) and no key of the attempt ($40) is locked out (a
# simultaneous redemption of the PIN waits here, then finds it used), then the line and its
# balance if their state, validity, balance and plan are still the ones read ($17, $47-$49). Only
# then is anything written: the voucher redeemed, the order once, credited ($26-$37), the
# redemption in the voucher's attempts and events ($38-$45), and the credit. Otherwise
# nothing is, and no row comes back. (Locks in the ORM path's order: voucher, then line.)
_WRITE_REDEMPTION = "".join(
    (
        """
WITH v0 AS (
  SELECT v.id FROM vouchers v
   WHERE v.id = $38 AND v.state = $42 AND v.expires_on >= $46
     AND NOT EXISTS (SELECT 1 FROM topup_orders o WHERE o.idempotency_scope = $27 AND o.idempotency_key = $28)
     AND NOT EXISTS (SELECT 1 FROM voucher_locks k
                      WHERE k.key = ANY($40::varchar[]) AND k.locked_until > $2)
   FOR NO KEY UPDATE OF v
),""",
        _line_guard(after="v0", validity="$47", balance="$48", plan="$49"),
        """ won AS (
  UPDATE vouchers SET state = $43, state_changed_at = $2, redeemed_line_id = $17, redeemed_order_id = $1
    FROM guard WHERE vouchers.id = $38
), o AS (
  INSERT INTO topup_orders (id, public_id, idempotency_scope, idempotency_key, request_hash, channel,
         line_id, msisdn, customer_id, currency, amount_minor, bundle_id, bonus_minor, promotion_id,
         payment_provider, payment_reference, payment_method, status, failure_code, receipt_email,
         language, balance_after_minor, validity_after, refunded_minor, refund_shortfall_minor,
         created_at, paid_at, credited_at, receipt_number)
  SELECT $1, $26, $27, $28, $29, $30, $17, $31, NULL, $9, $32, NULL, $33, $34, $35, $36, $3, 'credited',
         '', '', $37, $5, $6, 0, 0, $2, $2, $2, $4
    FROM guard
), va AS (
  INSERT INTO voucher_attempts (key, succeeded, reason, channel, serial, at)
  SELECT k, true, 'redeemed', $30, $39, $2 FROM unnest($40::varchar[]) AS k, guard
), ve AS (
  INSERT INTO voucher_events (voucher_id, batch_id, event, from_state, to_state, count, actor, reason, at)
  SELECT $38, $41, 'redeemed', $42, $43, 1, $44, $45, $2 FROM guard
),""",
        _credit_writes("guard"),
    )
)

_UNTRACKED_ACCOUNT = "SELECT id FROM ledger_accounts WHERE code = $1 AND NOT balance_tracked"
