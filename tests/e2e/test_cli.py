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


def test_vouchers_generate_release_show_and_expire(cli_env, session_factory, tmp_path):
    out = tmp_path / "pins.csv"
    assert runner.invoke(app, ["outlets", "create", "SHOP-9", "Corner", "--currency", "GBP"]).exit_code == 0
    assert runner.invoke(app, ["outlets", "fund", "SHOP-9", "100.00", "--reference", "dep-1"]).exit_code == 0
    generated = runner.invoke(
        app,
        [
            "vouchers",
            "generate",
            "--value",
            "10.00",
            "--currency",
            "GBP",
            "--quantity",
            "30",
            "--expires",
            "2099-01-01",
            "--outlet",
            "SHOP-9",
            "--out",
            str(out),
        ],
    )
    assert generated.exit_code == 0, generated.output
    assert "30/30" in generated.output  # the progress bar finished
    serial = out.read_text().splitlines()[1].split(",")[0]
    released = runner.invoke(app, ["vouchers", "release", serial])
    assert released.exit_code == 0 and "Released 1" in released.output
    shown = runner.invoke(app, ["vouchers", "show", serial])
    assert "active" in shown.output and "activated" in shown.output
    assert runner.invoke(app, ["vouchers", "expire"]).exit_code == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            [
                "vouchers",
                "generate",
                "--value",
                "ten",
                "--currency",
                "GBP",
                "--quantity",
                "3",
                "--expires",
                "2099-01-01",
                "--out",
                "x.csv",
            ],
            "Not an amount",
        ),
        (
            [
                "vouchers",
                "generate",
                "--value",
                "10",
                "--currency",
                "GBP",
                "--quantity",
                "3",
                "--expires",
                "yesterday",
                "--out",
                "x.csv",
            ],
            "is not a date",
        ),
        (
            [
                "vouchers",
                "generate",
                "--value",
                "10",
                "--currency",
                "GBP",
                "--quantity",
                "3",
                "--expires",
                "2001-01-01",
                "--out",
                "x.csv",
            ],
            "must be in the future",
        ),
        (["vouchers", "release", "abc"], "is not a serial"),
        (["vouchers", "block", "10000001", "--reason", ""], "reason"),
        (["outlets", "fund", "NOPE", "1.00", "--reference", "r"], "No outlet"),
    ],
)
def test_voucher_commands_refuse_bad_input_in_one_line(
    cli_env, session_factory, arguments, message, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    before = fingerprint(session_factory)
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert fingerprint(session_factory) == before


def test_lifecycle_sweep_moves_lines_with_a_progress_bar_and_queues_reminders(
    cli_env, session_factory, settings
):
    from datetime import timedelta

    from airtime.accounts.models import Line, LineState
    from airtime.clock import today
    from airtime.db.session import unit_of_work
    from tests import factories

    with unit_of_work(session_factory) as session:
        customer = factories.customer(session, settings)
        line = factories.line(
            session, settings, customer_id=customer.id, validity_date=today() - timedelta(days=1)
        )
    result = runner.invoke(app, ["lifecycle", "sweep"])
    assert result.exit_code == 0, result.output
    assert "1/1" in result.output and "grace 1" in result.output and "Reminders queued" in result.output
    with unit_of_work(session_factory) as session:
        assert session.get(Line, line.id).state == LineState.GRACE
    again = runner.invoke(app, ["lifecycle", "sweep", "--no-reminders"])
    assert again.exit_code == 0 and "Lines moved: none." in again.output


def test_lifecycle_sweep_refuses_a_bad_date_and_changes_nothing(cli_env, session_factory):
    before = fingerprint(session_factory)
    result = runner.invoke(app, ["lifecycle", "sweep", "--on", "someday"])
    assert result.exit_code == 2
    assert "is not a date" in result.output and len(result.output.strip().splitlines()) == 1
    assert fingerprint(session_factory) == before


def test_plans_set_list_and_lines_add(cli_env, session_factory):
    from airtime.accounts.models import Line, LineState, Plan
    from airtime.db.session import unit_of_work

    created = runner.invoke(
        app,
        [
            "plans", "set", "keep-gbp", "--name", "Keeper", "--currency", "GBP", "--rule", "topup_extends",
            "--tiers", "500:30,1000:90", "--max-days", "365", "--grace-days", "15", "--suspension-days", "30",
            "--quarantine-days", "60", "--reactivation-fee", "2.00", "--keep-balance",
        ],
    )  # fmt: skip
    assert created.exit_code == 0 and "Plan KEEP-GBP created" in created.output, created.output
    changed = runner.invoke(app, ["plans", "set", "KEEP-GBP", "--grace-days", "20"])
    assert changed.exit_code == 0 and "updated" in changed.output
    listed = runner.invoke(app, ["plans", "list"])
    assert "KEEP-GBP" in listed.output and "£2.00" in listed.output
    added = runner.invoke(
        app, ["lines", "add", "+447911123470", "--plan", "keep-gbp", "--valid-until", "2030-01-31"]
    )
    assert added.exit_code == 0 and "+447911123470 added" in added.output, added.output
    with unit_of_work(session_factory) as session:
        plan = session.query(Plan).filter_by(code="KEEP-GBP").one()
        assert (plan.grace_days, plan.suspension_days, plan.quarantine_days) == (20, 30, 60)
        assert plan.validity_tiers == [[500, 30], [1000, 90]] and plan.reactivation_fee_minor == 200
        assert plan.forfeit_balance_on_termination is False
        line = session.query(Line).filter_by(msisdn="+447911123470").one()
        assert line.state == LineState.ACTIVE and line.validity_date.isoformat() == "2030-01-31"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["plans", "set", "NEW", "--name", "New"], "needs a name and a currency"),
        (["plans", "set", "NEW", "--name", "N", "--currency", "XYZ"], "Unknown currency"),
        (
            ["plans", "set", "NEW", "--name", "N", "--currency", "GBP", "--rule", "forever"],
            "Unknown validity rule",
        ),
        (["plans", "set", "NEW", "--name", "N", "--currency", "GBP", "--tiers", "1000:30,500:60"], "rising"),
        (["plans", "set", "NEW", "--name", "N", "--currency", "GBP", "--tiers", "ten:30"], "amount:days"),
        (["plans", "set", "NEW", "--name", "N", "--currency", "GBP", "--grace-days", "-1"], "grace_days"),
        (["lines", "add", "+447911123471", "--plan", "NOPE"], "No plan"),
        (["lines", "add", "not-a-number", "--plan", "NOPE"], "number"),
        (["lines", "add", "+447911123471", "--plan", "NOPE", "--valid-until", "soon"], "is not a date"),
    ],
)
def test_plans_and_lines_bad_input_is_one_line_and_changes_nothing(
    cli_env, session_factory, arguments, message
):
    before = fingerprint(session_factory)
    result = runner.invoke(app, arguments)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert fingerprint(session_factory) == before


