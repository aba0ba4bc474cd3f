"""Auto top-up pages: a line's rule, the customer's saved payment methods (added through the
provider's own page), recent auto top-ups and why a rule is paused; and the sandbox
provider's test-mode page where a test card is "saved"."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from airtime.accounts.models import Line
from airtime.accounts.service import customer_line
from airtime.autotopup import service as autotopup
from airtime.autotopup.models import MethodStatus
from airtime.clock import utcnow
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.errors import AppError, NotFound
from airtime.payments.base import PaymentProvider
from airtime.payments.registry import provider_named, providers_saving_methods
from airtime.payments.sandbox import SANDBOX_CARDS, SandboxProvider
from airtime.topups import service as topups
from airtime.web.context import Visitor, check_csrf, redirect, render, visitor

router = APIRouter(include_in_schema=False)
CsrfChecked = Depends(check_csrf)
Short = Annotated[str, Form(max_length=40)]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _providers(request: Request) -> dict[str, PaymentProvider]:
    providers: dict[str, PaymentProvider] = request.app.state.payment_providers
    return providers


def _own_line(session: Session, who: Visitor, line_id: int) -> Line:
    """The logged-in customer's line; anyone else's is "not found"."""
    line = session.get(Line, line_id)
    if who.customer is None or line is None or line.customer_id != who.customer.id:
        raise NotFound("No such line on your account.")
    return line


def _page_context(session: Session, who: Visitor, line_id: int, request: Request) -> dict[str, Any]:
    assert who.customer is not None
    line = _own_line(session, who, line_id)
    rule = autotopup.rule_for_line(session, line_id=line.id)
    currency = topups.quote_currency(session, line)
    providers = _providers(request)
    return {
        "line": customer_line(session, customer_id=who.customer.id, line_id=line.id),
        "rule": rule,
        "status": autotopup.rule_status(rule, now=utcnow()) if rule else None,
        "attempts": autotopup.recent_attempts(session, rule_id=rule.id) if rule else [],
        "methods": autotopup.customer_methods(session, customer_id=who.customer.id),
        "saving_providers": list(providers_saving_methods(providers)),
        "other_providers": [name for name, provider in providers.items() if not provider.saves_methods],
        "currency": currency,
        "amount_rule": topups.amount_rule(session, currency),
        "days_max": autotopup.DAYS_BEFORE_VALIDITY_MAX,
        "error": None,
        "form": None,
        "notice": "",
    }


def _money_text(amount_minor: int | None) -> str:
    """A stored amount as the form shows it (plain decimal, parsed back by parse_money)."""
    if amount_minor is None:
        return ""
    return f"{amount_minor // 100}.{amount_minor % 100:02d}"


def _form_values(rule: Any) -> dict[str, Any]:
    if rule is None:
        return {
            "method": "",
            "amount": "",
            "balance_below": "",
            "days_before": "",
            "cap": "",
            "enabled": True,
        }
    return {
        "method": str(rule.payment_method_id),
        "amount": _money_text(rule.amount_minor),
        "balance_below": _money_text(rule.balance_below_minor),
        "days_before": "" if rule.days_before_validity is None else str(rule.days_before_validity),
        "cap": _money_text(rule.monthly_cap_minor),
        "enabled": rule.enabled,
    }


@router.get("/lines/{line_id}/autotopup", response_class=HTMLResponse)
def autotopup_page(
    request: Request, line_id: int, saved: str = "", cancelled: str = "", changed: str = ""
) -> Response:
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        if who.customer is None:
            return redirect(f"/login?next=/lines/{line_id}/autotopup", who, _settings(request))
        context = _page_context(session, who, line_id, request)
        context["form"] = _form_values(context["rule"])
        context["notice"] = "saved" if saved else "cancelled" if cancelled else "changed" if changed else ""
        return render(request, who, "autotopup.html", context)


def _refused(request: Request, line_id: int, error: AppError, form: dict[str, Any] | None = None) -> Response:
    """The page again with the refusal, in a transaction of its own (the refused one rolled back)."""
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        context = _page_context(session, who, line_id, request)
        context["form"] = form or _form_values(context["rule"])
        context["error"] = error
        return render(request, who, "autotopup.html", context, status_code=error.status_code)


@router.post("/lines/{line_id}/autotopup", response_class=HTMLResponse, dependencies=[CsrfChecked])
def save_rule(
    request: Request,
    line_id: int,
    method: Short = "",
    amount: Short = "",
    balance_below: Short = "",
    days_before: Short = "",
    cap: Short = "",
    enabled: Short = "",
) -> Response:
    """Create or change the line's rule; a refusal shows the form again with nothing changed."""
    settings = _settings(request)
    form = {
        "method": method,
        "amount": amount,
        "balance_below": balance_below,
        "days_before": days_before,
        "cap": cap,
        "enabled": bool(enabled),
    }
    try:
        with unit_of_work(request.app.state.session_factory) as session:
            who = visitor(request, session)
            if who.customer is None:
                return redirect(f"/login?next=/lines/{line_id}/autotopup", who, settings)
            line = _own_line(session, who, line_id)
            autotopup.save_rule(
                session,
                line=line,
                customer_id=who.customer.id,
                method_id=int(method) if method.isdigit() else 0,
                amount_text=amount,
                balance_below_text=balance_below,
                days_before_text=days_before,
                cap_text=cap,
                enabled=bool(enabled),
            )
    except NotFound:
        raise
    except AppError as error:
        return _refused(request, line_id, error, form)
    return redirect(f"/lines/{line_id}/autotopup?changed=1", who, settings)


