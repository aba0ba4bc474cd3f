"""The agent portal for agent staff: sell a top-up from the float, history, float, statement."""

from __future__ import annotations

import secrets
from datetime import date, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from airtime.accounts import service as accounts
from airtime.accounts.models import StaffUser
from airtime.agents import service as agents
from airtime.agents.models import Agent
from airtime.clock import today
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.errors import AppError, ValidationFailed
from airtime.i18n import N_
from airtime.money import parse_money
from airtime.topups.models import AmountRule
from airtime.web.context import STAFF_COOKIE, check_csrf, read_signed_cookie, redirect, render, visitor
from airtime.web.permissions import StaffRole
from airtime.web.staff import add_login_door, current_staff

router = APIRouter(include_in_schema=False)
CsrfChecked = Depends(check_csrf)
STAFF_SESSION_HOURS = 12
LOGIN_URL = "/agent/login"


# Least privilege (airtime/web/permissions.py): only agent staff reach these pages.
AgentStaff = Depends(StaffRole("agent", login_url="/agent/login"))


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _agent_staff(request: Request, session: Session) -> tuple[StaffUser, Agent] | None:
    """The logged-in agent staff member and their (active) agent, or None."""
    staff = current_staff(request, session)
    if staff is None or staff.agent_id is None:
        return None
    agent = session.get(Agent, staff.agent_id)
    return (staff, agent) if agent is not None and agent.active else None


add_login_door(
    router,
    path="/agent/login",
    template="agent_login.html",
    success_url="/agent",
    may_enter=lambda staff: staff.agent_id is not None,
    refusal=N_("This account does not belong to an agent."),
    session_hours=STAFF_SESSION_HOURS,
)


def _sell_context(
    session: Session, agent: Agent, *, error: AppError | None, msisdn: str = ""
) -> dict[str, object]:
    rule = session.get(AmountRule, agent.currency)
    return {
        "agent": agent,
        "state": agents.float_status(session, agent=agent),
        "values": rule.denominations if rule else [],
        "custom_allowed": bool(rule and rule.custom_allowed),
        "msisdn": msisdn,
        "error": error,
        "key": secrets.token_urlsafe(16),
    }


@router.get("/agent", response_class=HTMLResponse, dependencies=[AgentStaff])
def home(request: Request) -> Response:
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        found = _agent_staff(request, session)
        if found is None:
            return redirect(LOGIN_URL, who, _settings(request))
        return render(request, who, "agent_sell.html", _sell_context(session, found[1], error=None))


@router.post("/agent/sell", response_class=HTMLResponse, dependencies=[AgentStaff, CsrfChecked])
def sell(
    request: Request,
    msisdn: Annotated[str, Form(max_length=40)] = "",
    amount_minor: Annotated[int | None, Form(ge=1, le=10**9)] = None,
    amount_text: Annotated[str, Form(max_length=20)] = "",
    idempotency_key: Annotated[str, Form(max_length=80)] = "",
) -> Response:
    """Top up a customer's line from the float; a typed amount wins over the chosen one."""
    settings = _settings(request)
    factory = request.app.state.session_factory
    try:
        with unit_of_work(factory) as session:
            who = visitor(request, session)
            found = _agent_staff(request, session)
            if found is None:
                return redirect(LOGIN_URL, who, settings)
            staff, agent = found
            amount = (
                parse_money(amount_text, agent.currency).amount_minor if amount_text.strip() else amount_minor
            )
            if amount is None:
                raise ValidationFailed("Choose an amount.", field="amount")
            sale = agents.sell(
                session,
                agent=agent,
                msisdn=msisdn,
                amount_minor=amount,
                idempotency_key=idempotency_key,
                settings=settings,
                staff_user_id=staff.id,
            )
            return render(
                request, who, "agent_receipt.html", {"agent": agent, "sale": sale.sale, "order": sale.order}
            )
    except AppError as error:
        with unit_of_work(factory) as session:
            who = visitor(request, session)
            found = _agent_staff(request, session)
            if found is None:
                return redirect(LOGIN_URL, who, settings)
            return render(
                request,
                who,
                "agent_sell.html",
                _sell_context(session, found[1], error=error, msisdn=msisdn),
                status_code=error.status_code,
            )


@router.get("/agent/history", response_class=HTMLResponse, dependencies=[AgentStaff])
def history(request: Request, before: int | None = None) -> Response:
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        found = _agent_staff(request, session)
        if found is None:
            return redirect(LOGIN_URL, who, _settings(request))
        agent = found[1]
        rows = agents.list_sales(session, agent=agent, limit=50, before_id=before)
        return render(
            request,
            who,
            "agent_history.html",
            {
                "agent": agent,
                "rows": rows,
                "state": agents.float_status(session, agent=agent),
                "older": rows[-1][0].id if len(rows) == 50 else None,
            },
        )


def _statement(
    request: Request, session: Session, agent: Agent, period: str, day: date | None
) -> agents.Statement:
    start, end = agents.period_bounds(period, day or today())
    return agents.statement(session, agent=agent, start=start, end=end)


@router.get("/agent/statement", response_class=HTMLResponse, dependencies=[AgentStaff])
def statement(request: Request, period: str = "day", day: date | None = None) -> Response:
    """The float's movements for a day or a month, with opening and closing balances."""
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        found = _agent_staff(request, session)
        if found is None:
            return redirect(LOGIN_URL, who, _settings(request))
        agent = found[1]
        day = day or today()
        period = "month" if period == "month" else "day"
        result = _statement(request, session, agent, period, day)
        previous = result.start.date() - timedelta(days=1)
        following = result.end.date()
        return render(
            request,
            who,
            "agent_statement.html",
            {
                "agent": agent,
                "statement": result,
                "period": period,
                "label": day.strftime("%Y-%m") if period == "month" else day.isoformat(),
                "day": day,
                "previous": previous.replace(day=1) if period == "month" else previous,
                "next": following if following <= today() else None,
            },
        )


@router.get("/agent/statement.csv", dependencies=[AgentStaff])
def statement_csv(request: Request, period: str = "day", day: date | None = None) -> Response:
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        found = _agent_staff(request, session)
        if found is None:
            return redirect(LOGIN_URL, who, _settings(request))
        agent = found[1]
        day = day or today()
        period = "month" if period == "month" else "day"
        result = _statement(request, session, agent, period, day)
        label = day.strftime("%Y-%m") if period == "month" else day.isoformat()
        return Response(
            agents.statement_csv(result),
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="statement-{agent.code}-{label}.csv"',
                "Cache-Control": "no-store",
            },
        )


@router.post("/agent/logout", dependencies=[CsrfChecked])
def agent_logout(request: Request) -> Response:
    settings = _settings(request)
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        token = read_signed_cookie(request, STAFF_COOKIE, settings)
        if token:
            accounts.revoke_session(session, token=token)
    response = redirect(LOGIN_URL, who, settings)
    response.delete_cookie(STAFF_COOKIE, path="/")
    return response
