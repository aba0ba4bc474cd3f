"""Staff pages for vouchers: generate a batch (its PINs download once), release a serial
range, block and unblock with a reason, look a voucher up by serial, lift a lockout.
Admins may do everything; care agents and supervisors may look up and unlock."""

from __future__ import annotations

import tempfile
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.errors import AppError, ValidationFailed
from airtime.i18n import N_
from airtime.money import parse_money
from airtime.vouchers import service as vouchers
from airtime.vouchers.models import VoucherBatch
from airtime.web.context import (
    check_csrf,
    render,
    visitor,
)
from airtime.web.permissions import OPERATOR_ROLES, StaffMember, StaffRole
from airtime.web.staff import add_login_door

router = APIRouter(include_in_schema=False)
CsrfChecked = Depends(check_csrf)
STAFF_SESSION_HOURS = 8
WEB_BATCH_QUANTITY_MAX = 10_000
LOOKUP_ROLES = OPERATOR_ROLES
MANAGE_ROLES = ("admin",)
LookupStaff = Annotated[StaffMember, Depends(StaffRole(*LOOKUP_ROLES))]
ManageStaff = Annotated[StaffMember, Depends(StaffRole(*MANAGE_ROLES))]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _serial(text: str) -> int:
    digits = text.replace(" ", "").replace("-", "")
    if not digits.isdigit():
        raise ValidationFailed("%(value)s is not a serial number.", value=text[:30], field="serial")
    return int(digits)


add_login_door(
    router,
    path="/admin/login",
    template="admin_login.html",
    success_url="/admin/vouchers",
    may_enter=lambda staff: staff.role in LOOKUP_ROLES,
    refusal=N_("This account cannot use the staff pages."),
    session_hours=STAFF_SESSION_HOURS,
)


def _page(request: Request, session: Session, staff: StaffMember, **extra: object) -> Response:
    who = visitor(request, session)
    batches = session.scalars(select(VoucherBatch).order_by(VoucherBatch.id.desc()).limit(20)).all()
    context: dict[str, object] = {
        "staff": staff,
        "batches": batches,
        "error": None,
        "notice": "",
        "voucher": None,
        "events": [],
        "can_manage": staff.role in MANAGE_ROLES,
        "default_expiry": (date.today() + timedelta(days=365)).isoformat(),
    }
    context.update(extra)
    error = context["error"]
    status_code = error.status_code if isinstance(error, AppError) else 200
    return render(request, who, "admin_vouchers.html", context, status_code=status_code)


@router.get("/admin/vouchers", response_class=HTMLResponse)
def vouchers_page(request: Request, staff: LookupStaff, serial: str = "") -> Response:
    with unit_of_work(request.app.state.session_factory) as session:
        if not serial:
            return _page(request, session, staff)
        try:
            voucher, events = vouchers.by_serial(session, _serial(serial))
        except AppError as error:
            return _page(request, session, staff, error=error)
        return _page(request, session, staff, voucher=voucher, events=events)


@router.post("/admin/vouchers/generate", dependencies=[CsrfChecked])
def generate(
    request: Request,
    staff: ManageStaff,
    value: Annotated[str, Form(max_length=20)] = "",
    currency: Annotated[str, Form(max_length=3)] = "",
    quantity: Annotated[int, Form(ge=1, le=WEB_BATCH_QUANTITY_MAX)] = 1,
    expires_on: Annotated[date | None, Form()] = None,
    validity_days: Annotated[int | None, Form(ge=1, le=3650)] = None,
    outlet: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    """Make a batch and hand its PINs over once, as a CSV download; nothing keeps them."""
    settings = _settings(request)
    factory = request.app.state.session_factory
    actor = staff.email
    currency = (currency or settings.default_currency).upper()
    try:
        if expires_on is None:
            raise ValidationFailed("Give an expiry date.", field="expires_on")
        face_value_minor = parse_money(value, currency).amount_minor
        with tempfile.TemporaryDirectory() as directory:
            export = Path(directory) / "vouchers.csv"
            batch = vouchers.generate_batch(
                factory,
                settings=settings,
                currency=currency,
                face_value_minor=face_value_minor,
                quantity=quantity,
                expires_on=expires_on,
                export_path=export,
                created_by=actor,
                validity_days=validity_days,
                outlet_code=outlet or None,
            )
            content = export.read_bytes()
    except AppError as error:
        with unit_of_work(factory) as session:
            return _page(request, session, staff, error=error)
    return Response(
        content,
        media_type="text/csv",
        headers={
            "Content-Disposition": f'attachment; filename="voucher-batch-{batch.batch_id}.csv"',
            "Cache-Control": "no-store",
        },
    )


@router.post("/admin/vouchers/action", response_class=HTMLResponse, dependencies=[CsrfChecked])
def action(
    request: Request,
    staff: ManageStaff,
    operation: Annotated[str, Form(max_length=10)] = "",
    first: Annotated[str, Form(max_length=30)] = "",
    last: Annotated[str, Form(max_length=30)] = "",
    reason: Annotated[str, Form(max_length=300)] = "",
    outlet: Annotated[str, Form(max_length=40)] = "",
) -> Response:
    """Release, block or unblock a serial range (admins)."""
    factory = request.app.state.session_factory
    try:
        with unit_of_work(factory) as session:
            serial_first = _serial(first)
            serial_last = _serial(last) if last else serial_first
            if operation == "release":
                count = vouchers.activate_range(
                    session,
                    serial_first=serial_first,
                    serial_last=serial_last,
                    actor=staff.email,
                    outlet_code=outlet or None,
                )
            elif operation in ("block", "unblock"):
                change = vouchers.block if operation == "block" else vouchers.unblock
                count = change(
                    session,
                    serial_first=serial_first,
                    serial_last=serial_last,
                    actor=staff.email,
                    reason=reason,
                )
            else:
                raise ValidationFailed("Unknown action.")
    except AppError as error:
        with unit_of_work(factory) as session:
            return _page(request, session, staff, error=error)
    with unit_of_work(factory) as session:
        return _page(request, session, staff, notice=f"{operation}: {count}")


@router.post("/admin/vouchers/unlock", response_class=HTMLResponse, dependencies=[CsrfChecked])
def unlock(request: Request, staff: LookupStaff, key: Annotated[str, Form(max_length=120)] = "") -> Response:
    """Lift a redemption lockout (care, supervisors and admins)."""
    with unit_of_work(request.app.state.session_factory) as session:
        done = vouchers.unlock(session, key=key.strip(), actor=staff.email)
        return _page(request, session, staff, notice=f"unlock {key}: {'done' if done else 'not locked'}")