@router.post("/lines/{line_id}/autotopup/methods", dependencies=[CsrfChecked])
def add_method(request: Request, line_id: int, provider: Short = "") -> Response:
    """Send the customer to the provider's page to save a payment method."""
    settings = _settings(request)
    try:
        with unit_of_work(request.app.state.session_factory) as session:
            who = visitor(request, session)
            if who.customer is None:
                return redirect(f"/login?next=/lines/{line_id}/autotopup", who, settings)
            _own_line(session, who, line_id)
            _, target = autotopup.start_saving_method(
                session,
                customer=who.customer,
                provider=provider_named(_providers(request), provider),
                line_id=line_id,
                settings=settings,
            )
    except NotFound:
        raise
    except AppError as error:
        return _refused(request, line_id, error)
    return redirect(target, who, settings)


@router.get("/autotopup/methods/{public_id}/return")
def method_return(request: Request, public_id: str, line: int = 0, cancelled: str = "") -> Response:
    """Back from the provider: keep the token if the method was saved."""
    settings = _settings(request)
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        if who.customer is None:
            return redirect(f"/login?next={request.url.path}?line={line}", who, settings)
        own_line = session.get(Line, line) if line else None
        if own_line is None or own_line.customer_id != who.customer.id:
            line = 0
        method = autotopup.finish_saving_method(
            session, customer_id=who.customer.id, public_id=public_id[:40], providers=_providers(request)
        )
        outcome = "saved=1" if method.status == MethodStatus.ACTIVE else "cancelled=1"
    return redirect(f"/lines/{line}/autotopup?{outcome}" if line else "/lines", who, settings)


@router.post("/lines/{line_id}/autotopup/methods/{method_id}/remove", dependencies=[CsrfChecked])
def remove_method(request: Request, line_id: int, method_id: int) -> Response:
    settings = _settings(request)
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        if who.customer is None:
            return redirect(f"/login?next=/lines/{line_id}/autotopup", who, settings)
        _own_line(session, who, line_id)
        autotopup.remove_method(session, customer_id=who.customer.id, method_id=method_id)
    return redirect(f"/lines/{line_id}/autotopup?changed=1", who, settings)


# --- the sandbox provider's "save a card" page (test mode) ---------------------------------


def _sandbox(request: Request) -> SandboxProvider:
    sandbox = _providers(request).get("sandbox")
    if not isinstance(sandbox, SandboxProvider):
        raise NotFound("No such test card page.")
    return sandbox


@router.get("/sandbox/save/{reference}", response_class=HTMLResponse)
def sandbox_save_page(request: Request, reference: str) -> Response:
    from airtime.payments.models import SandboxCardSetup

    _sandbox(request)
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        setup = session.get(SandboxCardSetup, reference[:40])
        if setup is None:
            raise NotFound("No such test card page.")
        return render(request, who, "sandbox_save.html", {"setup": setup, "cards": SANDBOX_CARDS})


@router.post("/sandbox/save/{reference}", dependencies=[CsrfChecked])
def sandbox_save(request: Request, reference: str, card: Short = "") -> Response:
    sandbox = _sandbox(request)
    settings = _settings(request)
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        setup = sandbox.decide_setup(session, reference[:40], card)
        target = setup.return_url + ("&cancelled=1" if card == "cancel" else "")
    return redirect(target, who, settings)
