"""Subscriber pages. Each handler is one unit of work; the rules live in the services."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from airtime.accounts import service as accounts
from airtime.accounts.models import Line
from airtime.clock import today, utcnow
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.errors import AppError, NotFound
from airtime.i18n import LANGUAGES, require_language
from airtime.lifecycle.calendar import calendar_token, customer_for_token
from airtime.lifecycle.calendar import feed as calendar_feed
from airtime.lifecycle.numbers import customer_numbers, describe
from airtime.lifecycle.service import set_low_balance_threshold
from airtime.money import parse_money
from airtime.notifications.service import recent
from airtime.topups import service as topups
from airtime.web.context import (
    LANGUAGE_COOKIE,
    SESSION_COOKIE,
    Visitor,
    check_csrf,
    client_ip,
    redirect,
    render,
    render_page,
    session_hash,
    set_signed_cookie,
    visitor,
)

router = APIRouter(include_in_schema=False)
CsrfChecked = Depends(check_csrf)


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _login_redirect(request: Request, who: Visitor) -> RedirectResponse:
    return redirect(f"/login?next={request.url.path}", who, _settings(request))


def _safe_next(next_url: str | None) -> str:
    """Only same-site paths, so the login form cannot be used to send people elsewhere."""
    if next_url and next_url.startswith("/") and not next_url.startswith("//"):
        return next_url
    return "/lines"


@router.get("/", response_class=HTMLResponse)
def home(request: Request) -> Response:
    return render_page(request, "home.html")


@router.get("/register", response_class=HTMLResponse)
def register_form(request: Request) -> Response:
    return render_page(request, "register.html", {"email": "", "error": None})


@router.post("/register", response_class=HTMLResponse, dependencies=[CsrfChecked])
def register(
    request: Request,
    email: Annotated[str, Form(max_length=254)] = "",
    password: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    settings = _settings(request)
    factory = request.app.state.session_factory
    try:
        with unit_of_work(factory) as session:
            who = visitor(request, session)
            customer = accounts.register_customer(
                session, email=email, password=password, language=who.language, settings=settings
            )
            token = accounts.open_session(
                session,
                kind="web",
                lifetime=timedelta(hours=settings.customer_session_hours),
                customer_id=customer.id,
                ip_address=client_ip(request),
                user_agent=request.headers.get("user-agent", ""),
            )
    except AppError as error:
        context = {"email": email, "error": error}
        return render_page(request, "register.html", context, status_code=error.status_code)
    response = redirect("/lines", who, settings)
    set_signed_cookie(
        response, SESSION_COOKIE, token, settings, max_age=settings.customer_session_hours * 3600
    )
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> Response:
    return render_page(request, "login.html", {"email": "", "error": None, "next": _safe_next(next)})


@router.post("/login", response_class=HTMLResponse, dependencies=[CsrfChecked])
def login(
    request: Request,
    email: Annotated[str, Form(max_length=254)] = "",
    password: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=500)] = "/lines",
) -> Response:
    settings = _settings(request)
    factory = request.app.state.session_factory
    try:
        with unit_of_work(factory) as session:
            who = visitor(request, session)
            customer = accounts.authenticate(
                session, email=email, password=password, ip_address=client_ip(request), settings=settings
            )
            token = accounts.open_session(
                session,
                kind="web",
                lifetime=timedelta(hours=settings.customer_session_hours),
                customer_id=customer.id,
                ip_address=client_ip(request),
                user_agent=request.headers.get("user-agent", ""),
            )
    except AppError as error:
        context = {"email": email, "error": error, "next": _safe_next(next)}
        return render_page(request, "login.html", context, status_code=error.status_code)
    response = redirect(_safe_next(next), who, settings)
    set_signed_cookie(
        response, SESSION_COOKIE, token, settings, max_age=settings.customer_session_hours * 3600
    )
    return response


@router.post("/logout", dependencies=[CsrfChecked])
def logout(request: Request) -> Response:
    settings = _settings(request)
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        if who.session_token:
            accounts.revoke_session(session, token=who.session_token)
    response = redirect("/", who, settings)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/language", dependencies=[CsrfChecked])
def switch_language(
    request: Request,
    language: Annotated[str, Form(max_length=20)] = "",
    next: Annotated[str, Form(max_length=500)] = "/",
) -> Response:
    settings = _settings(request)
    factory = request.app.state.session_factory
    try:
        chosen = require_language(language)
    except AppError as error:
        return render_page(request, "error.html", {"error": error}, status_code=error.status_code)
    with unit_of_work(factory) as session:
        who = visitor(request, session)
        if who.customer is not None:
            accounts.set_language(session, customer_id=who.customer.id, language=chosen)
    target = next if next.startswith("/") and not next.startswith("//") else "/"
    response = redirect(target, who, settings)
    response.set_cookie(LANGUAGE_COOKIE, chosen, max_age=60 * 60 * 24 * 365, samesite="lax", path="/")
    return response


@router.get("/forgot-password", response_class=HTMLResponse)
def forgot_form(request: Request) -> Response:
    return render_page(request, "forgot_password.html", {"email": "", "error": None, "sent": False})


@router.post("/forgot-password", response_class=HTMLResponse, dependencies=[CsrfChecked])
def forgot(request: Request, email: Annotated[str, Form(max_length=254)] = "") -> Response:
    factory = request.app.state.session_factory
    try:
        with unit_of_work(factory) as session:
            accounts.request_password_reset(session, email=email, settings=_settings(request))
    except AppError as error:
        context = {"email": email, "error": error, "sent": False}
        return render_page(request, "forgot_password.html", context, status_code=error.status_code)
    return render_page(request, "forgot_password.html", {"email": email, "error": None, "sent": True})


@router.get("/reset-password/{token}", response_class=HTMLResponse)
def reset_form(request: Request, token: str) -> Response:
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        try:
            accounts.check_reset_token(session, token=token)
        except AppError as error:
            return render(
                request, who, "reset_password.html", {"token": None, "error": error}, status_code=400
            )
        return render(request, who, "reset_password.html", {"token": token, "error": None})


@router.post("/reset-password/{token}", response_class=HTMLResponse, dependencies=[CsrfChecked])
def reset(request: Request, token: str, password: Annotated[str, Form(max_length=200)] = "") -> Response:
    settings = _settings(request)
    factory = request.app.state.session_factory
    try:
        with unit_of_work(factory) as session:
            who = visitor(request, session)
            accounts.reset_password(session, token=token, new_password=password, settings=settings)
    except AppError as error:
        still_usable = error.code == "validation_failed"
        context = {"token": token if still_usable else None, "error": error}
        return render_page(request, "reset_password.html", context, status_code=error.status_code)
    response = redirect("/login?reset=1", who, settings)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/account/password", response_class=HTMLResponse)
def password_form(request: Request) -> Response:
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        if who.customer is None:
            return _login_redirect(request, who)
        return render(request, who, "change_password.html", {"error": None, "done": False})


@router.post("/account/password", response_class=HTMLResponse, dependencies=[CsrfChecked])
def change_password(
    request: Request,
    current_password: Annotated[str, Form(max_length=200)] = "",
    new_password: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    factory = request.app.state.session_factory
    try:
        with unit_of_work(factory) as session:
            who = visitor(request, session)
            if who.customer is None:
                return _login_redirect(request, who)
            accounts.change_password(
                session,
                customer_id=who.customer.id,
                current_password=current_password,
                new_password=new_password,
                keep_session_hash=session_hash(who),
            )
    except AppError as error:
        context = {"error": error, "done": False}
        return render_page(request, "change_password.html", context, status_code=error.status_code)
    return render_page(request, "change_password.html", {"error": None, "done": True})


@router.get("/lines", response_class=HTMLResponse)
def my_lines(request: Request) -> Response:
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        if who.customer is None:
            return _login_redirect(request, who)
        numbers = customer_numbers(session, customer_id=who.customer.id, today=today())
        settings = _settings(request)
        token = calendar_token(who.customer, secret_key=settings.effective_secret_key())
        calendar_url = f"{settings.base_url.rstrip('/')}/calendar/{token}.ics"
        return render(
            request,
            who,
            "lines.html",
            {
                "numbers": [(number, describe(number, who.language)) for number in numbers],
                "today": today(),
                "calendar_url": calendar_url,
                # webcal:// makes phones offer "subscribe" instead of importing a copy once.
                "webcal_url": "webcal://" + calendar_url.split("://", 1)[1],
            },
        )


@router.get("/calendar/{token}.ics")
def number_calendar(request: Request, token: str) -> Response:
    """The customer's deadlines as an iCalendar feed, behind the secret link shown on "My numbers"."""
    settings = _settings(request)
    with unit_of_work(request.app.state.session_factory) as session:
        customer = customer_for_token(session, token=token, secret_key=settings.effective_secret_key())
        if customer is None:
            who = visitor(request, session)
            return render(request, who, "error.html", {"error": NotFound("Not found")}, status_code=404)
        body = calendar_feed(
            session,
            customer=customer,
            base_url=settings.base_url,
            operator_name=settings.operator_name,
            now=utcnow(),
        )
    return Response(
        body,
        media_type="text/calendar; charset=utf-8",
        headers={
            "Cache-Control": "private, no-store",
            "Content-Disposition": 'inline; filename="my-numbers.ics"',
            "X-Robots-Tag": "noindex",
            "Referrer-Policy": "no-referrer",
        },
    )


