"""Top-up orders: one state machine for every channel, and the one crediting step.

    created → awaiting_payment → paid → credited → (refunded)
          ↘ failed (with a reason a person understands) / cancelled

Every transition is a conditional UPDATE on the order's current status, so a retried
request, a duplicated webhook or two processes racing change the order once. Crediting is
one ledger transfer whose id is derived from the order, so it happens exactly once.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import partial
from typing import Any, Protocol, cast

import structlog
from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from airtime.accounts.models import Customer, Line, LineState, Plan
from airtime.accounts.phone import mask_msisdn, normalize_msisdn
from airtime.clock import today, utcnow
from airtime.config import Settings
from airtime.db.base import as_read
from airtime.db.dialect import insert_ignoring_conflicts
from airtime.errors import AppError, Conflict, IdempotencyConflict, NotFound, ValidationFailed
from airtime.i18n import N_
from airtime.ledger.models import AccountKind, LedgerAccount
from airtime.ledger.service import Leg, balance_of, operator_account, post_transfer
from airtime.lifecycle.service import restore_after_credit
from airtime.money import format_money, parse_money
from airtime.notifications.service import enqueue
from airtime.payments.base import PaymentOutcome, PaymentProvider, PaymentRequest, PaymentState
from airtime.topups.models import (
    AmountRule,
    Bundle,
    Channel,
    LineAllowance,
    OrderStatus,
    Promotion,
    TopupOrder,
)
from airtime.topups.promotions import Bonus, best_bonus
from airtime.topups.validity import validity_after_activity, validity_after_days, validity_after_topup

_orders = cast(Table, TopupOrder.__table__)
log = structlog.get_logger(__name__)
VOUCHER_PROVIDER = "voucher"
IDEMPOTENCY_KEY_LENGTH_MAX = 100

# A paid order whose line was terminated before the money arrived: not credited, kept
# "paid" with this code for care to refund (crediting a dead line would strand the money).
LINE_GONE = "line_terminated"

# What a person is told when a top-up failed (codes are stored on the order).
FAILURE_MESSAGES = {
    "payment_declined": N_("The payment was declined. No money was taken; try another card or PayPal."),
    "payment_expired": N_("The payment was not completed in time. No money was taken; start a new top-up."),
    "payment_cancelled": N_("The payment was cancelled. No money was taken."),
    "provider_error": N_("The payment provider could not be reached. No money was taken; try again."),
    "amount_mismatch": N_("The amount paid did not match the order. Customer care will sort it out."),
    LINE_GONE: N_(
        "The payment arrived after this number went out of service, so nothing was credited. "
        "Customer care will refund it."
    ),
}


class LineNotTopupable(AppError):
    status_code = 422
    code = "line_not_topupable"
    title = "This number cannot be topped up"


class AmountNotAllowed(ValidationFailed):
    code = "amount_not_allowed"
    title = "Amount not allowed"


@dataclass(frozen=True, slots=True)
class TopupQuote:
    """What the customer sees before paying."""

    line: Line
    plan: Plan
    currency: str
    amount_minor: int
    bundle: Bundle | None
    bonus_minor: int
    promotion_id: int | None
    promotion_name: str
    validity_after: date | None


# --- reading -------------------------------------------------------------------------


def amount_rule(session: Session, currency: str) -> AmountRule:
    rule = session.get(AmountRule, currency)
    if rule is None:
        raise AmountNotAllowed("Top-ups in %(currency)s are not offered.", currency=currency)
    return rule


def active_bundles(session: Session, currency: str) -> list[Bundle]:
    return list(
        session.scalars(
            select(Bundle)
            .where(Bundle.active.is_(True), Bundle.currency == currency)
            .order_by(Bundle.price_minor)
        )
    )


def find_topupable_line(session: Session, *, msisdn: str, settings: Settings) -> Line:
    """The line behind a typed number, if it can take a top-up (refusals say why)."""
    normalized = normalize_msisdn(msisdn, default_region=settings.default_region)
    # The plan comes along in the same read: quoting needs it next, and finds it loaded.
    found = session.execute(
        select(Line, Plan)
        .join(Plan, Plan.id == Line.plan_id)
        .where(Line.msisdn == normalized, Line.number_released_at.is_(None))
    ).first()
    line = found[0] if found else None
    if line is None:
        raise LineNotTopupable(
            "%(msisdn)s is not on the %(operator)s network. Check the number and try again.",
            msisdn=normalized,
            operator=settings.operator_name,
            field="msisdn",
        )
    if line.state == LineState.TERMINATED:
        raise LineNotTopupable(
            "%(msisdn)s is no longer in service and cannot be topped up.", msisdn=normalized, field="msisdn"
        )
    return line


def quote_currency(session: Session, line: Line) -> str:
    """A line is topped up in its plan's currency."""
    plan = session.get(Plan, line.plan_id)
    assert plan is not None
    return plan.currency


