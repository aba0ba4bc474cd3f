"""The airtime command: readable one-line errors with a non-zero exit, and nothing changed."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from airtime.cli.main import app
from airtime.config import get_settings
from tests.snapshot import fingerprint

runner = CliRunner()


@pytest.fixture
def cli_env(monkeypatch, database_url, tmp_path):
    monkeypatch.setenv("AIRTIME_DATABASE_URL", database_url)
    monkeypatch.setenv("AIRTIME_SECRET_KEY", "test-secret")
    monkeypatch.setenv("AIRTIME_OUTBOX_DIR", str(tmp_path / "outbox"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_migrate_create_staff_and_check_ledger(cli_env, session_factory):
    assert runner.invoke(app, ["migrate"]).exit_code == 0
    created = runner.invoke(
        app, ["create-staff", "boss@example.com", "--role", "admin", "--password", "long enough"]
    )
    assert created.exit_code == 0, created.output
    assert "boss@example.com" in created.output
    checked = runner.invoke(app, ["check-ledger"])
    assert checked.exit_code == 0 and "balanced" in checked.output


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["create-staff", "not-an-email", "--role", "admin", "--password", "long enough"],
            "not a valid email",
        ),
        (
            ["create-staff", "care@example.com", "--role", "emperor", "--password", "long enough"],
            "Unknown role",
        ),
        (["create-staff", "care@example.com", "--role", "care", "--password", "short"], "at least 8"),
    ],
)
def test_bad_input_is_one_readable_line_and_changes_nothing(cli_env, session_factory, arguments, message):
    before = fingerprint(session_factory)
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert fingerprint(session_factory) == before


def test_reconcile_command_credits_a_paid_order(cli_env, session_factory, settings):
    from airtime.db.session import unit_of_work
    from airtime.topups.models import OrderStatus, TopupOrder
    from tests import topup_helpers

    with unit_of_work(session_factory) as session:
        line = topup_helpers.line_with_catalogue(session, settings)
        order = topup_helpers.order(session, settings, line_id=line.id)
        session.get(TopupOrder, order.id).status = OrderStatus.PAID
    result = runner.invoke(app, ["reconcile"])
    assert result.exit_code == 0, result.output
    assert "Credited 1" in result.output
    with unit_of_work(session_factory) as session:
        assert session.get(TopupOrder, order.id).status == OrderStatus.CREDITED
