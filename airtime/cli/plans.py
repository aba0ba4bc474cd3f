"""``airtime plans`` and ``airtime lines``: configure plans (validity rule, lifecycle periods)
and provision lines on them."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer
from sqlalchemy import select

from airtime.accounts.models import Customer, LineState, ValidityRule
from airtime.accounts.plans import PlanSettings, list_plans, parse_tiers, save_plan
from airtime.accounts.service import add_line
from airtime.cli.common import console, database_session, fail
from airtime.config import get_settings
from airtime.errors import AppError
from airtime.money import format_money, parse_money

plans_app = typer.Typer(
    help="Plans: validity rule, grace, suspension, quarantine, fees.", no_args_is_help=True
)
lines_app = typer.Typer(help="Lines: provision a number on a plan.", no_args_is_help=True)


@plans_app.command("set")
def set_plan(
    code: Annotated[str, typer.Argument(help="Plan code, e.g. KEEP-GBP.")],
    name: Annotated[str | None, typer.Option(help="Name (English).")] = None,
    name_zh: Annotated[str | None, typer.Option(help="Name (Chinese).")] = None,
    currency: Annotated[str | None, typer.Option(help="ISO 4217; fixed once set.")] = None,
    rule: Annotated[str | None, typer.Option(help="topup_extends or activity_resets.")] = None,
    tiers: Annotated[
        str | None, typer.Option(help="topup_extends: amount:days in minor units, e.g. 500:30,1000:60.")
    ] = None,
    max_days: Annotated[int | None, typer.Option(help="Longest validity a top-up may give.")] = None,
    activity_days: Annotated[int | None, typer.Option(help="activity_resets: days each event keeps.")] = None,
    grace_days: Annotated[int | None, typer.Option(help="Days in grace (incoming only).")] = None,
    suspension_days: Annotated[int | None, typer.Option(help="Days suspended before termination.")] = None,
    quarantine_days: Annotated[int | None, typer.Option(help="Days before a number is reused.")] = None,
    reactivation_fee: Annotated[str | None, typer.Option(help="Fee to leave suspension, e.g. 2.00.")] = None,
    forfeit: Annotated[
        bool | None, typer.Option("--forfeit/--keep-balance", help="Balance to breakage at termination?")
    ] = None,
) -> None:
    """Create a plan, or change the given settings of an existing one."""
    try:
        with database_session() as session:
            existing = next((plan for plan in list_plans(session) if plan.code == code.strip().upper()), None)
            fee_currency = currency or (existing.currency if existing else None)
            fee_minor = None
            if reactivation_fee is not None:
                if fee_currency is None:
                    fail("Give --currency with --reactivation-fee for a new plan.")
                fee_minor = parse_money(reactivation_fee, fee_currency).amount_minor
            plan, created = save_plan(
                session,
                code=code,
                settings=PlanSettings(
                    name=name,
                    name_zh=name_zh,
                    currency=currency,
                    validity_rule=rule,
                    validity_tiers=parse_tiers(tiers) if tiers is not None else None,
                    validity_days_max=max_days,
                    activity_days=activity_days,
                    grace_days=grace_days,
                    suspension_days=suspension_days,
                    quarantine_days=quarantine_days,
                    reactivation_fee_minor=fee_minor,
                    forfeit_balance_on_termination=forfeit,
                ),
            )
            console.print(f"Plan {plan.code} {'created' if created else 'updated'}.")
    except AppError as error:
        fail(error.detail)


@plans_app.command("list")
def show_plans() -> None:
    """Every plan with its rule and periods, one per line."""
    with database_session() as session:
        plans = list_plans(session)
        for plan in plans:
            if plan.validity_rule == ValidityRule.TOPUP_EXTENDS:
                tiers = ", ".join(f"{amount}:{days}" for amount, days in plan.validity_tiers or [])
                rule = f"topup_extends {tiers or '-'} (max {plan.validity_days_max} days)"
            else:
                rule = f"activity_resets {plan.activity_days} days"
            console.print(
                f"{plan.code} ({plan.currency}) {plan.name}: {rule}; grace {plan.grace_days}, "
                f"suspension {plan.suspension_days}, quarantine {plan.quarantine_days} days; "
                f"reactivation fee {format_money(plan.reactivation_fee_minor, plan.currency)}; "
                f"balance {'forfeited' if plan.forfeit_balance_on_termination else 'kept'} at termination",
                highlight=False,
            )
        if not plans:
            console.print("No plans yet: add one with airtime plans set.")


@lines_app.command("add")
def add(
    msisdn: Annotated[str, typer.Argument(help="The number, e.g. +447911123456.")],
    plan: Annotated[str, typer.Option(help="Plan code.")],
    customer: Annotated[str | None, typer.Option(help="Owner's email (an existing account).")] = None,
    iccid: Annotated[str | None, typer.Option(help="The SIM's ICCID.")] = None,
    valid_until: Annotated[str | None, typer.Option(help="Validity date, YYYY-MM-DD.")] = None,
    pending: Annotated[bool, typer.Option(help="Pending activation until its first top-up.")] = False,
) -> None:
    """Provision a line with its main and bonus balances (a number in quarantine is refused)."""
    validity = None
    if valid_until is not None:
        try:
            validity = date.fromisoformat(valid_until)
        except ValueError:
            fail(f"{valid_until!r} is not a date (YYYY-MM-DD).")
    try:
        with database_session() as session:
            owner_id = None
            if customer is not None:
                owner_id = session.scalar(
                    select(Customer.id).where(Customer.email == customer.strip().lower())
                )
                if owner_id is None:
                    fail(f"No customer account {customer}.")
            line = add_line(
                session,
                msisdn=msisdn,
                plan_code=plan.strip().upper(),
                settings=get_settings(),
                customer_id=owner_id,
                iccid=iccid,
                state=LineState.PENDING_ACTIVATION if pending else LineState.ACTIVE,
                validity_date=validity,
            )
            console.print(f"Line {line.msisdn} added (id {line.id}, {line.state}).")
    except AppError as error:
        fail(error.detail)