def current_promotions(session: Session, currency: str) -> list[Promotion]:
    """Promotions running now, to show before payment."""
    now = utcnow()
    return list(
        session.scalars(
            select(Promotion)
            .where(
                Promotion.active.is_(True),
                Promotion.currency == currency,
                Promotion.starts_at <= now,
                Promotion.ends_at > now,
            )
            .order_by(Promotion.id)
        )
    )


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    at: datetime | None
    done: bool


def stages(order: TopupOrder) -> list[Stage]:
    """The stages a person sees on the status page, each with its time once reached."""
    paid_directly = order.awaiting_payment_at is None and order.paid_at is not None
    path = [
        Stage("created", order.created_at, True),
        *(
            []
            if paid_directly  # a voucher or an agent's float pays at once: there was no waiting
            else [Stage("awaiting_payment", order.awaiting_payment_at, order.awaiting_payment_at is not None)]
        ),
        Stage("paid", order.paid_at, order.paid_at is not None),
        Stage("credited", order.credited_at, order.credited_at is not None),
    ]
    if order.status == OrderStatus.FAILED:
        path.append(Stage("failed", order.failed_at, True))
    if order.status == OrderStatus.CANCELLED:
        path.append(Stage("cancelled", order.cancelled_at, True))
    if order.refunded_at is not None:
        path.append(Stage("refunded", order.refunded_at, True))
    return path


def get_order(session: Session, public_id: str) -> TopupOrder:
    order = session.scalar(select(TopupOrder).where(TopupOrder.public_id == public_id))
    if order is None:
        raise NotFound("No such top-up.")
    return order


def line_orders(session: Session, *, line_id: int, limit: int = 50) -> list[TopupOrder]:
    return list(
        session.scalars(
            select(TopupOrder)
            .where(TopupOrder.line_id == line_id)
            .order_by(TopupOrder.id.desc())
            .limit(max(1, min(limit, 100)))
        )
    )


# --- quoting and ordering --------------------------------------------------------------


def check_amount(rule: AmountRule, amount_minor: int) -> None:
    """Refuse an amount the operator does not offer in the rule's currency."""
    currency = rule.currency
    if amount_minor in rule.denominations:
        return
    if not rule.custom_allowed:
        raise AmountNotAllowed(
            "Choose one of the amounts offered: %(amounts)s.",
            amounts=", ".join(format_money(value, currency) for value in rule.denominations),
            field="amount",
        )
    if not rule.amount_min_minor <= amount_minor <= rule.amount_max_minor:
        raise AmountNotAllowed(
            "Top up between %(min)s and %(max)s.",
            min=format_money(rule.amount_min_minor, currency),
            max=format_money(rule.amount_max_minor, currency),
            field="amount",
        )


def quote(
    session: Session,
    *,
    line: Line,
    channel: str,
    amount_text: str | None = None,
    amount_minor: int | None = None,
    bundle_code: str | None = None,
) -> TopupQuote:
    """Check the amount or bundle against the operator's rules and work out the bonus."""
    plan = session.get(Plan, line.plan_id)
    assert plan is not None
    currency = plan.currency
    bundle = None
    if bundle_code:
        bundle = session.scalar(select(Bundle).where(Bundle.code == bundle_code, Bundle.active.is_(True)))
        if bundle is None or bundle.currency != currency:
            raise ValidationFailed("That bundle is not available for this number.", field="bundle")
        amount = bundle.price_minor
    else:
        if amount_minor is None:
            if not amount_text:
                raise AmountNotAllowed("Choose an amount.", field="amount")
            amount_minor = parse_money(amount_text, currency).amount_minor
        amount = amount_minor
        check_amount(amount_rule(session, currency), amount)
    # Promotions reward credit top-ups; a bundle is a fixed package at its own price.
    bonus = (
        Bonus(None, 0)
        if bundle
        else best_bonus(
            session, line_id=line.id, currency=currency, amount_minor=amount, channel=channel, now=utcnow()
        )
    )
    validity = (
        validity_after_activity(plan, current=line.validity_date, today=today())
        if bundle
        else validity_after_topup(plan, current=line.validity_date, today=today(), amount_minor=amount)
    )
    return TopupQuote(
        line=line,
        plan=plan,
        currency=currency,
        amount_minor=amount,
        bundle=bundle,
        bonus_minor=bonus.bonus_minor,
        promotion_id=bonus.promotion.id if bonus.promotion else None,
        promotion_name=bonus.promotion.name if bonus.promotion else "",
        validity_after=validity,
    )


