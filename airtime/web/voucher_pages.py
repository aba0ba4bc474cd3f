"""Voucher pages: redeem a PIN onto any line; the outlet till (sell e-PINs, statement)."""

from __future__ import annotations

import secrets
from datetime import date, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from airtime.accounts import service as accounts
from airtime.clock import today, utcnow
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.errors import AppError, PermissionDenied
from airtime.i18n import N_
from airtime.ledger.models import Entry, Transfer
from airtime.ledger.service import balance_of
from airtime.topups import service as topups
from airtime.topups.models import AmountRule, Channel
from airtime.vouchers import service as vouchers
from airtime.vouchers.models import Outlet, Voucher, VoucherEvent
from airtime.vouchers.pins import format_pin, format_serial
from airtime.web.context import (
    STAFF_COOKIE,
    check_csrf,
    client_ip,
    read_signed_cookie,
    redirect,
    render,
    visitor,
)
from airtime.web.permissions import StaffMember, StaffRole
from airtime.web.staff import add_login_door

router = APIRouter(include_in_schema=False)
CsrfChecked = Depends(check_csrf)
STAFF_SESSION_HOURS = 12


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.get("/redeem", response_class=HTMLResponse)
def redeem_form(request: Request) -> Response:
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        own_lines = accounts.customer_lines(session, customer_id=who.customer.id) if who.customer else []
        return render(
            request,
            who,
            "redeem.html",
            {"own_lines": own_lines, "msisdn": "", "error": None, "key": secrets.token_urlsafe(16)},
        )


@router.post("/redeem", response_class=HTMLResponse, dependencies=[CsrfChecked])
def redeem(
    request: Request,
    pin: Annotated[str, Form(max_length=40)] = "",
    msisdn: Annotated[str, Form(max_length=40)] = "",
    line_msisdn: Annotated[str, Form(max_length=40)] = "",
    idempotency_key: Annotated[str, Form(max_length=100)] = "",
) -> Response:
    """Redeem a PIN; a wrong one is counted (and may lock), so the failure is kept."""
    settings = _settings(request)
    # A typed number wins over the chosen own line.
    msisdn = msisdn.strip() or line_msisdn
    factory = request.app.state.session_factory
    try:
        with unit_of_work(factory) as session:
            who = visitor(request, session)
            line = topups.find_topupable_line(session, msisdn=msisdn, settings=settings)
            result = vouchers.redeem(
                session,
                settings=settings,
                pin=pin,
                line=line,
                channel=Channel.VOUCHER,
                customer_id=who.customer.id if who.customer else None,
                ip_address=client_ip(request),
                idempotency_scope=f"web-redeem:{who.customer.id if who.customer else 'anonymous'}",
                idempotency_key=idempotency_key or None,
                language=who.language,
            )
            return redirect(f"/topup/orders/{result.order.public_id}", who, settings)
    except AppError as error:
        with unit_of_work(factory) as session:
            who = visitor(request, session)
            own_lines = accounts.customer_lines(session, customer_id=who.customer.id) if who.customer else []
            return render(
                request,
                who,
                "redeem.html",
                {"own_lines": own_lines, "msisdn": msisdn, "error": error, "key": secrets.token_urlsafe(16)},
                status_code=error.status_code,
            )


# --- the outlet till -------------------------------------------------------------------


OutletStaff = Annotated[StaffMember, Depends(StaffRole("outlet", login_url="/outlet/login"))]


def _outlet_of(session: Session, staff: StaffMember) -> Outlet:
    """The outlet the till belongs to; an outlet that was closed refuses its staff."""
    outlet = session.get(Outlet, staff.outlet_id) if staff.outlet_id is not None else None
    if outlet is None or not outlet.active:
        raise PermissionDenied("This outlet is closed.")
    return outlet


add_login_door(
    router,
    path="/outlet/login",
    template="outlet_login.html",
    success_url="/outlet",
    may_enter=lambda staff: staff.outlet_id is not None,
    refusal=N_("This account does not belong to an outlet."),
    session_hours=STAFF_SESSION_HOURS,
)


@router.get("/outlet", response_class=HTMLResponse)
def till(request: Request, staff: OutletStaff) -> Response:
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        outlet = _outlet_of(session, staff)
        return render(request, who, "outlet_till.html", _till_context(session, outlet, staff, error=None))


def _till_context(
    session: Session, outlet: Outlet, staff: StaffMember, *, error: AppError | None
) -> dict[str, object]:
    rule = session.get(AmountRule, outlet.currency)
    return {
        "outlet": outlet,
        "staff": staff,
        "float_minor": balance_of(session, outlet.float_account_id),
        "values": rule.denominations if rule else [],
        "error": error,
        "key": secrets.token_urlsafe(16),
    }


