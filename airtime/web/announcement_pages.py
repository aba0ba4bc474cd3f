"""Announcements: admins publish, edit and end notices; the portal shows the ones running now.

Portal pages show them through ``_announcements.html``. The announcements are read by
:func:`load_announcements`, a dependency added to the portal router in ``create_app``: it
runs before the page's own unit of work (a nested one would wait for SQLite's write lock),
only for the pages that show them, and leaves them on ``request.state`` for the template.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from airtime.announcements import service as announcements
from airtime.announcements.models import Announcement, AnnouncementLevel
from airtime.clock import utcnow
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.errors import AppError, ValidationFailed
from airtime.web.context import check_csrf, environment, redirect, render, visitor
from airtime.web.permissions import StaffMember, StaffRole

router = APIRouter(include_in_schema=False)
CsrfChecked = Depends(check_csrf)
AdminStaff = Annotated[StaffMember, Depends(StaffRole("admin"))]
LIST_URL = "/admin/announcements"
TIME_FORMAT = "%Y-%m-%dT%H:%M"


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


# The portal pages that show announcements (route paths as declared).
PORTAL_PATHS = frozenset({"/", "/lines", "/lines/{line_id}"})


def load_announcements(request: Request) -> None:
    """Read the announcements running now for a portal page that shows them."""
    route = request.scope.get("route")
    if request.method != "GET" or getattr(route, "path", None) not in PORTAL_PATHS:
        return
    with unit_of_work(request.app.state.session_factory) as session:
        request.state.announcements = announcements.showing(session)


def showing_now(request: Request) -> list[Announcement]:
    """The announcements :func:`load_announcements` read for this page (none on others)."""
    found: list[Announcement] = getattr(request.state, "announcements", [])
    return found


environment.globals["announcements"] = showing_now


def _moment(text: str, field: str) -> datetime | None:
    """A ``datetime-local`` form value, read as UTC (the form says so)."""
    if not text:
        return None
    try:
        return datetime.strptime(text[:16], TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError as error:
        raise ValidationFailed("Times are written YYYY-MM-DD HH:MM.", field=field) from error


def _draft(
    *, level: str, title_en: str, body_en: str, title_zh: str, body_zh: str, starts_at: str, ends_at: str
) -> announcements.AnnouncementDraft:
    return announcements.AnnouncementDraft(
        level=level,
        title_en=title_en,
        body_en=body_en,
        title_zh=title_zh,
        body_zh=body_zh,
        starts_at=_moment(starts_at, "starts_at"),
        ends_at=_moment(ends_at, "ends_at"),
    )


def _form_values(announcement: Announcement | None) -> dict[str, str]:
    if announcement is None:
        now = utcnow()
        return {
            "level": AnnouncementLevel.INFO,
            "title_en": "",
            "body_en": "",
            "title_zh": "",
            "body_zh": "",
            "starts_at": now.strftime(TIME_FORMAT),
            "ends_at": (now + timedelta(days=30)).strftime(TIME_FORMAT),
        }
    return {
        "level": announcement.level,
        "title_en": announcement.title_en,
        "body_en": announcement.body_en,
        "title_zh": announcement.title_zh,
        "body_zh": announcement.body_zh,
        "starts_at": announcement.starts_at.strftime(TIME_FORMAT),
        "ends_at": announcement.ends_at.strftime(TIME_FORMAT),
    }


def _page(
    request: Request,
    staff: StaffMember,
    *,
    editing: Announcement | None = None,
    values: dict[str, str] | None = None,
    error: AppError | None = None,
    notice: str = "",
) -> Response:
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        context = {
            "staff": staff,
            "items": announcements.recent(session),
            "editing": editing,
            "values": values or _form_values(editing),
            "levels": AnnouncementLevel.ALL,
            "now": utcnow(),
            "error": error,
            "notice": notice,
        }
        return render(
            request, who, "announcements.html", context, status_code=error.status_code if error else 200
        )


@router.get(LIST_URL, response_class=HTMLResponse)
def list_page(request: Request, staff: AdminStaff, notice: str = "") -> Response:
    return _page(request, staff, notice=notice[:20])


@router.get(LIST_URL + "/{announcement_id}", response_class=HTMLResponse)
def edit_page(request: Request, staff: AdminStaff, announcement_id: int) -> Response:
    with unit_of_work(request.app.state.session_factory) as session:
        editing = announcements.get(session, announcement_id)
    return _page(request, staff, editing=editing)


FormText = Annotated[str, Form(max_length=200)]
FormBody = Annotated[str, Form(max_length=announcements.BODY_LENGTH_MAX + 100)]


def _form(
    level: Annotated[str, Form(max_length=20)] = "",
    title_en: FormText = "",
    body_en: FormBody = "",
    title_zh: FormText = "",
    body_zh: FormBody = "",
    starts_at: Annotated[str, Form(max_length=30)] = "",
    ends_at: Annotated[str, Form(max_length=30)] = "",
) -> dict[str, str]:
    """The announcement form's fields as typed (shown again as they were on a refusal)."""
    return {
        "level": level,
        "title_en": title_en,
        "body_en": body_en,
        "title_zh": title_zh,
        "body_zh": body_zh,
        "starts_at": starts_at,
        "ends_at": ends_at,
    }


AnnouncementForm = Annotated[dict[str, str], Depends(_form)]


@router.post(LIST_URL, response_class=HTMLResponse, dependencies=[CsrfChecked])
def create(
    request: Request,
    staff: AdminStaff,
    values: AnnouncementForm,
) -> Response:
    """Publish a new announcement; a refusal shows the form again with what was typed."""
    try:
        with unit_of_work(request.app.state.session_factory) as session:
            announcements.publish(session, draft=_draft(**values), actor=staff)
    except AppError as error:
        return _page(request, staff, values=values, error=error)
    with unit_of_work(request.app.state.session_factory) as session:
        return redirect(LIST_URL + "?notice=published", visitor(request, session), _settings(request))


@router.post(LIST_URL + "/{announcement_id}", response_class=HTMLResponse, dependencies=[CsrfChecked])
def update(
    request: Request,
    staff: AdminStaff,
    announcement_id: int,
    values: AnnouncementForm,
) -> Response:
    """Save changes to an announcement (all fields checked before any is changed)."""
    try:
        with unit_of_work(request.app.state.session_factory) as session:
            announcements.edit(session, announcement_id=announcement_id, draft=_draft(**values), actor=staff)
    except AppError as error:
        with unit_of_work(request.app.state.session_factory) as session:
            editing = session.get(Announcement, announcement_id)
        if editing is None:
            raise
        return _page(request, staff, editing=editing, values=values, error=error)
    with unit_of_work(request.app.state.session_factory) as session:
        return redirect(LIST_URL + "?notice=saved", visitor(request, session), _settings(request))


@router.post(LIST_URL + "/{announcement_id}/end", dependencies=[CsrfChecked])
def end(request: Request, staff: AdminStaff, announcement_id: int) -> Response:
    """Stop showing an announcement now."""
    with unit_of_work(request.app.state.session_factory) as session:
        announcements.end(session, announcement_id=announcement_id, actor=staff)
        return redirect(LIST_URL + "?notice=ended", visitor(request, session), _settings(request))


__all__ = ["load_announcements", "router", "showing_now"]
