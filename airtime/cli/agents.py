"""``airtime agents``: create resellers, fund their floats, issue API credentials, show them."""

from __future__ import annotations

from typing import Annotated

import typer

from airtime.cli.common import console, database_session, fail
from airtime.config import get_settings
from airtime.errors import AppError
from airtime.money import format_money, parse_money

agents_app = typer.Typer(
    help="Resellers (agents): floats, commission, API credentials.", no_args_is_help=True
)


def _commission_amounts(pairs: list[str], currency: str) -> dict[int, int]:
    """``10.00=0.50`` pairs: a fixed commission for that amount."""
    amounts: dict[int, int] = {}
    for pair in pairs:
        amount, separator, commission = pair.partition("=")
        if not separator:
            fail(f"{pair!r} is not AMOUNT=COMMISSION, e.g. 10.00=0.50.")
        amounts[parse_money(amount, currency).amount_minor] = parse_money(commission, currency).amount_minor
    return amounts


@agents_app.command("create")
def create(
    code: Annotated[str, typer.Argument(help="Short code, e.g. AG-LONDON-1.")],
    name: Annotated[str, typer.Argument(help="The agent's name.")],
    currency: Annotated[str, typer.Option(help="ISO 4217 currency it sells in.")] = "",
    parent: Annotated[
        str | None, typer.Option(help="Parent agent's code (this one is its sub-agent).")
    ] = None,
    commission_percent: Annotated[str, typer.Option(help="Commission rate, e.g. 3.5 (percent).")] = "0",
    commission_amount: Annotated[
        list[str] | None,
        typer.Option(help="A fixed commission for one amount, AMOUNT=COMMISSION; repeatable."),
    ] = None,
    credit_limit: Annotated[
        str, typer.Option(help="How far below zero the float may go (0: prepaid).")
    ] = "0",
    rate_limit: Annotated[int, typer.Option(help="API requests per minute.")] = 60,
    daily_limit: Annotated[str | None, typer.Option(help="Most it may sell per UTC day.")] = None,
) -> None:
    """Create an agent and its float."""
    from decimal import Decimal, InvalidOperation

    from airtime.agents.service import create_agent

    currency = currency or get_settings().default_currency
    try:
        basis_points = Decimal(commission_percent) * 100
    except InvalidOperation:
        fail(f"{commission_percent!r} is not a percentage.")
    if basis_points != basis_points.to_integral_value():
        fail("A commission rate has at most two decimal places (basis points).")
    try:
        amounts = _commission_amounts(commission_amount or [], currency)
        credit_limit_minor = parse_money(credit_limit, currency).amount_minor
        daily_limit_minor = parse_money(daily_limit, currency).amount_minor if daily_limit else None
    except AppError as error:
        fail(error.detail)
    with database_session() as session:
        agent = create_agent(
            session,
            code=code,
            name=name,
            currency=currency,
            parent_code=parent,
            commission_basis_points=int(basis_points),
            commission_amounts=amounts,
            credit_limit_minor=credit_limit_minor,
            rate_limit_per_minute=rate_limit,
            daily_limit_minor=daily_limit_minor,
        )
    console.print(
        f"Agent {agent.code} created ({agent.currency}); fund it with `airtime agents fund {agent.code}`."
    )


@agents_app.command("fund")
def fund(
    code: Annotated[str, typer.Argument(help="The agent's code.")],
    amount: Annotated[str, typer.Argument(help="Amount received, e.g. 500.00")],
    reference: Annotated[str, typer.Option(help="The payment's reference; funding once per reference.")],
) -> None:
    """The agent paid: raise its float (the same reference again changes nothing)."""
    from airtime.agents.service import agent_by_code, fund_agent
    from airtime.ledger.service import balance_of

    with database_session() as session:
        agent = agent_by_code(session, code)
        posted = fund_agent(
            session,
            agent=agent,
            amount_minor=parse_money(amount, agent.currency).amount_minor,
            reference=reference,
        )
        balance = balance_of(session, agent.float_account_id)
    if posted.replayed:
        console.print(f"Reference {reference} was already funded; nothing changed.")
    console.print(f"Float of {agent.code}: {format_money(balance, agent.currency)}")


@agents_app.command("credentials")
def credentials(
    code: Annotated[str, typer.Argument(help="The agent's code.")],
    revoke: Annotated[str | None, typer.Option(help="Revoke this key id instead of issuing one.")] = None,
) -> None:
    """Issue an API key id and secret (the secret is shown once, now), or revoke a key."""
    from airtime.agents.service import agent_by_code, issue_credentials, revoke_credentials

    settings = get_settings()
    with database_session() as session:
        agent = agent_by_code(session, code)
        if revoke:
            if not revoke_credentials(session, agent=agent, key_id=revoke):
                fail(f"{agent.code} has no live key {revoke}.")
            console.print(f"Key {revoke} revoked.")
            return
        key_id, secret = issue_credentials(session, agent=agent, settings=settings)
    console.print(f"Key id: {key_id}")
    console.print(f"Secret: {secret}")
    console.print("Keep the secret safe: it is not shown again.")


@agents_app.command("show")
def show(code: Annotated[str, typer.Argument(help="The agent's code.")]) -> None:
    """An agent's float, limits, commission, sub-agents and keys (never a secret)."""
    from sqlalchemy import select

    from airtime.agents.models import Agent, AgentCredential
    from airtime.agents.service import agent_by_code, float_status

    with database_session() as session:
        agent = agent_by_code(session, code)
        state = float_status(session, agent=agent)
        parent = session.get(Agent, agent.parent_id) if agent.parent_id else None
        children = list(
            session.scalars(select(Agent.code).where(Agent.parent_id == agent.id).order_by(Agent.code))
        )
        keys = list(
            session.scalars(
                select(AgentCredential)
                .where(AgentCredential.agent_id == agent.id)
                .order_by(AgentCredential.created_at)
            )
        )

    def money(value: int) -> str:
        return format_money(value, agent.currency)

    console.print(f"{agent.code}  {agent.name}  ({'active' if agent.active else 'inactive'})")
    console.print(f"  parent: {parent.code if parent else '-'}   sub-agents: {', '.join(children) or '-'}")
    fixed = ", ".join(
        f"{money(int(amount))}→{money(value)}"
        for amount, value in sorted(agent.commission_amounts.items(), key=lambda item: int(item[0]))
    )
    console.print(
        f"  commission: {agent.commission_basis_points / 100:.2f}%" + (f"; fixed {fixed}" if fixed else "")
    )
    console.print(
        f"  float: {money(state.balance_minor)} (credit limit {money(state.credit_limit_minor)}, "
        f"available {money(state.available_minor)})"
    )
    daily = money(state.daily_limit_minor) if state.daily_limit_minor is not None else "none"
    console.print(
        f"  today: sold {money(state.sold_today_minor)} of daily limit {daily}; "
        f"{agent.rate_limit_per_minute} requests/minute"
    )
    for key in keys:
        console.print(
            f"  key {key.key_id}  issued {key.created_at:%Y-%m-%d %H:%M}"
            + (f"  revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "")
        )
