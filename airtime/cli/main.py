"""``airtime``: run the product, migrate, seed the demo, manage staff, send the outbox."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from airtime.cli.agents import agents_app
from airtime.cli.autotopup import autotopup_app
from airtime.cli.common import console, database_session, errors, fail, session_factory
from airtime.cli.lifecycle import lifecycle_app
from airtime.cli.plans import lines_app, plans_app
from airtime.cli.vouchers import outlets_app, vouchers_app
from airtime.config import Settings, get_settings
from airtime.db.migrate import upgrade
from airtime.db.session import engine_from_settings, make_session_factory, unit_of_work
from airtime.errors import AppError

app = typer.Typer(
    help="Airtime: top-ups and number keeping for a prepaid mobile operator.", no_args_is_help=True
)
app.add_typer(vouchers_app, name="vouchers")
app.add_typer(outlets_app, name="outlets")
app.add_typer(agents_app, name="agents")
app.add_typer(lifecycle_app, name="lifecycle")
app.add_typer(plans_app, name="plans")
app.add_typer(lines_app, name="lines")
app.add_typer(autotopup_app, name="autotopup")


def _migrate(settings: Settings) -> None:
    engine = engine_from_settings(settings)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


@app.command()
def migrate() -> None:
    """Bring the database schema to the newest version."""
    settings = get_settings()
    _migrate(settings)
    console.print(f"Database is up to date: {_display_url(settings.database_url)}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes (use 1 with SQLite).")] = 1,
) -> None:
    """Run the web server (pages, API, outbox sender)."""
    import uvicorn

    settings = get_settings()
    if settings.is_sqlite and workers > 1:
        fail("SQLite allows one writer: run one worker, or use PostgreSQL for several.")
    uvicorn.run(
        "airtime.app:serve_app", factory=True, host=host, port=port, workers=workers, log_level="info"
    )


@app.command()
def demo(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Migrate, load demo data, print the logins and serve on SQLite (unless configured otherwise)."""
    import uvicorn

    from airtime.demo import (
        DEMO_AGENT_STAFF,
        DEMO_LOGINS,
        DEMO_OPERATORS,
        DEMO_OUTLET_STAFF,
        DEMO_PASSWORD,
        seed,
        seed_vouchers,
    )

    os.environ.setdefault("AIRTIME_BASE_URL", f"http://{host}:{port}")
    get_settings.cache_clear()
    settings = get_settings()
    _migrate(settings)
    engine = engine_from_settings(settings)
    factory = make_session_factory(engine)
    with unit_of_work(factory) as session:
        created = seed(session, settings)
    voucher_file = Path(settings.outbox_dir).parent / "demo-vouchers.csv"
    pins = seed_vouchers(factory, settings, voucher_file) if created else []
    engine.dispose()
    console.print(f"[bold]{settings.operator_name}[/bold] demo {'created' if created else 'already loaded'}.")
    console.print(f"Open [link]{settings.base_url}[/link]")
    for login in DEMO_LOGINS:
        console.print(f"  log in as {login.email} / {login.password}  ({login.language})")
    console.print(f"  outlet till: {settings.base_url}/outlet as {DEMO_OUTLET_STAFF} / {DEMO_PASSWORD}")
    console.print(f"  agent portal: {settings.base_url}/agent as {DEMO_AGENT_STAFF} / {DEMO_PASSWORD}")
    for email, role in DEMO_OPERATORS:
        console.print(
            f"  {role}: {settings.base_url}/care/login as {email} / {DEMO_PASSWORD} "
            "(first log-in: scan the two-factor QR code with an authenticator app)"
        )
    if pins:
        console.print(f"Voucher PINs (£10 each, redeem at {settings.base_url}/redeem): {', '.join(pins)}")
    console.print(f"All demo voucher PINs: {voucher_file.resolve()}")
    console.print(f"Emails and SMS: {settings.base_url}/outbox and {Path(settings.outbox_dir).resolve()}")
    console.print(f"API: {settings.base_url}/api/docs   OpenAPI: {settings.base_url}/openapi.json")
    uvicorn.run("airtime.app:serve_app", factory=True, host=host, port=port, log_level="warning")


