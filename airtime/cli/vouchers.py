"""``airtime vouchers`` and ``airtime outlets``: batches, release, expiry, blocks, shops."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from airtime.cli.common import console, database_session, fail, session_factory
from airtime.config import get_settings
from airtime.errors import AppError
from airtime.money import format_money, parse_money

vouchers_app = typer.Typer(help="Voucher batches: generate, release, block, expire.", no_args_is_help=True)
outlets_app = typer.Typer(
    help="Retail outlets that sell vouchers from a prepaid float.", no_args_is_help=True
)


def _serial(text: str) -> int:
    digits = text.replace(" ", "").replace("-", "")
    if not digits.isdigit():
        fail(f"{text!r} is not a serial number.")
    return int(digits)


@vouchers_app.command("generate")
def generate(
    value: Annotated[str, typer.Option(help="Face value, e.g. 10.00")],
    quantity: Annotated[int, typer.Option(min=1, help="How many vouchers.")],
    expires: Annotated[str, typer.Option(help="Expiry date, YYYY-MM-DD.")],
    out: Annotated[Path, typer.Option(help="The CSV file the PINs are written to, once.")],
    currency: Annotated[str, typer.Option(help="ISO 4217 currency.")] = "",
    validity_days: Annotated[
        int | None, typer.Option(help="Validity a redemption grants (default: plan rule).")
    ] = None,
    outlet: Annotated[str | None, typer.Option(help="Outlet the batch is made for.")] = None,
    distributor: Annotated[str, typer.Option(help="Distributor name, for the record.")] = "",
    created_by: Annotated[str, typer.Option(help="Who made the batch, for the audit.")] = "cli",
) -> None:
    """Generate a batch of PINs; they are shown only in the export file, never again."""
    from airtime.vouchers.service import check_batch_request, generate_batch

    settings = get_settings()
    currency = currency or settings.default_currency
    try:
        face_value_minor = parse_money(value, currency).amount_minor
        expires_on = date.fromisoformat(expires)
        check_batch_request(
            currency=currency,
            face_value_minor=face_value_minor,
            quantity=quantity,
            expires_on=expires_on,
            validity_days=validity_days,
            export_path=out,
        )
    except AppError as error:
        fail(error.detail)
    except ValueError:
        fail(f"{expires!r} is not a date (YYYY-MM-DD).")
    progress = Progress(
        TextColumn("Generating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
    )
    with session_factory() as factory, progress:
        task = progress.add_task("vouchers", total=quantity)
        batch = generate_batch(
            factory,
            settings=settings,
            currency=currency,
            face_value_minor=face_value_minor,
            quantity=quantity,
            expires_on=expires_on,
            export_path=out,
            created_by=created_by,
            validity_days=validity_days,
            outlet_code=outlet,
            distributor=distributor,
            on_progress=lambda done: progress.advance(task, done),
        )
    console.print(
        f"Batch {batch.batch_id}: {batch.quantity} × {format_money(face_value_minor, currency)}, "
        f"serials {batch.serial_first:012d}-{batch.serial_last:012d}, PINs in {out} "
        "(keep it safe: it is the only copy)."
    )


@vouchers_app.command("release")
def release(
    first: Annotated[str, typer.Argument(help="First serial.")],
    last: Annotated[str, typer.Argument(help="Last serial (default: the first).")] = "",
    outlet: Annotated[
        str | None, typer.Option(help="Outlet whose float pays (default: the batch's).")
    ] = None,
    actor: Annotated[str, typer.Option(help="Who releases, for the audit.")] = "cli",
) -> None:
    """Activate a serial range that was sold or handed over paid."""
    from airtime.vouchers.service import activate_range

    with database_session() as session:
        count = activate_range(
            session,
            serial_first=_serial(first),
            serial_last=_serial(last or first),
            actor=actor,
            outlet_code=outlet,
        )
    console.print(f"Released {count} voucher(s).")


@vouchers_app.command("block")
def block_command(
    first: Annotated[str, typer.Argument(help="First serial.")],
    last: Annotated[str, typer.Argument(help="Last serial (default: the first).")] = "",
    reason: Annotated[str, typer.Option(help="Why (stolen, damaged...).")] = "",
    unblock: Annotated[bool, typer.Option("--unblock", help="Lift the block instead.")] = False,
    actor: Annotated[str, typer.Option(help="Who, for the audit.")] = "cli",
) -> None:
    """Block (or with --unblock, unblock) vouchers; a reason is required."""
    from airtime.vouchers import service

    action = service.unblock if unblock else service.block
    with database_session() as session:
        count = action(
            session,
            serial_first=_serial(first),
            serial_last=_serial(last or first),
            actor=actor,
            reason=reason,
        )
    console.print(f"{'Unblocked' if unblock else 'Blocked'} {count} voucher(s).")


@vouchers_app.command("expire")
def expire() -> None:
    """Expire vouchers past their date; the value of sold ones goes to breakage."""
    from airtime.vouchers.service import expire_due

    with session_factory() as factory, console.status("Expiring vouchers..."):
        count = expire_due(factory)
    console.print(f"Expired {count} voucher(s).")


@vouchers_app.command("unlock")
def unlock_command(
    key: Annotated[str, typer.Argument(help="line:ID, customer:ID or ip:ADDRESS, as care sees it.")],
    actor: Annotated[str, typer.Option(help="Who unlocks, for the record.")] = "cli",
) -> None:
    """Lift a redemption lockout (too many wrong PINs) for a line, customer or address."""
    from airtime.vouchers.service import unlock

    with database_session() as session:
        unlocked = unlock(session, key=key, actor=actor)
    if not unlocked:
        fail(f"{key} is not locked.")
    console.print(f"{key} unlocked.")


@vouchers_app.command("show")
def show(serial: Annotated[str, typer.Argument(help="Serial number.")]) -> None:
    """A voucher's state and history by serial (never its PIN)."""
    from airtime.vouchers.service import by_serial

    with database_session() as session:
        voucher, events = by_serial(session, _serial(serial))
        console.print(
            f"{voucher.serial:012d} {format_money(voucher.face_value_minor, voucher.currency)} "
            f"{voucher.state}, expires {voucher.expires_on}"
        )
        for event in events:
            console.print(f"  {event.at:%Y-%m-%d %H:%M} {event.event} by {event.actor} {event.reason}")


