"""``airtime agents``: create, fund once per reference, credentials shown once, show; agent staff."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from airtime.agents import service as agents
from airtime.cli.main import app
from airtime.db.session import unit_of_work
from airtime.ledger.service import balance_of
from tests.e2e.test_cli import cli_env  # noqa: F401 - the fixture
from tests.snapshot import fingerprint

runner = CliRunner()


def test_create_fund_credentials_show_and_staff(cli_env, session_factory):  # noqa: F811
    created = runner.invoke(
        app,
        [
            "agents",
            "create",
            "AG-LON",
            "London Resellers",
            "--currency",
            "GBP",
            "--commission-percent",
            "3.5",
            "--commission-amount",
            "20.00=1.00",
            "--daily-limit",
            "1000.00",
            "--credit-limit",
            "50.00",
        ],
    )
    assert created.exit_code == 0, created.output
    sub = runner.invoke(
        app, ["agents", "create", "AG-SUB", "Corner", "--currency", "GBP", "--parent", "AG-LON"]
    )
    assert sub.exit_code == 0, sub.output
    funded = runner.invoke(app, ["agents", "fund", "AG-LON", "500.00", "--reference", "BANK-1"])
    assert funded.exit_code == 0 and "£500.00" in funded.output
    again = runner.invoke(app, ["agents", "fund", "AG-LON", "500.00", "--reference", "BANK-1"])
    assert again.exit_code == 0 and "already funded" in again.output and "£500.00" in again.output
    other = runner.invoke(app, ["agents", "fund", "AG-LON", "400.00", "--reference", "BANK-1"])
    assert other.exit_code == 2 and "different content" in other.output
    issued = runner.invoke(app, ["agents", "credentials", "AG-LON"])
    assert issued.exit_code == 0
    key_id = re.search(r"Key id: (\S+)", issued.output).group(1)
    secret = re.search(r"Secret: (\S+)", issued.output).group(1)
    shown = runner.invoke(app, ["agents", "show", "AG-LON"])
    assert shown.exit_code == 0, shown.output
    assert key_id in shown.output and secret not in shown.output
    assert "3.50%" in shown.output and "AG-SUB" in shown.output and "credit limit £50.00" in shown.output
    staff = runner.invoke(
        app,
        [
            "create-staff",
            "till@agent.example",
            "--role",
            "agent",
            "--agent",
            "AG-LON",
            "--password",
            "long enough",
        ],
    )
    assert staff.exit_code == 0, staff.output
    with unit_of_work(session_factory) as session:
        agent = agents.agent_by_code(session, "AG-LON")
        assert balance_of(session, agent.float_account_id) == 50_000
        assert agent.commission_amounts == {"2000": 100} and agent.commission_basis_points == 350


def test_bad_input_changes_nothing(cli_env, session_factory):  # noqa: F811
    before = fingerprint(session_factory)
    unknown = runner.invoke(app, ["agents", "fund", "NOPE", "5.00", "--reference", "R"])
    assert unknown.exit_code == 2 and "No agent NOPE" in unknown.output
    rate = runner.invoke(
        app, ["agents", "create", "AG-X", "X", "--currency", "GBP", "--commission-percent", "100"]
    )
    assert rate.exit_code == 2 and "basis points" in rate.output
    assert fingerprint(session_factory) == before