@router.get("/lines/{line_id}", response_class=HTMLResponse)
def line_detail(
    request: Request, line_id: int, before: Annotated[int | None, Query(ge=1)] = None
) -> Response:
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        if who.customer is None:
            return _login_redirect(request, who)
        try:
            line = accounts.customer_line(session, customer_id=who.customer.id, line_id=line_id)
        except NotFound as error:
            return render(request, who, "error.html", {"error": error}, status_code=404)
        return _line_page(request, session, who, line, before=before)


def _line_page(
    request: Request,
    session: Session,
    who: Visitor,
    line: accounts.LineView,
    *,
    before: int | None = None,
    alert_error: AppError | None = None,
    alert_text: str | None = None,
) -> Response:
    threshold = session.scalar(select(Line.low_balance_threshold_minor).where(Line.id == line.id))
    return render(
        request,
        who,
        "line.html",
        {
            "line": line,
            "history": accounts.line_history(session, line=line, before_entry_id=before, limit=25),
            "today": today(),
            "page_size": 25,
            "allowances": topups.line_allowances(session, line_id=line.id),
            "orders": topups.line_orders(session, line_id=line.id, limit=10),
            "bundles": topups.active_bundles(session, line.currency),
            "bundle_key": secrets.token_urlsafe(16),
            "bundle_bought": bool(request.query_params.get("bundle")),
            "alert_threshold": threshold,
            "alert_text": alert_text,
            "alert_error": alert_error,
            "alert_saved": bool(request.query_params.get("alert")),
        },
        status_code=alert_error.status_code if alert_error else 200,
    )


