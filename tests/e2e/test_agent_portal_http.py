"""The agent portal over HTTP on both databases: log in, sell, history, statement and its CSV."""

from __future__ import annotations

import csv
import io
import re

from airtime.accounts import service as accounts
from airtime.agents import service as agents
from airtime.clock import today
from airtime.db.session import unit_of_work
from airtime.ledger.service import balance_of
from tests import agent_helpers, topup_helpers
from tests.e2e.test_web import csrf

HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')


def _log_in(client, session_factory, settings, **agent_options):
    with unit_of_work(session_factory) as session:
        line = topup_helpers.line_with_catalogue(session, settings)
        keys = agent_helpers.agent(session, settings, **agent_options)
        accounts.create_staff(
            session,
            email="desk@agent.example",
            password="desk password",
            role="agent",
            agent_id=keys.agent_id,
        )
    assert client.get("/agent", follow_redirects=False).headers["location"] == "/agent/login"
    login = client.post(
        "/agent/login",
        data={
            "email": "desk@agent.example",
            "password": "desk password",
            "csrf_token": csrf(client, "/agent/login"),
        },
        follow_redirects=False,
    )
    assert login.status_code == 303 and login.headers["location"] == "/agent"
    return line, keys


def test_sell_then_history_and_statement_with_csv(client, session_factory, settings):
    line, keys = _log_in(client, session_factory, settings, commission_basis_points=400)
    home = client.get("/agent")
    assert home.status_code == 200 and "£100.00" in home.text
    form = dict(HIDDEN.findall(home.text))
    receipt = client.post("/agent/sell", data={**form, "msisdn": "07911 123456", "amount_minor": "1000"})
    assert receipt.status_code == 200, receipt.text
    assert "£10.00" in receipt.text and "£0.40" in receipt.text
    number = re.search(r'data-testid="receipt-number">([^<]+)<', receipt.text).group(1)
    # The same form sent twice (a double tap) sells once.
    again = client.post("/agent/sell", data={**form, "msisdn": "07911 123456", "amount_minor": "1000"})
    assert number in again.text
    with unit_of_work(session_factory) as session:
        assert balance_of(session, line.main_account_id) == 1000
        assert balance_of(session, keys.float_account_id) == 10_000 - 960
    history = client.get("/agent/history")
    assert number in history.text and "+447911123456" in history.text
    statement = client.get("/agent/statement")
    assert statement.status_code == 200
    summary = re.search(r'data-testid="statement-summary">(.*?)</dl>', statement.text, re.S).group(1)
    assert "£0.00" in summary and "£100.00" in summary and "£90.40" in summary and "£0.40" in summary
    monthly = client.get(f"/agent/statement?period=month&day={today().isoformat()}")
    assert monthly.status_code == 200 and "£90.40" in monthly.text
    download = client.get("/agent/statement.csv?period=month")
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert [row["type"] for row in rows] == ["opening", "funding", "sale", "closing"]
    assert (
        rows[2]["amount"] == "10.00"
        and rows[2]["commission"] == "0.40"
        and rows[2]["float_change"] == "-9.60"
    )
    assert rows[-1]["float_after"] == "90.40"


def test_refusals_show_on_the_form_and_sell_nothing(client, session_factory, settings):
    _, keys = _log_in(client, session_factory, settings, float_minor=500)
    home = client.get("/agent")
    form = dict(HIDDEN.findall(home.text))
    refused = client.post("/agent/sell", data={**form, "msisdn": "+447911123456", "amount_minor": "1000"})
    assert refused.status_code == 409 and "Nothing was charged" in refused.text
    unknown = client.post("/agent/sell", data={**form, "msisdn": "+447911123999", "amount_minor": "500"})
    assert unknown.status_code == 422
    with unit_of_work(session_factory) as session:
        assert balance_of(session, keys.float_account_id) == 500
        assert agents.list_sales(session, agent=agents.agent_by_code(session, keys.code)) == []


def test_other_staff_cannot_enter_the_agent_portal(client, session_factory, settings):
    with unit_of_work(session_factory) as session:
        accounts.create_staff(session, email="care@example.com", password="care password", role="care")
    refused = client.post(
        "/agent/login",
        data={
            "email": "care@example.com",
            "password": "care password",
            "csrf_token": csrf(client, "/agent/login"),
        },
    )
    assert refused.status_code == 401 and "does not belong to an agent" in refused.text