def _request_hash(values: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()


def order_request_hash(
    *,
    channel: str,
    line_id: int,
    amount_minor: int,
    bundle_code: str | None,
    provider_name: str,
    customer_id: int | None,
) -> str:
    """What makes two requests for an order with one idempotency key "the same"."""
    return _request_hash(
        {
            "channel": channel,
            "line": line_id,
            "amount": amount_minor,
            "bundle": bundle_code,
            "provider": provider_name,
            "customer": customer_id,
        }
    )


def paid_order_request_hash(*, line_id: int, amount_minor: int, reference: str) -> str:
    """The same for an order paid by other means (see :func:`create_paid_order`)."""
    return _request_hash({"line": line_id, "amount": amount_minor, "reference": reference})


def payment_request(order: TopupOrder, settings: Settings) -> PaymentRequest:
    """What the provider is asked to take for an order, and where it sends the customer back."""
    return PaymentRequest(
        order_public_id=order.public_id,
        amount_minor=order.amount_minor,
        currency=order.currency,
        description=f"Top-up {mask_msisdn(order.msisdn)}",
        return_url=f"{settings.base_url}/topup/orders/{order.public_id}?returned=1",
        cancel_url=f"{settings.base_url}/topup/orders/{order.public_id}?cancelled=1",
        customer_email=order.receipt_email,
        idempotency_key=f"order-{order.public_id}",
    )


def create_order(
    session: Session,
    *,
    quote: TopupQuote,
    channel: str,
    provider: PaymentProvider,
    idempotency_scope: str,
    idempotency_key: str,
    settings: Settings,
    customer_id: int | None = None,
    receipt_email: str = "",
    language: str = "en",
) -> tuple[TopupOrder, bool]:
    """Make the order and start its payment; the same key with the same request returns the
    first order (``created`` False), with a different request it is refused."""
    if channel not in Channel.ALL:
        raise ValidationFailed("Unknown channel %(channel)s.", channel=channel)
    if not idempotency_key or len(idempotency_key) > IDEMPOTENCY_KEY_LENGTH_MAX:
        raise ValidationFailed(
            "An idempotency key of 1 to %(length)s characters is required.", length=IDEMPOTENCY_KEY_LENGTH_MAX
        )
    request_hash = order_request_hash(
        channel=channel,
        line_id=quote.line.id,
        amount_minor=quote.amount_minor,
        bundle_code=quote.bundle.code if quote.bundle else None,
        provider_name=provider.name,
        customer_id=customer_id,
    )
    now = utcnow()
    public_id = secrets.token_urlsafe(16)
    # RETURNING the whole row as the order object: no second read of what was just written.
    inserted = session.scalars(
        insert_ignoring_conflicts(session, TopupOrder)
        .values(
            public_id=public_id,
            idempotency_scope=idempotency_scope,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            channel=channel,
            line_id=quote.line.id,
            msisdn=quote.line.msisdn,
            customer_id=customer_id,
            currency=quote.currency,
            amount_minor=quote.amount_minor,
            bundle_id=quote.bundle.id if quote.bundle else None,
            bonus_minor=quote.bonus_minor,
            promotion_id=quote.promotion_id,
            payment_provider=provider.name,
            status=OrderStatus.CREATED,
            failure_code="",
            receipt_email=receipt_email[:254],
            language=language,
            payment_method="",
            refunded_minor=0,
            refund_shortfall_minor=0,
            created_at=now,
        )
        .returning(TopupOrder)
    ).one_or_none()
    if inserted is None:
        existing = session.scalar(
            select(TopupOrder).where(
                TopupOrder.idempotency_scope == idempotency_scope,
                TopupOrder.idempotency_key == idempotency_key,
            )
        )
        assert existing is not None
        if existing.request_hash != request_hash:
            raise IdempotencyConflict("This Idempotency-Key was already used for a different top-up.")
        return existing, False
    order = inserted
    start = provider.start_payment(session, payment_request(order, settings))
    order.payment_reference = start.reference
    order.payment_redirect_url = start.redirect_url
    order.status = OrderStatus.AWAITING_PAYMENT
    order.awaiting_payment_at = utcnow()
    session.flush()
    return order, True


# --- transitions -------------------------------------------------------------------------


def _transition(
    session: Session, order_id: int, *, allowed_from: tuple[str, ...], values: dict[str, Any]
) -> bool:
    """Move the order only if it is in one of ``allowed_from``; True if this call moved it."""
    moved = session.execute(
        update(TopupOrder)
        .where(TopupOrder.id == order_id, TopupOrder.status.in_(allowed_from))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        return False
    # An order object already loaded in the session sees the new values too (the values
    # are known, so there is nothing to fetch back).
    loaded = session.identity_map.get(session.identity_key(TopupOrder, order_id))
    if loaded is not None:
        for name, value in values.items():
            set_committed_value(loaded, name, value)
    return True


class OrderAmount(Protocol):
    """What checking a payment against an order needs: a loaded order or a row of it."""

    @property
    def id(self) -> int: ...
    @property
    def amount_minor(self) -> int: ...
    @property
    def currency(self) -> str: ...


def apply_payment_state(session: Session, order: OrderAmount, state: PaymentState) -> str:
    """Bring the order in line with what the provider says; returns what changed."""
    now = utcnow()
    if state.outcome == PaymentOutcome.SUCCEEDED:
        if state.amount_minor != order.amount_minor or state.currency != order.currency:
            _transition(
                session,
                order.id,
                allowed_from=(OrderStatus.CREATED, OrderStatus.AWAITING_PAYMENT),
                values={"status": OrderStatus.FAILED, "failure_code": "amount_mismatch", "failed_at": now},
            )
            return "amount_mismatch"
        # A success wins over an earlier expiry or cancellation: the money was taken.
        if _transition(
            session,
            order.id,
            allowed_from=OrderStatus.PAYABLE,
            values={
                "status": OrderStatus.PAID,
                "paid_at": now,
                "payment_method": state.method[:40],
                "failure_code": "",
            },
        ):
            return "paid"
        return "unchanged"
    if state.outcome == PaymentOutcome.FAILED:
        if _transition(
            session,
            order.id,
            allowed_from=(OrderStatus.CREATED, OrderStatus.AWAITING_PAYMENT),
            values={
                "status": OrderStatus.FAILED,
                "failure_code": state.failure_code or "payment_declined",
                "failed_at": now,
            },
        ):
            return "failed"
        return "unchanged"
    if state.outcome == PaymentOutcome.REFUNDED:
        return (
            "refunded"
            if refund(session, order=order, refunded_total_minor=state.refunded_minor)
            else "unchanged"
        )
    return "unchanged"


def cancel(session: Session, order: TopupOrder) -> bool:
    """The customer walked away from the payment page: nothing was paid."""
    return _transition(
        session,
        order.id,
        allowed_from=(OrderStatus.CREATED, OrderStatus.AWAITING_PAYMENT),
        values={
            "status": OrderStatus.CANCELLED,
            "failure_code": "payment_cancelled",
            "cancelled_at": utcnow(),
        },
    )


def expire(session: Session, order: TopupOrder) -> bool:
    return _transition(
        session,
        order.id,
        allowed_from=(OrderStatus.CREATED, OrderStatus.AWAITING_PAYMENT),
        values={"status": OrderStatus.FAILED, "failure_code": "payment_expired", "failed_at": utcnow()},
    )


def receipt_number(order_id: int, credited_at: datetime) -> str:
    return f"R{credited_at:%y%m%d}-{order_id:07d}"


def funding_account(session: Session, order: TopupOrder) -> int:
    """Where a top-up's money comes from: the provider's clearing account, or for a voucher
    the voucher liability (the operator owes the card's value until it is redeemed)."""
    if order.payment_provider == VOUCHER_PROVIDER:
        return operator_account(session, kind=AccountKind.VOUCHER_LIABILITY, currency=order.currency)
    return operator_account(
        session, kind=AccountKind.PAYMENT_CLEARING, currency=order.currency, qualifier=order.payment_provider
    )


def create_paid_order(
    session: Session,
    *,
    line: Line,
    amount_minor: int,
    channel: str,
    provider_name: str,
    payment_reference: str,
    idempotency_scope: str,
    idempotency_key: str,
    customer_id: int | None = None,
    language: str = "en",
) -> TopupOrder:
    """An order already paid by other means (a voucher, an agent's float, care): it goes
    straight to "paid" and then through the same crediting step as every other top-up."""
    plan = session.get(Plan, line.plan_id)
    assert plan is not None
    bonus = best_bonus(
        session,
        line_id=line.id,
        currency=plan.currency,
        amount_minor=amount_minor,
        channel=channel,
        now=utcnow(),
    )
    order = paid_order(
        line_id=line.id,
        msisdn=line.msisdn,
        currency=plan.currency,
        amount_minor=amount_minor,
        bonus=bonus,
        channel=channel,
        provider_name=provider_name,
        payment_reference=payment_reference,
        idempotency_scope=idempotency_scope,
        idempotency_key=idempotency_key,
        customer_id=customer_id,
        language=language,
        now=utcnow(),
    )
    session.add(order)
    session.flush()
    return order


def paid_order(
    *,
    line_id: int,
    msisdn: str,
    currency: str,
    amount_minor: int,
    bonus: Bonus,
    channel: str,
    provider_name: str,
    payment_reference: str,
    idempotency_scope: str,
    idempotency_key: str,
    customer_id: int | None,
    language: str,
    now: datetime,
    as_row: bool = False,
) -> TopupOrder:
    """The new order of :func:`create_paid_order`, not yet written (``as_row``: built as a
    row read is, for a caller that writes it by hand; see :func:`airtime.db.base.as_read`)."""
    return (partial(as_read, TopupOrder) if as_row else TopupOrder)(
        public_id=secrets.token_urlsafe(16),
        idempotency_scope=idempotency_scope,
        idempotency_key=idempotency_key,
        request_hash=paid_order_request_hash(
            line_id=line_id, amount_minor=amount_minor, reference=payment_reference
        ),
        channel=channel,
        line_id=line_id,
        msisdn=msisdn,
        customer_id=customer_id,
        currency=currency,
        amount_minor=amount_minor,
        bundle_id=None,
        bonus_minor=bonus.bonus_minor,
        promotion_id=bonus.promotion.id if bonus.promotion else None,
        payment_provider=provider_name,
        payment_reference=payment_reference,
        payment_method=provider_name,
        status=OrderStatus.PAID,
        failure_code="",
        receipt_email="",
        language=language,
        refunded_minor=0,
        refund_shortfall_minor=0,
        created_at=now,
        paid_at=now,
    )


def credit(
    session: Session,
    *,
    order_id: int,
    settings: Settings,
    validity_days_override: int | None = None,
    funding_legs: Sequence[Leg] | None = None,
) -> bool:
    """The one crediting step every channel ends in: paid → credited, exactly once.

    In one transaction: the order moves to credited (conditional update, which also locks
    it), the ledger transfer is posted (its id is derived from the order), validity is
    applied by the plan's rule, allowances are granted and the receipt is queued.

    A line terminated before its payment arrived is not credited: the order stays "paid"
    with the failure code :data:`LINE_GONE`, for care to refund, and False is returned.

    ``funding_legs`` replace the one funding leg when the money comes from several
    accounts (an agent's float, the commission expense, parent agents); they must sum to
    ``-order.amount_minor`` and are posted in the same transfer as the credit.
    """
    now = utcnow()
    # The conditional update decides (and locks the order); RETURNING hands back the row as
    # it left it, receipt number and time included, as the order object: no second read,
    # and an object already loaded (a voucher's order is made in this transaction) is
    # brought up to date.
    order = session.scalars(
        update(TopupOrder)
        .where(TopupOrder.id == order_id, TopupOrder.status == OrderStatus.PAID)
        .values(status=OrderStatus.CREDITED, credited_at=now, receipt_number=receipt_number(order_id, now))
        .returning(TopupOrder)
        .execution_options(synchronize_session=False, populate_existing=True)
    ).one_or_none()
    if order is None:
        if session.get(TopupOrder, order_id) is None:
            raise NotFound("No such top-up.")
        return False
    # FOR NO KEY UPDATE (key_share): rows that reference the line (this order, a voucher's
    # redeemed_line_id) hold KEY SHARE locks on it, which this lock does not conflict with,
    # so two top-ups of one line queue here instead of deadlocking.
    # (The plan comes in the same read; only the line's row is locked.) populate_existing:
    # a line this session read before the lock (a voucher's or an agent's lookup) takes the
    # locked row's values, so a concurrent top-up's validity or a termination is not missed.
    line, plan = session.execute(
        select(Line, Plan)
        .join(Plan, Plan.id == Line.plan_id)
        .where(Line.id == order.line_id)
        .with_for_update(key_share=True, of=Line)
        .execution_options(populate_existing=True)
    ).one()
    if line.state == LineState.TERMINATED:
        # Nothing is posted; the order goes back to "paid", marked for care to refund.
        _transition(
            session,
            order.id,
            allowed_from=(OrderStatus.CREDITED,),
            values={
                "status": OrderStatus.PAID,
                "credited_at": None,
                "receipt_number": None,
                "failure_code": LINE_GONE,
            },
        )
        log.warning("paid_order_for_terminated_line", order=order.public_id, line_id=line.id)
        return False
    legs = (
        list(funding_legs)
        if funding_legs is not None
        else [Leg(funding_account(session, order), -order.amount_minor)]
    )
    bundle = session.get(Bundle, order.bundle_id) if order.bundle_id else None
    if bundle is not None:
        revenue = operator_account(
            session, kind=AccountKind.REVENUE, currency=order.currency, qualifier="bundles"
        )
        legs.append(Leg(revenue, order.amount_minor))
    else:
        legs.append(Leg(line.main_account_id, order.amount_minor))
    if order.bonus_minor:
        expense = operator_account(session, kind=AccountKind.PROMOTION_EXPENSE, currency=order.currency)
        legs += [Leg(expense, -order.bonus_minor), Leg(line.bonus_account_id, order.bonus_minor)]
    transfer_id = f"topup:{order.id}:credit"
    posted = post_transfer(
        session,
        transfer_id=transfer_id,
        kind="bundle_purchase" if bundle else "topup",
        currency=order.currency,
        legs=legs,
        description=f"Top-up {order.receipt_number}",
        details={"order": order.public_id, "channel": order.channel},
    )
    if bundle is not None:
        grant_bundle(session, line=line, bundle=bundle, source=transfer_id)
    state_before = line.state
    new_validity = _apply_validity(
        session,
        line=line,
        plan=plan,
        order=order,
        bundle=bundle,
        validity_days_override=validity_days_override,
        now=now,
    )
    # The transfer left the (locked) balance known; a line brought back to active may have
    # paid a reactivation fee since, so then it is read again.
    balance_after = posted.balances_after.get(line.main_account_id) if line.state == state_before else None
    order.balance_after_minor = (
        balance_after if balance_after is not None else balance_of(session, line.main_account_id)
    )
    order.validity_after = new_validity.isoformat() if new_validity else None
    session.flush()
    _send_receipt(session, order=order, bundle=bundle, settings=settings)
    return True


def _apply_validity(
    session: Session,
    *,
    line: Line,
    plan: Plan,
    order: TopupOrder,
    bundle: Bundle | None,
    validity_days_override: int | None,
    now: datetime,
) -> date | None:
    """A credited top-up's effect on the line: its new validity date, and its state restored."""
    if bundle is not None:
        new_validity = validity_after_activity(plan, current=line.validity_date, today=today())
    elif validity_days_override is not None:
        new_validity = validity_after_days(
            plan, current=line.validity_date, today=today(), days=validity_days_override
        )
    else:
        new_validity = validity_after_topup(
            plan, current=line.validity_date, today=today(), amount_minor=order.amount_minor
        )
    line.validity_date = new_validity
    if line.state in (LineState.PENDING_ACTIVATION, LineState.GRACE, LineState.SUSPENDED) and (
        new_validity is None or new_validity >= today()
    ):
        restore_after_credit(
            session,
            line_id=line.id,
            from_state=line.state,
            plan=plan,
            main_account_id=line.main_account_id,
            order_id=order.id,
            validity_date=new_validity,
            now=now,
        )
        line.state = LineState.ACTIVE
        line.state_changed_at = now
    return new_validity


def grant_bundle(session: Session, *, line: Line, bundle: Bundle, source: str) -> None:
    """Allowances of one bundle purchase; ``source`` (the transfer id) makes the grant once-only."""
    now = utcnow()
    session.execute(
        insert_ignoring_conflicts(session, LineAllowance.__table__).values(
            line_id=line.id,
            bundle_id=bundle.id,
            source=source,
            data_mb_remaining=bundle.data_mb,
            voice_minutes_remaining=bundle.voice_minutes,
            sms_remaining=bundle.sms_count,
            zone=bundle.zone,
            granted_at=now,
            expires_at=now + timedelta(days=bundle.validity_days),
        )
    )


def buy_bundle_from_balance(
    session: Session, *, line: Line, bundle_code: str, idempotency_key: str
) -> LineAllowance:
    """Buy a bundle with the line's main balance (refused, with nothing moved, if short)."""
    bundle = session.scalar(select(Bundle).where(Bundle.code == bundle_code, Bundle.active.is_(True)))
    plan = session.get(Plan, line.plan_id)
    assert plan is not None
    if bundle is None or bundle.currency != plan.currency:
        raise ValidationFailed("That bundle is not available for this number.", field="bundle")
    if line.state == LineState.TERMINATED:
        raise LineNotTopupable("%(msisdn)s is no longer in service.", msisdn=line.msisdn)
    if line.state == LineState.SUSPENDED:
        raise LineNotTopupable("The line is suspended: top it up first, then buy the bundle.")
    if not idempotency_key or len(idempotency_key) > IDEMPOTENCY_KEY_LENGTH_MAX:
        raise ValidationFailed("An idempotency key is required.")
    transfer_id = f"bundle:{line.id}:{idempotency_key}"
    revenue = operator_account(session, kind=AccountKind.REVENUE, currency=plan.currency, qualifier="bundles")
    post_transfer(
        session,
        transfer_id=transfer_id,
        kind="bundle_purchase",
        currency=plan.currency,
        legs=[Leg(line.main_account_id, -bundle.price_minor), Leg(revenue, bundle.price_minor)],
        description=f"Bundle {bundle.code}",
        details={"bundle": bundle.code},
    )
    grant_bundle(session, line=line, bundle=bundle, source=transfer_id)
    locked = session.scalar(
        select(Line)
        .where(Line.id == line.id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    assert locked is not None
    locked.validity_date = validity_after_activity(plan, current=locked.validity_date, today=today())
    allowance = session.scalar(select(LineAllowance).where(LineAllowance.source == transfer_id))
    assert allowance is not None
    return allowance


def line_allowances(session: Session, *, line_id: int) -> list[tuple[LineAllowance, Bundle]]:
    """Live allowances of a line, soonest expiry first."""
    rows = session.execute(
        select(LineAllowance, Bundle)
        .join(Bundle, Bundle.id == LineAllowance.bundle_id)
        .where(
            LineAllowance.line_id == line_id,
            LineAllowance.expires_at > utcnow(),
            LineAllowance.revoked_at.is_(None),
        )
        .order_by(LineAllowance.expires_at)
    ).all()
    return [(allowance, bundle) for allowance, bundle in rows]


# --- refunds ---------------------------------------------------------------------------


def refund(session: Session, *, order: OrderAmount, refunded_total_minor: int) -> bool:
    """A refund made at the provider: claw back what it paid for, never below zero.

    ``refunded_total_minor`` is the provider's running total for the payment, so a
    repeated event moves nothing. What cannot be clawed back (already spent) is recorded
    on the order as a shortfall for care, and booked as a refund loss.
    """
    locked = session.scalar(
        select(TopupOrder)
        .where(TopupOrder.id == order.id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    assert locked is not None
    return _refund_locked(session, order=locked, refunded_total_minor=refunded_total_minor)


def _refund_locked(session: Session, *, order: TopupOrder, refunded_total_minor: int) -> bool:
    refunded_total_minor = min(refunded_total_minor, order.amount_minor)
    delta = refunded_total_minor - order.refunded_minor
    if delta <= 0:
        return False
    now = utcnow()
    if order.status == OrderStatus.CREDITED or (order.status == OrderStatus.REFUNDED and order.credited_at):
        _claw_back(session, order=order, delta_minor=delta, refunded_total_minor=refunded_total_minor)
    order.refunded_minor = refunded_total_minor
    if refunded_total_minor >= order.amount_minor:
        order.status = OrderStatus.REFUNDED
        order.refunded_at = now
    session.flush()
    return True


def _claw_back(session: Session, *, order: TopupOrder, delta_minor: int, refunded_total_minor: int) -> None:
    line = session.get(Line, order.line_id)
    assert line is not None
    clearing = operator_account(
        session, kind=AccountKind.PAYMENT_CLEARING, currency=order.currency, qualifier=order.payment_provider
    )
    legs = [Leg(clearing, delta_minor)]
    if order.bundle_id:
        revenue = operator_account(
            session, kind=AccountKind.REVENUE, currency=order.currency, qualifier="bundles"
        )
        legs.append(Leg(revenue, -delta_minor))
        if refunded_total_minor >= order.amount_minor:
            session.execute(
                update(LineAllowance)
                .where(LineAllowance.source == f"topup:{order.id}:credit")
                .values(revoked_at=utcnow())
            )
        shortfall = 0
    else:
        available = _locked_balance(session, line.main_account_id)
        clawback = min(delta_minor, available)
        shortfall = delta_minor - clawback
        if clawback:
            legs.append(Leg(line.main_account_id, -clawback))
        if shortfall:
            loss = operator_account(session, kind=AccountKind.REFUND_LOSS, currency=order.currency)
            legs.append(Leg(loss, -shortfall))
    if order.bonus_minor and order.refunded_minor == 0:
        # The bonus was earned by the top-up; it goes back with the first refund, as far as unspent.
        bonus_back = min(order.bonus_minor, _locked_balance(session, line.bonus_account_id))
        if bonus_back:
            expense = operator_account(session, kind=AccountKind.PROMOTION_EXPENSE, currency=order.currency)
            legs += [Leg(line.bonus_account_id, -bonus_back), Leg(expense, bonus_back)]
    post_transfer(
        session,
        transfer_id=f"topup:{order.id}:refund:{refunded_total_minor}",
        kind="refund",
        currency=order.currency,
        legs=legs,
        description=f"Refund of {order.receipt_number}",
        details={"order": order.public_id},
    )
    order.refund_shortfall_minor += shortfall


def _locked_balance(session: Session, account_id: int) -> int:
    """A guarded balance, locked until commit so the clawback cannot race a spend."""
    balance = session.scalar(
        select(LedgerAccount.balance_minor)
        .where(LedgerAccount.id == account_id)
        .with_for_update(key_share=True)
    )
    return int(balance or 0)


# --- receipts ----------------------------------------------------------------------------


def receipt_context(session: Session, order: TopupOrder, settings: Settings) -> dict[str, Any]:
    """Everything a receipt shows, for the page, the download and the email."""
    bundle = session.get(Bundle, order.bundle_id) if order.bundle_id else None
    return receipt_context_of(order, bundle, settings)


def receipt_context_of(order: TopupOrder, bundle: Bundle | None, settings: Settings) -> dict[str, Any]:
    """:func:`receipt_context` with the order's bundle already at hand."""
    return {
        "order": order,
        "bundle": bundle,
        "operator_name": settings.operator_name,
        "masked_msisdn": mask_msisdn(order.msisdn),
        "link": f"{settings.base_url}/topup/orders/{order.public_id}/receipt",
    }


def _send_receipt(session: Session, *, order: TopupOrder, bundle: Bundle | None, settings: Settings) -> None:
    recipient = order.receipt_email
    if not recipient and order.customer_id:
        customer = session.get(Customer, order.customer_id)
        recipient = customer.email if customer else ""
    for message in receipt_messages(order, receipt_context_of(order, bundle, settings), email=recipient):
        enqueue(session, **message)


def receipt_messages(order: TopupOrder, context: dict[str, Any], *, email: str) -> list[dict[str, Any]]:
    """The receipt's outbox messages: an email when there is an address, always an SMS.
    Each is written once per order (its dedup key)."""
    common: dict[str, Any] = {
        "language": order.language,
        "context": context,
        "customer_id": order.customer_id,
    }
    messages = []
    if email:
        messages.append(
            {
                "channel": "email",
                "recipient": email,
                "template": "receipt",
                "dedup_key": f"receipt:email:{order.id}",
            }
            | common
        )
    messages.append(
        {
            "channel": "sms",
            "recipient": order.msisdn,
            "template": "topup_sms",
            "dedup_key": f"receipt:sms:{order.id}",
        }
        | common
    )
    return messages


def resend_receipt(session: Session, *, order: TopupOrder, settings: Settings, recipient: str) -> None:
    if order.status not in OrderStatus.CREDITED_ONCE:
        raise Conflict("Only a credited top-up has a receipt.")
    enqueue(
        session,
        channel="email",
        recipient=recipient,
        template="receipt",
        language=order.language,
        context=receipt_context(session, order, settings),
        customer_id=order.customer_id,
    )