@router.post("/lines/{line_id}/alert", response_class=HTMLResponse, dependencies=[CsrfChecked])
def set_low_balance_alert(
    request: Request, line_id: int, threshold: Annotated[str, Form(max_length=40)] = ""
) -> Response:
    """Alert me by SMS and email when the balance falls under this amount (empty: off)."""
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        if who.customer is None:
            return _login_redirect(request, who)
        try:
            line = accounts.customer_line(session, customer_id=who.customer.id, line_id=line_id)
        except NotFound as error:
            return render(request, who, "error.html", {"error": error}, status_code=404)
        try:
            amount = parse_money(threshold, line.currency).amount_minor if threshold.strip() else None
            set_low_balance_threshold(session, line_id=line.id, threshold_minor=amount)
        except AppError as error:
            return _line_page(request, session, who, line, alert_error=error, alert_text=threshold)
    return redirect(f"/lines/{line_id}?alert=saved#alert", who, _settings(request))


@router.get("/outbox", response_class=HTMLResponse)
def outbox(request: Request) -> Response:
    """The demo's readable outbox: every email and SMS the system wrote."""
    settings = _settings(request)
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        if settings.email_provider != "outbox" or settings.environment == "production":
            return render(request, who, "error.html", {"error": NotFound("Not found")}, status_code=404)
        return render(request, who, "outbox.html", {"messages": recent(session, limit=100)})


__all__ = ["LANGUAGES", "router"]
