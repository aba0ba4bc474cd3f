"""``airtime lifecycle``: move lines whose time has come and send number-keeping reminders."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from airtime.cli.common import console, fail, session_factory
from airtime.config import get_settings
from airtime.lifecycle.reminders import send_reminders
from airtime.lifecycle.service import count_due, sweep

lifecycle_app = typer.Typer(help="Number keeping: the lifecycle sweep and reminders.", no_args_is_help=True)


def _day(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        fail(f"{text!r} is not a date (YYYY-MM-DD).")


@lifecycle_app.command("sweep")
def sweep_command(
    reminders: Annotated[bool, typer.Option(help="Also queue the reminders due.")] = True,
    on: Annotated[
        str | None, typer.Option(help="Act as if today were this date (YYYY-MM-DD); default: today.")
    ] = None,
) -> None:
    """Move every line whose deadline has passed (grace, suspension, termination, number
    release), then queue the reminders due. Safe to run again, or while the server runs it."""
    day = _day(on)
    settings = get_settings()
    with session_factory() as factory:
        due = count_due(factory, today=day)
        progress = Progress(
            TextColumn("Sweeping"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
        )
        with progress:
            task = progress.add_task("lines", total=max(due, 1))
            result = sweep(factory, today=day, on_progress=lambda _step, moved: progress.advance(task, moved))
            progress.update(task, completed=max(due, 1))
        moved = ", ".join(f"{name} {count}" for name, count in result.moved.items() if count) or "none"
        console.print(f"Lines moved: {moved}.")
        for currency, amount in result.forfeited_minor.items():
            console.print(f"Balance forfeited to breakage: {amount} minor units of {currency}.")
        if reminders:
            sent = send_reminders(factory, settings, today=day)
            queued = ", ".join(f"{name} {count}" for name, count in sent.sent.items() if count) or "none"
            console.print(f"Reminders queued (lines): {queued}.")
