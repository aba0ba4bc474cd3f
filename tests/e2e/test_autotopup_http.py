"""Auto top-up pages over HTTP and the ``airtime autotopup run`` command, on both databases."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from airtime.autotopup.tasks import run_due
from airtime.cli.main import app as cli
from airtime.config import get_settings
from airtime.db.session import unit_of_work
from tests import autotopup_helpers, factories, topup_helpers
from tests.e2e.test_web import csrf, login
from tests.snapshot import fingerprint

runner = CliRunner()


@pytest.fixture
def customer_line(client, session_factory, settings):
    with unit_of_work(session_factory) as session:
        customer = factories.customer(session, settings, email="ana@example.com")
        topup_helpers.catalogue(session)
        line = factories.line(session, settings, customer_id=customer.id, balance_minor=100)
    login(client, "ana@example.com")
    return line.id


def save_test_card(client, line_id: int, card: str) -> None:
    page = f"/lines/{line_id}/autotopup"
    started = client.post(
        f"{page}/methods",
        data={"provider": "sandbox", "csrf_token": csrf(client, page)},
        follow_redirects=False,
    )
    assert started.status_code == 303
    sandbox_page = client.get(started.headers["location"])
    assert "TEST MODE" in sandbox_page.text and "0002" in sandbox_page.text
    saved = client.post(
        started.headers["location"],
        data={"card": card, "csrf_token": csrf(client, started.headers["location"])},
        follow_redirects=True,
    )
    assert saved.status_code == 200


def test_add_a_test_card_set_the_rule_and_see_the_auto_top_up(
    client, session_factory, settings, customer_line
):
    line_id = customer_line
    page = f"/lines/{line_id}/autotopup"
    assert f'href="{page}"' in client.get(f"/lines/{line_id}").text
    assert "Add a card first" in client.get(page).text
    save_test_card(client, line_id, "success")
    shown = client.get(page)
    assert "Test card •••• 4242" in shown.text
    method_id = re.search(r'name="method" value="(\d+)"', shown.text).group(1)
    form = {
        "method": method_id,
        "amount": "10.00",
        "balance_below": "5.00",
        "days_before": "",
        "cap": "30.00",
        "enabled": "1",
    }
    # Bad input: a clear message, the form kept, nothing changed.
    before = fingerprint(session_factory)
    refused = client.post(page, data=form | {"cap": "1.00", "csrf_token": csrf(client, page)})
    assert refused.status_code == 422
    assert "The monthly limit must be between £10.00 and £200.00." in refused.text
    assert 'value="1.00"' in refused.text
    assert fingerprint(session_factory) == before
    saved = client.post(page, data=form | {"csrf_token": csrf(client, page)}, follow_redirects=True)
    assert saved.status_code == 200 and "Your changes are saved." in saved.text and "On" in saved.text
    without_csrf = client.post(page, data=form)
    assert without_csrf.status_code == 403

    report = run_due(session_factory, providers=client.app.state.payment_providers, settings=settings)
    assert report.succeeded == 1
    shown = client.get(page)
    assert "Recent auto top-ups" in shown.text and "Done" in shown.text and "£10.00" in shown.text


def test_declined_card_shows_why_the_rule_is_paused(client, session_factory, settings, customer_line):
    line_id = customer_line
    page = f"/lines/{line_id}/autotopup"
    save_test_card(client, line_id, "decline")
    method_id = re.search(r'name="method" value="(\d+)"', client.get(page).text).group(1)
    client.post(
        page,
        data={
            "method": method_id,
            "amount": "10.00",
            "balance_below": "5.00",
            "cap": "30.00",
            "enabled": "1",
            "csrf_token": csrf(client, page),
        },
    )
    assert (
        run_due(session_factory, providers=client.app.state.payment_providers, settings=settings).declined
        == 1
    )
    shown = client.get(page)
    assert "Paused after a declined payment" in shown.text and "Declined" in shown.text


def test_another_customers_line_is_not_found(client, session_factory, settings, customer_line):
    with unit_of_work(session_factory) as session:
        other = factories.customer(session, settings)
        line = factories.line(session, settings, msisdn="+447911123999", customer_id=other.id)
    assert client.get(f"/lines/{line.id}/autotopup").status_code == 404


def test_chinese_page(client, customer_line):
    client.post("/language", data={"language": "zh_Hans", "next": "/", "csrf_token": csrf(client, "/")})
    page = client.get(f"/lines/{customer_line}/autotopup")
    assert page.status_code == 200 and "自动充值" in page.text


@pytest.fixture
def cli_env(monkeypatch, database_url, tmp_path):
    monkeypatch.setenv("AIRTIME_DATABASE_URL", database_url)
    monkeypatch.setenv("AIRTIME_SECRET_KEY", "test-secret")
    monkeypatch.setenv("AIRTIME_OUTBOX_DIR", str(tmp_path / "outbox"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_cli_runs_due_rules_once(cli_env, session_factory, settings):
    with unit_of_work(session_factory) as session:
        autotopup_helpers.rule_on_line(session, settings, balance_minor=100)
    result = runner.invoke(cli, ["autotopup", "run"])
    assert result.exit_code == 0, result.output
    assert "1 charged, 1 credited" in result.output
    again = runner.invoke(cli, ["autotopup", "run"])
    assert again.exit_code == 0 and "0 charged" in again.output


def test_cli_refuses_a_bad_limit_in_one_line(cli_env, session_factory):
    before = fingerprint(session_factory)
    result = runner.invoke(cli, ["autotopup", "run", "--limit", "0"])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "--limit" in result.output
    assert fingerprint(session_factory) == before