@outlets_app.command("create")
def create_outlet(
    code: Annotated[str, typer.Argument(help="Short code, e.g. SHOP-17.")],
    name: Annotated[str, typer.Argument(help="Shop name.")],
    currency: Annotated[str, typer.Option(help="Currency it sells in.")] = "",
    credit_limit: Annotated[str, typer.Option(help="How far the float may go below zero.")] = "0",
) -> None:
    """Create an outlet with its prepaid float."""
    from airtime.vouchers.service import create_outlet as create

    settings = get_settings()
    currency = currency or settings.default_currency
    with database_session() as session:
        limit = parse_money(credit_limit, currency).amount_minor
        create(session, code=code, name=name, currency=currency, credit_limit_minor=limit)
    console.print(f"Outlet {code} created.")


@outlets_app.command("fund")
def fund(
    code: Annotated[str, typer.Argument(help="Outlet code.")],
    amount: Annotated[str, typer.Argument(help="Amount received, e.g. 500.00")],
    reference: Annotated[str, typer.Option(help="Bank or deposit reference (makes the funding once-only).")],
) -> None:
    """Record money received from an outlet: its float goes up."""
    from airtime.vouchers.service import fund_outlet, outlet_by_code

    with database_session() as session:
        outlet = outlet_by_code(session, code)
        fund_outlet(
            session,
            outlet=outlet,
            amount_minor=parse_money(amount, outlet.currency).amount_minor,
            reference=reference,
        )
    console.print(f"Outlet {code} funded.")
