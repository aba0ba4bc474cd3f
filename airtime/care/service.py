"""Care actions. Each one runs in the caller's transaction and writes exactly one audit row
(who, what, before/after, reason) in it, so an action and its record commit together or
not at all. Money only moves through the top-up service and the ledger.

Roles (enforced by the pages' guards, and again here for the checker's rules):
care agents search, credit, ask the provider, re-send receipts, unlock, extend validity
and request adjustments; supervisors and admins also refund, block and unblock vouchers
and approve or reject adjustments above the threshold (never their own).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from airtime.accounts.models import Line, LineState, Plan
from airtime.care import audit
from airtime.care.audit import Actor
from airtime.care.models import (
    ADJUSTMENT_REASON_CODES,
    AdjustmentStatus,
    BalanceAdjustment,
    Dispute,
    DisputeStatus,
)
from airtime.clock import today, utcnow
from airtime.config import Settings
from airtime.errors import AppError, Conflict, NotFound, PermissionDenied, ValidationFailed
from airtime.ledger.models import AccountKind
from airtime.ledger.service import Leg, balance_of, operator_account, post_transfer
from airtime.lifecycle.models import TransitionReason
from airtime.lifecycle.service import record_transition
from airtime.payments.base import PaymentProvider
from airtime.topups import service as topups
from airtime.topups.models import OrderStatus, TopupOrder
from airtime.vouchers import service as vouchers

CHECKER_ROLES = ("supervisor", "admin")
GOODWILL_DAYS_MAX = 365
REASON_LENGTH_MIN = 3
ADJUSTMENT_AMOUNT_MINOR_MAX = 10_000_000
RESTORABLE_STATES = (LineState.GRACE, LineState.SUSPENDED)


class ProviderRefundNotOffered(AppError):
    status_code = 409
    code = "refund_not_offered"
    title = "Refund not offered"


def _reason(text: str) -> str:
    reason = (text or "").strip()
    if len(reason) < REASON_LENGTH_MIN:
        raise ValidationFailed("Give a reason (a few words) for this action.", field="reason")
    return reason[:500]


def _order_state(order: TopupOrder) -> dict[str, Any]:
    return {
        "status": order.status,
        "receipt_number": order.receipt_number,
        "refunded_minor": order.refunded_minor,
        "refund_shortfall_minor": order.refund_shortfall_minor,
        "balance_after_minor": order.balance_after_minor,
    }


def _order(session: Session, public_id: str) -> TopupOrder:
    order = topups.get_order(session, public_id)
    session.refresh(order)
    return order


def _resolve_dispute(session: Session, *, order_id: int, by: str) -> None:
    """An open claim about an order that is now credited is answered."""
    session.execute(
        update(Dispute)
        .where(Dispute.order_id == order_id, Dispute.status == DisputeStatus.OPEN)
        .values(
            status=DisputeStatus.RESOLVED, resolution="care_credited", resolved_at=utcnow(), resolved_by=by
        )
    )


# --- top-ups -----------------------------------------------------------------------------


def credit_order(
    session: Session, *, actor: Actor, public_id: str, reason: str, settings: Settings
) -> TopupOrder:
    """Re-run the crediting step of a paid order (exactly once, like every channel)."""
    order = _order(session, public_id)
    before = _order_state(order)
    if order.status != OrderStatus.PAID:
        raise Conflict(
            "Only a paid, not yet credited top-up can be credited (this one is %(status)s).",
            status=order.status,
        )
    if order.failure_code == topups.LINE_GONE:
        raise Conflict("The number is no longer in service: refund this top-up instead.")
    if not topups.credit(session, order_id=order.id, settings=settings):
        raise Conflict("This top-up was credited meanwhile.")
    order = _order(session, public_id)
    _resolve_dispute(session, order_id=order.id, by=actor.email)
    audit.record(
        session,
        actor=actor,
        action="credit_order",
        subject_type="topup_order",
        subject_id=order.public_id,
        before=before,
        after=_order_state(order),
        reason=reason or "paid but not credited",
    )
    return order


def ask_provider(
    session: Session,
    *,
    actor: Actor,
    public_id: str,
    providers: dict[str, PaymentProvider],
    settings: Settings,
) -> TopupOrder:
    """Ask the payment provider about a waiting order now; paid → credited at once."""
    order = _order(session, public_id)
    before = _order_state(order)
    provider = providers.get(order.payment_provider)
    if provider is None or not order.payment_reference:
        raise Conflict(
            "%(provider)s is not a payment provider this server can ask.", provider=order.payment_provider
        )
    state = provider.fetch_payment(session, order.payment_reference)
    change = topups.apply_payment_state(session, order, state)
    order = _order(session, public_id)
    if order.status == OrderStatus.PAID and topups.credit(session, order_id=order.id, settings=settings):
        order = _order(session, public_id)
        _resolve_dispute(session, order_id=order.id, by=actor.email)
    audit.record(
        session,
        actor=actor,
        action="ask_provider",
        subject_type="topup_order",
        subject_id=order.public_id,
        before=before,
        after={**_order_state(order), "provider_outcome": state.outcome, "change": change},
    )
    return order


@dataclass(frozen=True, slots=True)
class RefundResult:
    order: TopupOrder
    # False: the provider took the request; its confirmation (webhook) moves the order later.
    applied: bool


def refund_order(
    session: Session,
    *,
    actor: Actor,
    public_id: str,
    amount_minor: int | None,
    reason: str,
    providers: dict[str, PaymentProvider],
) -> RefundResult:
    """Refund through the payment provider (the only place money goes back to a card),
    then bring the order in line with what the provider says now: the clawback never takes
    the balance below zero, and what was already spent is recorded as a shortfall."""
    reason = _reason(reason)
    order = _order(session, public_id)
    before = _order_state(order)
    if order.status not in (OrderStatus.CREDITED, OrderStatus.PAID):
        raise Conflict(
            "Only a paid or credited top-up can be refunded (this one is %(status)s).", status=order.status
        )
    provider = providers.get(order.payment_provider)
    if provider is None or not order.payment_reference:
        raise ProviderRefundNotOffered(
            "This top-up was paid by %(provider)s, which has no refund through a payment provider; "
            "use a balance adjustment instead.",
            provider=order.payment_provider,
        )
    remaining = order.amount_minor - order.refunded_minor
    amount = remaining if amount_minor is None else amount_minor
    if not 0 < amount <= remaining:
        raise ValidationFailed(
            "Refund between 1 and %(remaining)s (minor units).", remaining=remaining, field="amount"
        )
    total = order.refunded_minor + amount
    provider.refund(session, order.payment_reference, amount, f"care-refund:{order.id}:{total}")
    state = provider.fetch_payment(session, order.payment_reference)
    applied = topups.apply_payment_state(session, order, state) == "refunded"
    order = _order(session, public_id)
    audit.record(
        session,
        actor=actor,
        action="refund_order",
        subject_type="topup_order",
        subject_id=order.public_id,
        before=before,
        after={**_order_state(order), "requested_minor": amount, "applied": applied},
        reason=reason,
    )
    return RefundResult(order=order, applied=applied)


def resend_receipt(
    session: Session, *, actor: Actor, public_id: str, recipient: str, settings: Settings
) -> TopupOrder:
    order = _order(session, public_id)
    recipient = (recipient or order.receipt_email).strip()
    if not recipient and order.customer_id:
        from airtime.accounts.models import Customer

        customer = session.get(Customer, order.customer_id)
        recipient = customer.email if customer else ""
    if "@" not in recipient:
        raise ValidationFailed("Give the email address to send the receipt to.", field="recipient")
    topups.resend_receipt(session, order=order, settings=settings, recipient=recipient[:254])
    audit.record(
        session,
        actor=actor,
        action="resend_receipt",
        subject_type="topup_order",
        subject_id=order.public_id,
        after={"recipient": recipient, "receipt_number": order.receipt_number},
    )
    return order


# --- vouchers ----------------------------------------------------------------------------


def unlock_voucher_attempts(session: Session, *, actor: Actor, key: str, reason: str = "") -> bool:
    """Lift a PIN lockout (line:ID, customer:ID or ip:ADDRESS)."""
    from airtime.vouchers.models import RedemptionLock

    key = key.strip()
    lock = session.get(RedemptionLock, key)
    if lock is None:
        raise NotFound("%(key)s is not locked.", key=key[:120])
    before = {"locked_until": lock.locked_until.isoformat()}
    vouchers.unlock(session, key=key, actor=actor.email)
    audit.record(
        session,
        actor=actor,
        action="unlock_voucher_attempts",
        subject_type="voucher_lock",
        subject_id=key,
        before=before,
        after={"locked_until": lock.locked_until.isoformat()},
        reason=reason,
    )
    return True


def block_vouchers(
    session: Session, *, actor: Actor, serial_first: int, serial_last: int, reason: str, unblock: bool = False
) -> int:
    """Block (or unblock) one voucher or a serial range; returns how many changed."""
    reason = _reason(reason)
    if serial_last < serial_first or serial_last - serial_first >= 1_000_000:
        raise ValidationFailed("Give a range of at most 1,000,000 serials, first to last.", field="last")
    change = vouchers.unblock if unblock else vouchers.block
    count = change(
        session, serial_first=serial_first, serial_last=serial_last, actor=actor.email, reason=reason
    )
    audit.record(
        session,
        actor=actor,
        action="unblock_vouchers" if unblock else "block_vouchers",
        subject_type="voucher_range",
        subject_id=f"{serial_first}-{serial_last}",
        after={"changed": count},
        reason=reason,
    )
    return count


# --- lines -------------------------------------------------------------------------------


def _locked_line(session: Session, line_id: int) -> tuple[Line, Plan]:
    row = session.execute(
        select(Line, Plan)
        .join(Plan, Plan.id == Line.plan_id)
        .where(Line.id == line_id)
        .with_for_update(key_share=True, of=Line)
        .execution_options(populate_existing=True)
    ).one_or_none()
    if row is None:
        raise NotFound("No such line.")
    return row[0], row[1]


def extend_validity(session: Session, *, actor: Actor, line_id: int, days: int, reason: str) -> Line:
    """Goodwill: add days to a line's validity; a line in grace or suspension is back to
    active at once (the lifecycle sweep would restore it too)."""
    reason = _reason(reason)
    if not 1 <= days <= GOODWILL_DAYS_MAX:
        raise ValidationFailed("Extend by 1 to %(days)s days.", days=GOODWILL_DAYS_MAX, field="days")
    line, _plan = _locked_line(session, line_id)
    if line.state == LineState.TERMINATED:
        raise Conflict("A terminated line cannot be kept alive any more.")
    before = {"validity_date": line.validity_date, "state": line.state}
    start = max(line.validity_date, today()) if line.validity_date else today()
    line.validity_date = start + timedelta(days=days)
    now = utcnow()
    if line.state in RESTORABLE_STATES:
        record_transition(
            session,
            line_id=line.id,
            from_state=line.state,
            to_state=LineState.ACTIVE,
            reason=TransitionReason.CARE,
            validity_date=line.validity_date,
            now=now,
            actor=actor.email,
        )
        line.state = LineState.ACTIVE
        line.state_changed_at = now
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="extend_validity",
        subject_type="line",
        subject_id=line.id,
        before=before,
        after={"validity_date": line.validity_date, "state": line.state, "days": days},
        reason=reason,
    )
    return line


def _adjustment_state(adjustment: BalanceAdjustment) -> dict[str, Any]:
    return {
        "status": adjustment.status,
        "amount_minor": adjustment.amount_minor,
        "currency": adjustment.currency,
        "transfer_id": adjustment.transfer_id,
    }


def _post_adjustment(session: Session, adjustment: BalanceAdjustment, line: Line) -> None:
    """One ledger transfer, its id derived from the adjustment (posting twice is a no-op)."""
    expense = operator_account(
        session, kind=AccountKind.PROMOTION_EXPENSE, currency=adjustment.currency, qualifier="care"
    )
    transfer_id = f"care-adjustment:{adjustment.id}"
    post_transfer(
        session,
        transfer_id=transfer_id,
        kind="care_adjustment",
        currency=adjustment.currency,
        legs=[Leg(expense, -adjustment.amount_minor), Leg(line.main_account_id, adjustment.amount_minor)],
        description=f"Care adjustment ({adjustment.reason_code})",
        details={"adjustment": adjustment.id, "line": line.id},
    )
    adjustment.transfer_id = transfer_id
    adjustment.status = AdjustmentStatus.POSTED


def adjust_balance(
    session: Session,
    *,
    actor: Actor,
    line_id: int,
    amount_minor: int,
    reason_code: str,
    reason: str,
    settings: Settings,
) -> BalanceAdjustment:
    """A manual change of a line's main balance: posted now up to the threshold, else
    left pending for a second person (maker-checker)."""
    reason = _reason(reason)
    if reason_code not in ADJUSTMENT_REASON_CODES:
        raise ValidationFailed(
            "Choose a reason code: %(codes)s.", codes=", ".join(ADJUSTMENT_REASON_CODES), field="reason_code"
        )
    if amount_minor == 0 or abs(amount_minor) > ADJUSTMENT_AMOUNT_MINOR_MAX:
        raise ValidationFailed("Give a non-zero amount within bounds.", field="amount")
    line, plan = _locked_line(session, line_id)
    now = utcnow()
    adjustment = BalanceAdjustment(
        line_id=line.id,
        currency=plan.currency,
        amount_minor=amount_minor,
        reason_code=reason_code,
        reason=reason,
        status=AdjustmentStatus.PENDING,
        maker_staff_id=actor.id,
        maker_email=actor.email,
        checker_email="",
        decision_note="",
        created_at=now,
    )
    session.add(adjustment)
    session.flush()
    needs_checker = abs(amount_minor) > settings.care_adjustment_approval_above_minor
    before = {"balance_minor": balance_of(session, line.main_account_id)}
    if not needs_checker:
        _post_adjustment(session, adjustment, line)
        adjustment.decided_at = now
        session.flush()
    audit.record(
        session,
        actor=actor,
        action="request_adjustment" if needs_checker else "adjust_balance",
        subject_type="balance_adjustment",
        subject_id=adjustment.id,
        before=before,
        after={**_adjustment_state(adjustment), "line_id": line.id, "reason_code": reason_code},
        reason=reason,
    )
    return adjustment


def _pending_adjustment(session: Session, adjustment_id: int, actor: Actor, role: str) -> BalanceAdjustment:
    if role not in CHECKER_ROLES:
        raise PermissionDenied("Only a supervisor or an admin can decide on an adjustment.")
    adjustment = session.get(BalanceAdjustment, adjustment_id, with_for_update=True, populate_existing=True)
    if adjustment is None:
        raise NotFound("No such adjustment.")
    if adjustment.maker_staff_id == actor.id:
        raise PermissionDenied("A second person must approve or reject this adjustment, not its maker.")
    if adjustment.status != AdjustmentStatus.PENDING:
        raise Conflict("This adjustment was already decided (%(status)s).", status=adjustment.status)
    return adjustment


def _decide(session: Session, adjustment: BalanceAdjustment, actor: Actor, status: str, note: str) -> bool:
    """Move the adjustment out of pending by a conditional update: one decision wins."""
    decided = session.execute(
        update(BalanceAdjustment)
        .where(BalanceAdjustment.id == adjustment.id, BalanceAdjustment.status == AdjustmentStatus.PENDING)
        .values(
            status=status,
            checker_staff_id=actor.id,
            checker_email=actor.email,
            decision_note=note[:500],
            decided_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    if decided.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict("This adjustment was already decided.")
    session.refresh(adjustment)
    return True


def approve_adjustment(
    session: Session, *, actor: Actor, role: str, adjustment_id: int, note: str = ""
) -> BalanceAdjustment:
    """A different supervisor or admin approves: the adjustment posts, once."""
    adjustment = _pending_adjustment(session, adjustment_id, actor, role)
    before = _adjustment_state(adjustment)
    line, _plan = _locked_line(session, adjustment.line_id)
    _decide(session, adjustment, actor, AdjustmentStatus.POSTED, note)
    _post_adjustment(session, adjustment, line)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="approve_adjustment",
        subject_type="balance_adjustment",
        subject_id=adjustment.id,
        before=before,
        after=_adjustment_state(adjustment),
        reason=note,
    )
    return adjustment


def reject_adjustment(
    session: Session, *, actor: Actor, role: str, adjustment_id: int, note: str
) -> BalanceAdjustment:
    """A different supervisor or admin rejects: nothing is posted."""
    note = _reason(note)
    adjustment = _pending_adjustment(session, adjustment_id, actor, role)
    before = _adjustment_state(adjustment)
    _decide(session, adjustment, actor, AdjustmentStatus.REJECTED, note)
    audit.record(
        session,
        actor=actor,
        action="reject_adjustment",
        subject_type="balance_adjustment",
        subject_id=adjustment.id,
        before=before,
        after=_adjustment_state(adjustment),
        reason=note,
    )
    return adjustment


# --- disputes ----------------------------------------------------------------------------


def close_dispute(session: Session, *, actor: Actor, dispute_id: int, note: str) -> Dispute:
    """Answer a claim without a credit (the subscriber sees the note on the order page)."""
    note = _reason(note)
    dispute = session.get(Dispute, dispute_id, with_for_update=True, populate_existing=True)
    if dispute is None:
        raise NotFound("No such claim.")
    if dispute.status != DisputeStatus.OPEN:
        raise Conflict("This claim is already answered.")
    before = {"status": dispute.status}
    dispute.status = DisputeStatus.CLOSED
    dispute.resolution = "closed"
    dispute.note = note
    dispute.resolved_at = utcnow()
    dispute.resolved_by = actor.email
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="close_dispute",
        subject_type="dispute",
        subject_id=dispute.id,
        before=before,
        after={"status": dispute.status, "note": note},
        reason=note,
    )
    return dispute
