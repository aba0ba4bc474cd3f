"""``airtime autotopup``: charge the saved methods of due auto top-up rules now."""

from __future__ import annotations

from typing import Annotated

import typer

from airtime.autotopup.tasks import RULES_PER_RUN_MAX, run_due
from airtime.cli.common import console, errors, fail, session_factory
from airtime.config import get_settings
from airtime.payments.registry import providers_from_settings

autotopup_app = typer.Typer(
    help="Auto top-up: charge saved payment methods of due rules.", no_args_is_help=True
)


@autotopup_app.command("run")
def run_command(
    limit: Annotated[int, typer.Option(help=f"At most this many rules (1 to {RULES_PER_RUN_MAX}).")] = 100,
) -> None:
    """Find due rules, charge their saved methods and credit the lines (the server also does
    this by itself). Safe to run again, or while the server runs it: nothing is charged twice."""
    if not 1 <= limit <= RULES_PER_RUN_MAX:
        fail(f"--limit must be between 1 and {RULES_PER_RUN_MAX}, not {limit}.")
    settings = get_settings()
    with session_factory() as factory:
        report = run_due(factory, providers=providers_from_settings(settings), settings=settings, limit=limit)
    console.print(
        f"Auto top-ups: {report.charged} charged, {report.succeeded} credited, {report.declined} declined "
        f"({report.disabled} rules turned off), {report.pending} pending, "
        f"{report.capped} held by their monthly limit."
    )
    for error in report.errors:
        errors.print(error, highlight=False)
    if report.errors:
        raise typer.Exit(code=1)