def test_reset_two_factor_forgets_the_key_and_is_audited(cli_env, session_factory, settings):
    from airtime.care.models import AuditEntry
    from airtime.db.session import unit_of_work
    from airtime.staff import totp
    from airtime.staff.models import StaffTotp
    from tests import staff_helpers

    with unit_of_work(session_factory) as session:
        staff_helpers.staff_user(session, email="boss@example.com", role="admin")
        care = staff_helpers.staff_user(session, email="care@example.com", role="care")
        totp.start_enrolment(session, staff=care, settings=settings)
    before = fingerprint(session_factory)
    for arguments, message in (
        (["care@example.com", "--by", "care@example.com", "--reason", "lost phone"], "not an active admin"),
        (["nobody@example.com", "--by", "boss@example.com", "--reason", "lost phone"], "No staff user"),
        (["care@example.com", "--by", "boss@example.com", "--reason", " "], "Give a reason"),
    ):
        refused = runner.invoke(app, ["reset-two-factor", *arguments])
        assert refused.exit_code == 2 and message in refused.output, refused.output
        assert len(refused.output.strip().splitlines()) == 1
    assert fingerprint(session_factory) == before
    done = runner.invoke(
        app, ["reset-two-factor", "care@example.com", "--by", "boss@example.com", "--reason", "lost phone"]
    )
    assert done.exit_code == 0 and "enrol again" in done.output, done.output
    with unit_of_work(session_factory) as session:
        assert session.get(StaffTotp, care.id) is None
        [entry] = session.query(AuditEntry).filter_by(action="staff.reset_two_factor").all()
        assert entry.staff_email == "boss@example.com" and entry.reason == "lost phone"
    again = runner.invoke(
        app, ["reset-two-factor", "care@example.com", "--by", "boss@example.com", "--reason", "x"]
    )
    assert again.exit_code == 2 and "no two-factor key" in again.output
