"""Staff log-in for the outlet till, the staff pages and the care console: one flow,
separate cookie, shorter sessions than customers', and a second factor (TOTP).

Password first; then, for roles that need it (or anyone enrolled), a short-lived signed
"password ok" cookie carries the staff member to the code step (or to enrolment the first
time); only a good code opens the staff session.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Session

from airtime.accounts import service as accounts
from airtime.accounts.models import StaffUser
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.errors import AppError, AuthenticationFailed
from airtime.staff import totp
from airtime.web.context import (
    STAFF_COOKIE,
    check_csrf,
    client_ip,
    redirect,
    render,
    render_page,
    set_signed_cookie,
    visitor,
)
from airtime.web.permissions import IDLE_TIMEOUT_ROLES, STAFF_IDLE_TIMEOUT, resolve_staff

# The "password ok, code next" step: signed, and only good for a few minutes.
PENDING_COOKIE = "airtime_staff_pending"
PENDING_SECONDS = 300
TWO_FACTOR_URL = "/staff/two-factor"
ENROL_URL = "/staff/two-factor/enrol"


def current_staff(request: Request, session: Session) -> StaffUser | None:
    """The active staff member behind the staff session, or None."""
    return resolve_staff(request, session)


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.effective_secret_key(), salt="airtime.staff-pending")


def pending_login(request: Request) -> dict[str, Any] | None:
    """The "password ok" step of a log-in in progress, if fresh: staff id, where to go, hours."""
    settings: Settings = request.app.state.settings
    raw = request.cookies.get(PENDING_COOKIE, "")
    if not raw:
        return None
    try:
        value = _serializer(settings).loads(raw, max_age=PENDING_SECONDS)
    except BadSignature:
        return None
    return value if isinstance(value, dict) else None


def staff_login(
    request: Request,
    *,
    email: str,
    password: str,
    template: str,
    success_url: str,
    may_enter: Callable[[StaffUser], bool],
    refusal: str,
    session_hours: int,
) -> Response:
    """Check the credentials (failures counted), refuse staff this door is not for, then go
    to the code step (or enrolment), or start the session for staff without a second factor;
    a refusal re-renders ``template`` with the reason."""
    settings: Settings = request.app.state.settings
    factory = request.app.state.session_factory
    ip_address = client_ip(request)
    try:
        with unit_of_work(factory) as session:
            who = visitor(request, session)
            staff = accounts.authenticate_staff(
                session, email=email, password=password, ip_address=ip_address, settings=settings
            )
            if not may_enter(staff):
                raise AuthenticationFailed(refusal)
            enrolled = totp.is_enrolled(session, staff_user_id=staff.id)
            if enrolled or totp.required_for(staff.role):
                pending = {
                    "staff": staff.id,
                    "next": success_url,
                    "hours": session_hours,
                    "door": request.url.path,
                }
                response = redirect(TWO_FACTOR_URL if enrolled else ENROL_URL, who, settings)
                response.set_cookie(
                    PENDING_COOKIE,
                    _serializer(settings).dumps(pending),
                    max_age=PENDING_SECONDS,
                    httponly=True,
                    samesite="lax",
                    secure=settings.secure_cookies,
                    path="/staff",
                )
                return response
            token = open_staff_session(request, session, staff=staff, session_hours=session_hours)
    except AppError as error:
        return render_page(request, template, {"email": email, "error": error}, status_code=error.status_code)
    response = redirect(success_url, who, settings)
    set_signed_cookie(response, STAFF_COOKIE, token, settings, max_age=session_hours * 3600)
    return response


def open_staff_session(request: Request, session: Session, *, staff: StaffUser, session_hours: int) -> str:
    """Start a staff session; operators' sessions end after a spell of inactivity (each
    request extends them, never past ``session_hours``)."""
    lifetime = STAFF_IDLE_TIMEOUT if staff.role in IDLE_TIMEOUT_ROLES else timedelta(hours=session_hours)
    return accounts.open_session(
        session,
        kind="staff",
        lifetime=min(lifetime, timedelta(hours=session_hours)),
        staff_user_id=staff.id,
        ip_address=client_ip(request),
        user_agent=request.headers.get("user-agent", ""),
    )


def add_login_door(
    router: APIRouter,
    *,
    path: str,
    template: str,
    success_url: str,
    may_enter: Callable[[StaffUser], bool],
    refusal: str,
    session_hours: int,
) -> None:
    """Register one staff door on ``router``: the log-in form at ``path`` (GET) and its
    submission (POST, CSRF-checked) through :func:`staff_login`."""

    @router.get(path, response_class=HTMLResponse)
    def login_form(request: Request) -> Response:
        with unit_of_work(request.app.state.session_factory) as session:
            return render(request, visitor(request, session), template, {"email": "", "error": None})

    @router.post(path, response_class=HTMLResponse, dependencies=[Depends(check_csrf)])
    def login(
        request: Request,
        email: Annotated[str, Form(max_length=254)] = "",
        password: Annotated[str, Form(max_length=200)] = "",
    ) -> Response:
        return staff_login(
            request,
            email=email,
            password=password,
            template=template,
            success_url=success_url,
            may_enter=may_enter,
            refusal=refusal,
            session_hours=session_hours,
        )