@router.post("/outlet/sell", response_class=HTMLResponse, dependencies=[CsrfChecked])
def sell(
    request: Request,
    staff: OutletStaff,
    face_value_minor: Annotated[int, Form(ge=1)] = 0,
    idempotency_key: Annotated[str, Form(max_length=80)] = "",
) -> Response:
    """Sell an e-PIN for cash: paid from the float; the receipt shows the PIN once."""
    settings = _settings(request)
    factory = request.app.state.session_factory
    try:
        with unit_of_work(factory) as session:
            who = visitor(request, session)
            outlet = _outlet_of(session, staff)
            sale = vouchers.sell_epin(
                session,
                settings=settings,
                outlet=outlet,
                face_value_minor=face_value_minor,
                actor=f"outlet staff {staff.email}",
                idempotency_key=idempotency_key,
            )
            context = {
                "outlet": outlet,
                "sale": sale,
                "pin": format_pin(sale.pin) if sale.pin else None,
                "serial": format_serial(sale.serial),
                "site": settings.base_url,
            }
            return render(request, who, "outlet_receipt.html", context)
    except AppError as error:
        with unit_of_work(factory) as session:
            who = visitor(request, session)
            return render(
                request,
                who,
                "outlet_till.html",
                _till_context(session, _outlet_of(session, staff), staff, error=error),
                status_code=error.status_code,
            )


@router.get("/outlet/statement", response_class=HTMLResponse)
def statement(request: Request, staff: OutletStaff, day: date | None = None) -> Response:
    """The outlet's float movements for one day, with opening and closing balances."""
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        outlet = _outlet_of(session, staff)
        day = day or today()
        start = datetime.combine(day, time.min, tzinfo=utcnow().tzinfo)
        end = start + timedelta(days=1)
        rows = session.execute(
            select(Entry.created_at, Entry.amount_minor, Transfer.kind, Transfer.description)
            .join(Transfer, Transfer.id == Entry.transfer_id)
            .where(
                Entry.account_id == outlet.float_account_id, Entry.created_at >= start, Entry.created_at < end
            )
            .order_by(Entry.id)
        ).all()
        closing = balance_of(session, outlet.float_account_id) - sum(
            amount
            for at, amount, *_ in session.execute(
                select(Entry.created_at, Entry.amount_minor).where(
                    Entry.account_id == outlet.float_account_id, Entry.created_at >= end
                )
            )
        )
        opening = closing - sum(row.amount_minor for row in rows)
        sold_count = _vouchers_sold(session, outlet, start, end)
        return render(
            request,
            who,
            "outlet_statement.html",
            {
                "outlet": outlet,
                "day": day,
                "rows": rows,
                "opening": opening,
                "closing": closing,
                "sold_minor": -sum(row.amount_minor for row in rows if row.kind in SALE_KINDS),
                "sold_count": sold_count,
                "previous": day - timedelta(days=1),
                "next": day + timedelta(days=1) if day < today() else None,
            },
        )


SALE_KINDS = ("epin_sale", "voucher_release")


def _vouchers_sold(session: Session, outlet: Outlet, start: datetime, end: datetime) -> int:
    """Vouchers the outlet sold in the period: e-PINs one by one, printed cards by range."""
    epins = session.scalar(
        select(func.count())
        .select_from(VoucherEvent)
        .join(Voucher, Voucher.id == VoucherEvent.voucher_id)
        .where(
            VoucherEvent.event == "sold",
            Voucher.outlet_id == outlet.id,
            VoucherEvent.at >= start,
            VoucherEvent.at < end,
        )
    )
    cards = session.scalar(
        select(func.coalesce(func.sum(VoucherEvent.count), 0)).where(
            VoucherEvent.event == "activated",
            VoucherEvent.reason == f"outlet {outlet.code}",
            VoucherEvent.at >= start,
            VoucherEvent.at < end,
        )
    )
    return int(epins or 0) + int(cards or 0)


@router.post("/outlet/logout", dependencies=[CsrfChecked])
def outlet_logout(request: Request) -> Response:
    settings = _settings(request)
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        token = read_signed_cookie(request, STAFF_COOKIE, settings)
        if token:
            accounts.revoke_session(session, token=token)
    response = redirect("/outlet/login", who, settings)
    response.delete_cookie(STAFF_COOKIE, path="/")
    return response
