"""The second step of every staff log-in: the TOTP code, or enrolment the first time;
and the staff log-out."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from airtime.accounts import service as accounts
from airtime.accounts.models import StaffUser
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.errors import AppError
from airtime.staff import totp
from airtime.web.context import (
    STAFF_COOKIE,
    check_csrf,
    client_ip,
    read_signed_cookie,
    redirect,
    render,
    set_signed_cookie,
    visitor,
)
from airtime.web.staff import PENDING_COOKIE, open_staff_session, pending_login

router = APIRouter(include_in_schema=False)
CsrfChecked = Depends(check_csrf)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _pending_staff(request: Request, session: Session) -> tuple[dict[str, Any], StaffUser] | None:
    pending = pending_login(request)
    staff = session.get(StaffUser, pending.get("staff")) if pending else None
    if pending is None or staff is None or not staff.active:
        return None
    return pending, staff


def _start_over(request: Request, session: Session) -> Response:
    response = redirect("/admin/login", visitor(request, session), _settings(request))
    response.delete_cookie(PENDING_COOKIE, path="/staff")
    return response


def _enter(request: Request, session: Session, pending: dict[str, Any], staff: StaffUser) -> Response:
    settings = _settings(request)
    hours = int(pending.get("hours", 8))
    token = open_staff_session(request, session, staff=staff, session_hours=hours)
    response = redirect(str(pending.get("next", "/admin/vouchers")), visitor(request, session), settings)
    set_signed_cookie(response, STAFF_COOKIE, token, settings, max_age=hours * 3600)
    response.delete_cookie(PENDING_COOKIE, path="/staff")
    return response


@router.get("/staff/two-factor", response_class=HTMLResponse)
def code_form(request: Request) -> Response:
    with unit_of_work(request.app.state.session_factory) as session:
        found = _pending_staff(request, session)
        if found is None:
            return _start_over(request, session)
        return render(request, visitor(request, session), "staff_two_factor.html", {"error": None})


@router.post("/staff/two-factor", response_class=HTMLResponse, dependencies=[CsrfChecked])
def check_code(request: Request, code: Annotated[str, Form(max_length=20)] = "") -> Response:
    factory = request.app.state.session_factory
    try:
        with unit_of_work(factory) as session:
            found = _pending_staff(request, session)
            if found is None:
                return _start_over(request, session)
            pending, staff = found
            totp.verify(
                session, staff=staff, code=code, ip_address=client_ip(request), settings=_settings(request)
            )
            return _enter(request, session, pending, staff)
    except AppError as error:
        with unit_of_work(factory) as session:
            return render(
                request,
                visitor(request, session),
                "staff_two_factor.html",
                {"error": error},
                status_code=error.status_code,
            )


def _enrol_page(request: Request, session: Session, staff: StaffUser, error: AppError | None) -> Response:
    """A new secret, shown this once as a QR code and as text (reloading makes another)."""
    settings = _settings(request)
    secret = totp.start_enrolment(session, staff=staff, settings=settings)
    uri = totp.provisioning_uri(secret, email=staff.email, issuer=settings.operator_name)
    context = {
        "error": error,
        "secret": " ".join(secret[index : index + 4] for index in range(0, len(secret), 4)),
        "qr_svg": totp.qr_svg(uri),
        "email": staff.email,
    }
    status_code = error.status_code if error else 200
    return render(
        request, visitor(request, session), "staff_two_factor_enrol.html", context, status_code=status_code
    )


@router.get("/staff/two-factor/enrol", response_class=HTMLResponse)
def enrol_form(request: Request) -> Response:
    with unit_of_work(request.app.state.session_factory) as session:
        found = _pending_staff(request, session)
        if found is None or totp.is_enrolled(session, staff_user_id=found[1].id):
            return _start_over(request, session)
        return _enrol_page(request, session, found[1], None)


@router.post("/staff/two-factor/enrol", response_class=HTMLResponse, dependencies=[CsrfChecked])
def confirm_enrolment(request: Request, code: Annotated[str, Form(max_length=20)] = "") -> Response:
    factory = request.app.state.session_factory
    try:
        with unit_of_work(factory) as session:
            found = _pending_staff(request, session)
            if found is None:
                return _start_over(request, session)
            pending, staff = found
            totp.verify(
                session,
                staff=staff,
                code=code,
                ip_address=client_ip(request),
                settings=_settings(request),
                confirming=True,
            )
            return _enter(request, session, pending, staff)
    except AppError as error:
        # The secret already shown is kept: let the person type the next code from it.
        with unit_of_work(factory) as session:
            return render(
                request,
                visitor(request, session),
                "staff_two_factor.html",
                {"error": error, "enrolling": True},
                status_code=error.status_code,
            )


@router.post("/staff/logout", dependencies=[CsrfChecked])
def logout(request: Request) -> Response:
    settings = _settings(request)
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        token = read_signed_cookie(request, STAFF_COOKIE, settings)
        if token:
            accounts.revoke_session(session, token=token)
    response = redirect("/admin/login", who, settings)
    response.delete_cookie(STAFF_COOKIE, path="/")
    return response
