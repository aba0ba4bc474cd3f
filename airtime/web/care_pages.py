"""The care console: search, a subscriber's lines and timeline, the queues, and the
actions that resolve them. Every action is one transaction with its audit row; a refusal
shows the error page with the reason and changes nothing."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from airtime.care import audit, console
from airtime.care import service as care
from airtime.care.disputes import for_order
from airtime.care.models import ADJUSTMENT_REASON_CODES
from airtime.clock import utcnow
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.errors import NotFound, ValidationFailed
from airtime.i18n import N_
from airtime.money import parse_money
from airtime.payments.base import PaymentProvider
from airtime.topups import service as topups
from airtime.web.context import check_csrf, redirect, render, visitor
from airtime.web.permissions import OPERATOR_ROLES, StaffMember, StaffRole
from airtime.web.staff import add_login_door

router = APIRouter(include_in_schema=False)
CsrfChecked = Depends(check_csrf)
STAFF_SESSION_HOURS = 8
CHECKER_ROLES = care.CHECKER_ROLES
CareStaff = Annotated[StaffMember, Depends(StaffRole(*OPERATOR_ROLES, login_url="/care/login"))]
SupervisorStaff = Annotated[StaffMember, Depends(StaffRole(*CHECKER_ROLES, login_url="/care/login"))]
Text = Annotated[str, Form(max_length=500)]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _providers(request: Request) -> dict[str, PaymentProvider]:
    providers: dict[str, PaymentProvider] = request.app.state.payment_providers
    return providers


def _back(request: Request, session: Session, url: str, done: str) -> Response:
    separator = "&" if "?" in url else "?"
    return redirect(f"{url}{separator}done={done}", visitor(request, session), _settings(request))


add_login_door(
    router,
    path="/care/login",
    template="care_login.html",
    success_url="/care",
    may_enter=lambda staff: staff.role in OPERATOR_ROLES,
    refusal=N_("This account cannot use the care console."),
    session_hours=STAFF_SESSION_HOURS,
)


@router.get("/care", response_class=HTMLResponse)
def home(request: Request, staff: CareStaff, q: str = "") -> Response:
    """Search, and the queues with the action that resolves each."""
    settings = _settings(request)
    with unit_of_work(request.app.state.session_factory) as session:
        hits = console.search(session, query=q, settings=settings) if q else []
        context = {
            "staff": staff,
            "q": q,
            "hits": hits,
            "searched": bool(q.strip()),
            "queues": console.queues(session, settings=settings),
            "can_check": staff.role in CHECKER_ROLES,
        }
        return render(request, visitor(request, session), "care_home.html", context)


@router.get("/care/lines/{line_id}", response_class=HTMLResponse)
def line_page(request: Request, staff: CareStaff, line_id: int, done: str = "") -> Response:
    with unit_of_work(request.app.state.session_factory) as session:
        view = console.line_view(session, line_id=line_id)
        if view is None:
            raise NotFound("No such line.")
        context = {
            "staff": staff,
            "view": view,
            "done": done,
            "reason_codes": ADJUSTMENT_REASON_CODES,
            "threshold_minor": _settings(request).care_adjustment_approval_above_minor,
            "can_check": staff.role in CHECKER_ROLES,
            "now_utc": utcnow(),
        }
        return render(request, visitor(request, session), "care_line.html", context)


@router.get("/care/orders/{public_id}", response_class=HTMLResponse)
def order_page(request: Request, staff: CareStaff, public_id: str, done: str = "") -> Response:
    with unit_of_work(request.app.state.session_factory) as session:
        order = topups.get_order(session, public_id)
        context = {
            "staff": staff,
            "order": order,
            "stages": topups.stages(order),
            "dispute": for_order(session, order_id=order.id),
            "entries": audit.entries(session, subject_type="topup_order", subject_id=order.public_id),
            "done": done,
            "can_check": staff.role in CHECKER_ROLES,
            "refundable": order.payment_provider in _providers(request),
        }
        return render(request, visitor(request, session), "care_order.html", context)


@router.post("/care/orders/{public_id}/credit", dependencies=[CsrfChecked])
def credit(request: Request, staff: CareStaff, public_id: str, reason: Text = "") -> Response:
    """Re-run crediting of a paid order."""
    with unit_of_work(request.app.state.session_factory) as session:
        care.credit_order(
            session, actor=staff, public_id=public_id, reason=reason, settings=_settings(request)
        )
        return _back(request, session, f"/care/orders/{public_id}", "credited")


@router.post("/care/orders/{public_id}/ask-provider", dependencies=[CsrfChecked])
def ask_provider(request: Request, staff: CareStaff, public_id: str) -> Response:
    """Ask the payment provider about a waiting order now."""
    with unit_of_work(request.app.state.session_factory) as session:
        care.ask_provider(
            session,
            actor=staff,
            public_id=public_id,
            providers=_providers(request),
            settings=_settings(request),
        )
        return _back(request, session, f"/care/orders/{public_id}", "asked")


@router.post("/care/orders/{public_id}/refund", dependencies=[CsrfChecked])
def refund(
    request: Request,
    staff: SupervisorStaff,
    public_id: str,
    amount: Annotated[str, Form(max_length=20)] = "",
    reason: Text = "",
) -> Response:
    """Refund through the payment provider (supervisors and admins)."""
    with unit_of_work(request.app.state.session_factory) as session:
        order = topups.get_order(session, public_id)
        amount_minor = parse_money(amount, order.currency).amount_minor if amount.strip() else None
        result = care.refund_order(
            session,
            actor=staff,
            public_id=public_id,
            amount_minor=amount_minor,
            reason=reason,
            providers=_providers(request),
        )
        return _back(
            request, session, f"/care/orders/{public_id}", "refunded" if result.applied else "refund_asked"
        )


@router.post("/care/orders/{public_id}/receipt", dependencies=[CsrfChecked])
def resend_receipt(
    request: Request, staff: CareStaff, public_id: str, recipient: Annotated[str, Form(max_length=254)] = ""
) -> Response:
    with unit_of_work(request.app.state.session_factory) as session:
        care.resend_receipt(
            session, actor=staff, public_id=public_id, recipient=recipient, settings=_settings(request)
        )
        return _back(request, session, f"/care/orders/{public_id}", "receipt_sent")


@router.post("/care/lines/{line_id}/validity", dependencies=[CsrfChecked])
def extend_validity(
    request: Request,
    staff: CareStaff,
    line_id: int,
    days: Annotated[int, Form(ge=1, le=365)],
    reason: Text = "",
) -> Response:
    """Goodwill validity extension."""
    with unit_of_work(request.app.state.session_factory) as session:
        care.extend_validity(session, actor=staff, line_id=line_id, days=days, reason=reason)
        return _back(request, session, f"/care/lines/{line_id}", "extended")


@router.post("/care/lines/{line_id}/adjustments", dependencies=[CsrfChecked])
def adjust(
    request: Request,
    staff: CareStaff,
    line_id: int,
    amount: Annotated[str, Form(max_length=20)] = "",
    direction: Annotated[str, Form(max_length=6)] = "credit",
    reason_code: Annotated[str, Form(max_length=40)] = "",
    reason: Text = "",
) -> Response:
    """A manual balance adjustment; above the threshold it waits for a second person."""
    settings = _settings(request)
    with unit_of_work(request.app.state.session_factory) as session:
        view = console.line_view(session, line_id=line_id)
        if view is None:
            raise NotFound("No such line.")
        if direction not in ("credit", "debit"):
            raise ValidationFailed("Choose credit or debit.", field="direction")
        amount_minor = parse_money(amount, view.plan.currency).amount_minor
        adjustment = care.adjust_balance(
            session,
            actor=staff,
            line_id=line_id,
            amount_minor=-amount_minor if direction == "debit" else amount_minor,
            reason_code=reason_code,
            reason=reason,
            settings=settings,
        )
        return _back(request, session, f"/care/lines/{line_id}", f"adjustment_{adjustment.status}")


@router.post("/care/adjustments/{adjustment_id}/approve", dependencies=[CsrfChecked])
def approve(request: Request, staff: SupervisorStaff, adjustment_id: int, note: Text = "") -> Response:
    with unit_of_work(request.app.state.session_factory) as session:
        care.approve_adjustment(session, actor=staff, role=staff.role, adjustment_id=adjustment_id, note=note)
        return _back(request, session, "/care", "approved")


@router.post("/care/adjustments/{adjustment_id}/reject", dependencies=[CsrfChecked])
def reject(request: Request, staff: SupervisorStaff, adjustment_id: int, note: Text = "") -> Response:
    with unit_of_work(request.app.state.session_factory) as session:
        care.reject_adjustment(session, actor=staff, role=staff.role, adjustment_id=adjustment_id, note=note)
        return _back(request, session, "/care", "rejected")


@router.post("/care/unlock", dependencies=[CsrfChecked])
def unlock(
    request: Request,
    staff: CareStaff,
    key: Annotated[str, Form(max_length=120)] = "",
    back: Annotated[str, Form(max_length=100)] = "/care",
    reason: Text = "",
) -> Response:
    """Lift a voucher PIN lockout."""
    with unit_of_work(request.app.state.session_factory) as session:
        care.unlock_voucher_attempts(session, actor=staff, key=key, reason=reason)
        return _back(request, session, back if back.startswith("/care") else "/care", "unlocked")


def _serial(text: str) -> int:
    digits = text.replace(" ", "").replace("-", "")
    if not digits.isdigit() or len(digits) > 18:
        raise ValidationFailed("%(value)s is not a serial number.", value=text[:30], field="serial")
    return int(digits)


@router.post("/care/vouchers/block", dependencies=[CsrfChecked])
def block(
    request: Request,
    staff: SupervisorStaff,
    first: Annotated[str, Form(max_length=30)] = "",
    last: Annotated[str, Form(max_length=30)] = "",
    operation: Annotated[str, Form(max_length=10)] = "block",
    reason: Text = "",
) -> Response:
    """Block or unblock one voucher or a serial range (supervisors and admins)."""
    with unit_of_work(request.app.state.session_factory) as session:
        serial_first = _serial(first)
        serial_last = _serial(last) if last.strip() else serial_first
        care.block_vouchers(
            session,
            actor=staff,
            serial_first=serial_first,
            serial_last=serial_last,
            reason=reason,
            unblock=operation == "unblock",
        )
        return _back(request, session, "/care", f"{'unblocked' if operation == 'unblock' else 'blocked'}")


@router.post("/care/disputes/{dispute_id}/close", dependencies=[CsrfChecked])
def close_dispute(request: Request, staff: CareStaff, dispute_id: int, note: Text = "") -> Response:
    with unit_of_work(request.app.state.session_factory) as session:
        care.close_dispute(session, actor=staff, dispute_id=dispute_id, note=note)
        return _back(request, session, "/care", "closed")


@router.get("/care/audit", response_class=HTMLResponse)
def audit_log(request: Request, staff: SupervisorStaff) -> Response:
    """The newest audit rows (supervisors and admins)."""
    with unit_of_work(request.app.state.session_factory) as session:
        context = {"staff": staff, "entries": audit.entries(session, limit=200)}
        return render(request, visitor(request, session), "care_audit.html", context)
