"""Staff log-in for the outlet till and the staff pages: one flow, separate cookie, shorter
sessions than customers'."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from fastapi import Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from airtime.accounts import service as accounts
from airtime.accounts.models import StaffUser
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.errors import AppError, AuthenticationFailed
from airtime.web.context import (
    STAFF_COOKIE,
    read_signed_cookie,
    redirect,
    render_page,
    set_signed_cookie,
    visitor,
)


def current_staff(request: Request, session: Session) -> StaffUser | None:
    """The active staff member behind the staff cookie, or None."""
    settings: Settings = request.app.state.settings
    token = read_signed_cookie(request, STAFF_COOKIE, settings)
    auth = accounts.resolve_session(session, token=token, kind="staff") if token else None
    staff = session.get(StaffUser, auth.staff_user_id) if auth and auth.staff_user_id else None
    return staff if staff is not None and staff.active else None


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
    """Check the credentials (failures counted), refuse staff this door is not for, then
    start a staff session; a refusal re-renders ``template`` with the reason."""
    settings: Settings = request.app.state.settings
    factory = request.app.state.session_factory
    ip_address = request.client.host if request.client else ""
    try:
        with unit_of_work(factory) as session:
            who = visitor(request, session)
            staff = accounts.authenticate_staff(
                session, email=email, password=password, ip_address=ip_address, settings=settings
            )
            if not may_enter(staff):
                raise AuthenticationFailed(refusal)
            token = accounts.open_session(
                session,
                kind="staff",
                lifetime=timedelta(hours=session_hours),
                staff_user_id=staff.id,
                ip_address=ip_address,
                user_agent=request.headers.get("user-agent", ""),
            )
    except AppError as error:
        return render_page(request, template, {"email": email, "error": error}, status_code=error.status_code)
    response = redirect(success_url, who, settings)
    set_signed_cookie(response, STAFF_COOKIE, token, settings, max_age=session_hours * 3600)
    return response
