"""Least privilege for staff: every staff page and staff API route names the roles it is for.

One dependency both enforces and declares::

    CareStaff = Annotated[StaffMember, Depends(StaffRole("care", "supervisor", "admin"))]

    @router.get("/care")
    def console(request: Request, staff: CareStaff) -> Response: ...

The guard reads the staff session (the staff cookie, or a staff bearer token for the API;
a customer's session or token is of another kind and never matches), refuses a role the
route is not for with 403 (the HTML error page, or problem+json under ``/api/``), and
sends a visitor without a staff session to the log-in page (401 problem+json for the API).
Because the allowed roles live on the dependency, ``staff_routes(app)`` can list every
guarded route with its roles, and a test walks them all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from sqlalchemy import update
from sqlalchemy.orm import Session

from airtime.accounts import service as accounts
from airtime.accounts.models import AuthSession, StaffUser
from airtime.clock import utcnow
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.errors import AuthenticationFailed, PermissionDenied
from airtime.web.context import STAFF_COOKIE, read_signed_cookie

# Every role a staff user can have; other modules (agents) add theirs here.
OPERATOR_ROLES = ("care", "supervisor", "admin")
ALL_STAFF_ROLES = ("care", "supervisor", "admin", "outlet", "agent")
# Roles whose sessions end after a spell of inactivity (a till at a shop counter does not).
IDLE_TIMEOUT_ROLES = OPERATOR_ROLES
# Operators' sessions: at most this long, and ended after this long without a request.
STAFF_SESSION_LIFETIME = timedelta(hours=8)
STAFF_IDLE_TIMEOUT = timedelta(minutes=30)
# An idle session is extended at most this often, so a busy page does not write every request.
IDLE_EXTENSION_STEP = timedelta(minutes=1)


class StaffLoginRequired(AuthenticationFailed):
    """No staff session: pages send the visitor to ``location`` (a log-in page)."""

    code = "staff_login_required"
    title = "Staff log-in required"

    def __init__(self, message: str, *, location: str, **params: Any) -> None:
        super().__init__(message, **params)
        self.location = location


@dataclass(frozen=True, slots=True)
class StaffMember:
    """The staff member behind a request, as the guard found them (no database object)."""

    id: int
    email: str
    role: str
    outlet_id: int | None
    agent_id: int | None
    language: str


def _token(request: Request, settings: Settings) -> str:
    """The staff session's secret: the signed staff cookie, else a bearer token."""
    token = read_signed_cookie(request, STAFF_COOKIE, settings)
    if token:
        return token
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


def resolve_staff(request: Request, session: Session) -> StaffUser | None:
    """The active staff member behind the request's staff session, or None; keeps an
    operator's session alive while it is used (idle timeout, never past its absolute end)."""
    settings: Settings = request.app.state.settings
    token = _token(request, settings)
    auth = accounts.resolve_session(session, token=token, kind="staff") if token else None
    if auth is None or auth.staff_user_id is None:
        return None
    staff = session.get(StaffUser, auth.staff_user_id)
    if staff is None or not staff.active:
        return None
    if staff.role in IDLE_TIMEOUT_ROLES:
        _extend_idle(session, auth)
    return staff


def _extend_idle(session: Session, auth: AuthSession) -> None:
    absolute_end: datetime = auth.created_at + STAFF_SESSION_LIFETIME
    wanted = min(absolute_end, utcnow() + STAFF_IDLE_TIMEOUT)
    if wanted - auth.expires_at >= IDLE_EXTENSION_STEP:
        session.execute(
            update(AuthSession)
            .where(AuthSession.token_hash == auth.token_hash, AuthSession.revoked_at.is_(None))
            .values(expires_at=wanted)
        )


class StaffRole:
    """A FastAPI dependency: the request's staff member if their role is one of ``roles``."""

    def __init__(self, *roles: str, login_url: str = "/admin/login") -> None:
        unknown = set(roles) - set(ALL_STAFF_ROLES)
        if not roles or unknown:
            raise ValueError(f"StaffRole needs known roles, not {sorted(unknown) or 'none'}")
        self.roles = frozenset(roles)
        self.login_url = login_url

    def __repr__(self) -> str:
        return f"StaffRole({', '.join(sorted(self.roles))})"

    def __call__(self, request: Request) -> StaffMember:
        with unit_of_work(request.app.state.session_factory) as session:
            staff = resolve_staff(request, session)
            if staff is None:
                raise StaffLoginRequired("Log in to the staff pages first.", location=self.login_url)
            if staff.role not in self.roles:
                raise PermissionDenied("Your role (%(role)s) cannot do this.", role=staff.role)
            return StaffMember(
                id=staff.id,
                email=staff.email,
                role=staff.role,
                outlet_id=staff.outlet_id,
                agent_id=getattr(staff, "agent_id", None),
                language=staff.language,
            )


def _guards(dependant: Dependant) -> Iterator[StaffRole]:
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, StaffRole):
            yield dependency.call
        yield from _guards(dependency)


@dataclass(frozen=True, slots=True)
class RouteAccess:
    """One route of the app (its full path and methods) and the roles it admits (None: open)."""

    path: str
    methods: frozenset[str]
    roles: frozenset[str] | None


def _roles(dependant: Dependant | None) -> frozenset[str] | None:
    """The roles a route is for (the intersection of its guards), or None if unguarded."""
    guards = list(_guards(dependant)) if dependant is not None else []
    if not guards:
        return None
    roles = frozenset(ALL_STAFF_ROLES)
    for guard in guards:
        roles &= guard.roles
    return roles


def route_access(app: FastAPI) -> list[RouteAccess]:
    """Every API route of the app, included routers too, with the roles it admits."""
    found = []
    for context in iter_route_contexts(app.routes):
        if not isinstance(context.original_route, APIRoute) or context.path is None:
            continue
        found.append(
            RouteAccess(
                path=context.path,
                methods=frozenset(context.methods or ()),
                roles=_roles(getattr(context, "dependant", None)),
            )
        )
    return found


def staff_routes(app: FastAPI) -> list[RouteAccess]:
    """Every guarded route of the app."""
    return [route for route in route_access(app) if route.roles is not None]
