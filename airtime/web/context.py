"""What every page needs: the signed cookies, the visitor's language, CSRF and rendering."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from itsdangerous import BadSignature, Signer
from sqlalchemy.orm import Session

from airtime.accounts.models import Customer
from airtime.accounts.service import resolve_session
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.errors import CsrfFailed
from airtime.i18n import HTML_LANG, LANGUAGES, negotiate, parse_language
from airtime.security import new_token, token_hash
from airtime.templating import language_context, make_environment

SESSION_COOKIE = "airtime_session"
CSRF_COOKIE = "airtime_csrf"
LANGUAGE_COOKIE = "airtime_lang"
# Staff (outlet, care, admin) sessions: separate from customers', shorter-lived.
STAFF_COOKIE = "airtime_staff"
CSRF_FIELD = "csrf_token"
TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
environment = make_environment(TEMPLATE_DIR, autoescape=True)


@dataclass
class Visitor:
    """Who is looking at a page, in which language, with which CSRF token."""

    customer: Customer | None
    session_token: str
    language: str
    csrf_token: str
    set_csrf_cookie: bool


def client_ip(request: Request) -> str:
    """The address the request came from ("" when the server does not know it)."""
    return request.client.host if request.client else ""


def _signer(settings: Settings, purpose: str) -> Signer:
    return Signer(settings.effective_secret_key(), salt=f"airtime.{purpose}")


def read_signed_cookie(request: Request, name: str, settings: Settings) -> str:
    raw = request.cookies.get(name, "")
    if not raw:
        return ""
    try:
        return _signer(settings, name).unsign(raw).decode()
    except BadSignature:
        return ""


def set_signed_cookie(response: Response, name: str, value: str, settings: Settings, *, max_age: int) -> None:
    response.set_cookie(
        name,
        _signer(settings, name).sign(value).decode(),
        max_age=max_age,
        httponly=True,
        samesite="lax",
        secure=settings.secure_cookies,
        path="/",
    )


def visitor(request: Request, session: Session) -> Visitor:
    """Resolve the visitor once per request: session cookie, language and CSRF token."""
    settings: Settings = request.app.state.settings
    session_token = read_signed_cookie(request, SESSION_COOKIE, settings)
    auth = resolve_session(session, token=session_token, kind="web") if session_token else None
    customer = session.get(Customer, auth.customer_id) if auth and auth.customer_id else None
    cookie_language = parse_language(request.cookies.get(LANGUAGE_COOKIE))
    language = (
        cookie_language
        or (customer.language if customer else None)
        or negotiate(request.headers.get("accept-language"))
        or settings.default_language
    )
    csrf_token = read_signed_cookie(request, CSRF_COOKIE, settings)
    return Visitor(
        customer=customer,
        session_token=session_token if customer else "",
        language=language,
        csrf_token=csrf_token or new_token(),
        set_csrf_cookie=not csrf_token,
    )


async def check_csrf(request: Request) -> None:
    """Double-submit check: the form's token must equal the signed cookie's."""
    settings: Settings = request.app.state.settings
    form = await request.form()
    submitted = str(form.get(CSRF_FIELD, ""))
    expected = read_signed_cookie(request, CSRF_COOKIE, settings)
    if not expected or not submitted or not hmac.compare_digest(submitted, expected):
        raise CsrfFailed(
            "This form has expired or did not come from this site. Go back, reload the page and try again."
        )


def render(
    request: Request,
    who: Visitor,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    values = {
        "request": request,
        "customer": who.customer,
        "csrf_field": CSRF_FIELD,
        "csrf_token": who.csrf_token,
        "languages": LANGUAGES,
        "html_lang": HTML_LANG[who.language],
        "operator_name": settings.operator_name,
        "show_outbox": settings.email_provider == "outbox" and settings.environment != "production",
        "path": request.url.path,
        **language_context(who.language),
        **(context or {}),
    }
    response = HTMLResponse(environment.get_template(template).render(values), status_code=status_code)
    finish(response, who, settings)
    response.headers["Cache-Control"] = "no-store"
    return response


def render_page(
    request: Request, template: str, context: dict[str, Any] | None = None, *, status_code: int = 200
) -> HTMLResponse:
    """Render in a unit of work of its own: for forms shown again after a refusal, when the
    refused request's own transaction has already ended."""
    with unit_of_work(request.app.state.session_factory) as session:
        return render(request, visitor(request, session), template, context, status_code=status_code)


def finish(response: Response, who: Visitor, settings: Settings) -> Response:
    if who.set_csrf_cookie:
        set_signed_cookie(response, CSRF_COOKIE, who.csrf_token, settings, max_age=60 * 60 * 24 * 30)
    return response


def redirect(url: str, who: Visitor, settings: Settings) -> RedirectResponse:
    response = RedirectResponse(url, status_code=303)
    finish(response, who, settings)
    return response


def session_hash(who: Visitor) -> str | None:
    return token_hash(who.session_token) if who.session_token else None