@app.command("create-staff")
def create_staff(
    email: Annotated[str, typer.Argument(help="The staff member's email.")],
    role: Annotated[str, typer.Option(help="care, supervisor, admin, outlet or agent.")] = "care",
    password: Annotated[
        str | None, typer.Option(help="Password; asked for when not given (never put it in shell history).")
    ] = None,
    outlet: Annotated[str | None, typer.Option(help="Outlet code, for outlet staff.")] = None,
    agent: Annotated[str | None, typer.Option(help="Agent code, for agent staff.")] = None,
) -> None:
    """Create a staff user (care console, admin pages, an outlet's till or an agent's portal)."""
    from airtime.accounts.service import create_staff as create
    from airtime.agents.service import agent_by_code
    from airtime.vouchers.service import outlet_by_code

    if password is None:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    with database_session() as session:
        outlet_id = outlet_by_code(session, outlet).id if outlet else None
        agent_id = agent_by_code(session, agent).id if agent else None
        staff = create(
            session, email=email, password=password, role=role, outlet_id=outlet_id, agent_id=agent_id
        )
    console.print(f"Staff user {staff.email} created with role {staff.role}.")


@app.command("reset-two-factor")
def reset_two_factor(
    email: Annotated[str, typer.Argument(help="The staff member who lost their authenticator.")],
    by: Annotated[str, typer.Option(help="Your own admin email (written to the audit log).")],
    reason: Annotated[str, typer.Option(help="Why (written to the audit log).")],
) -> None:
    """Forget a staff member's two-factor key: they enrol a new one at their next log-in."""
    from sqlalchemy import select

    from airtime.accounts.models import StaffUser
    from airtime.care.audit import record
    from airtime.staff.totp import reset

    if not reason.strip():
        fail("Give a reason.")
    with database_session() as session:
        admin = session.scalar(select(StaffUser).where(StaffUser.email == by.strip().lower()))
        if admin is None or not admin.active or admin.role != "admin":
            fail(f"{by} is not an active admin.")
        staff = session.scalar(select(StaffUser).where(StaffUser.email == email.strip().lower()))
        if staff is None:
            fail(f"No staff user {email}.")
        if not reset(session, staff_user_id=staff.id):
            fail(f"{staff.email} has no two-factor key to reset.")
        record(
            session,
            actor=admin,
            action="staff.reset_two_factor",
            subject_type="staff_user",
            subject_id=staff.id,
            before={"two_factor": "enrolled"},
            after={"two_factor": "none"},
            reason=reason.strip(),
        )
    console.print(f"Two-factor key of {staff.email} reset; they enrol again at their next log-in.")


@app.command("send-notifications")
def send_notifications(
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many messages.")] = 1000,
) -> None:
    """Send what is due in the outbox now (the server also does this by itself)."""
    from airtime.notifications.providers import providers_from_settings
    from airtime.notifications.sender import send_due

    settings = get_settings()
    with session_factory() as factory:
        sent = send_due(
            factory,
            providers_from_settings(settings),
            attempts_max=settings.notification_send_attempts_max,
            limit=limit,
        )
    console.print(f"Sent {sent} message(s).")


@app.command()
def reconcile() -> None:
    """Repair top-ups paid but not credited, ask providers about waiting ones, expire stuck ones."""
    from airtime.payments.registry import providers_from_settings as payment_providers
    from airtime.topups.tasks import reconcile as run_reconcile

    settings = get_settings()
    with session_factory() as factory, console.status("Reconciling top-ups with the payment providers..."):
        report = run_reconcile(factory, providers=payment_providers(settings), settings=settings)
    console.print(
        f"Credited {report.credited} (of which {report.found_paid} found paid at the provider), "
        f"failed {report.failed}, expired {report.expired}, still pending {report.still_pending}."
    )
    for error in report.errors:
        errors.print(error, highlight=False)
    if report.errors:
        raise typer.Exit(code=1)


@app.command("check-ledger")
def check_ledger() -> None:
    """Verify the ledger: balanced transfers, kept balances equal to entries, floors held."""
    from airtime.ledger.service import check_invariants

    with database_session() as session:
        problems = check_invariants(session)
    if problems:
        for problem in problems:
            errors.print(problem, highlight=False)
        fail(f"{len(problems)} problem(s) found in the ledger.")
    console.print("Ledger is balanced.")


def _display_url(url: str) -> str:
    """The URL without its password, for printing."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        credentials, host = rest.rsplit("@", 1)
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
    return url


def main() -> None:  # pragma: no cover - the console script entry point
    try:
        app()
    except AppError as error:
        errors.print(f"error: {error.detail}")
        sys.exit(2)
