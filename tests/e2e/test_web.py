"""Pages over HTTP on both databases: forms, CSRF, sessions, languages, refusals."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from airtime.accounts.models import Customer
from airtime.db.session import unit_of_work
from airtime.i18n import gettext
from airtime.notifications.models import Notification
from tests import factories
from tests.snapshot import fingerprint

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf(client, path: str = "/login") -> str:
    page = client.get(path)
    assert page.status_code == 200
    return CSRF.search(page.text).group(1)


def register(client, email: str, password: str = factories.PASSWORD):
    return client.post(
        "/register",
        data={"email": email, "password": password, "csrf_token": csrf(client, "/register")},
        follow_redirects=False,
    )


def login(client, email: str, password: str = factories.PASSWORD):
    return client.post(
        "/login",
        data={"email": email, "password": password, "csrf_token": csrf(client), "next": "/lines"},
        follow_redirects=False,
    )


def test_pages_render_for_a_phone_without_login(client):
    for path in ["/", "/login", "/register", "/forgot-password"]:
        page = client.get(path)
        assert page.status_code == 200, path
        assert 'name="viewport" content="width=device-width' in page.text
    assert client.get("/lines", follow_redirects=False).headers["location"].startswith("/login")


def test_register_then_see_my_lines_and_log_out(client, session_factory):
    response = register(client, "new@example.com")
    assert response.status_code == 303 and response.headers["location"] == "/lines"
    lines = client.get("/lines")
    assert "There is no line on your account yet." in lines.text
    logout = client.post("/logout", data={"csrf_token": csrf(client, "/lines")}, follow_redirects=False)
    assert logout.status_code == 303
    assert client.get("/lines", follow_redirects=False).status_code == 303


def test_my_lines_shows_balance_validity_and_state(client, session_factory, settings):
    with unit_of_work(session_factory) as session:
        customer = factories.customer(session, settings, email="ana@example.com")
        line = factories.line(session, settings, customer_id=customer.id, balance_minor=1250)
    login(client, "ana@example.com")
    page = client.get("/lines")
    assert "+44 7911 123456" in page.text
    assert "£12.50" in page.text
    assert line.validity_date.isoformat() in page.text
    assert "Active" in page.text
    detail = client.get(f"/lines/{line.id}")
    assert "Opening balance" in detail.text and "+£12.50" in detail.text
    # Another customer's line is not found, not shown.
    with unit_of_work(session_factory) as session:
        other = factories.customer(session, settings)
        other_line = factories.line(session, settings, msisdn="+447911123457", customer_id=other.id)
    assert client.get(f"/lines/{other_line.id}").status_code == 404


def test_a_form_without_a_csrf_token_is_refused_and_changes_nothing(client, session_factory):
    client.get("/register")
    before = fingerprint(session_factory)
    refused = client.post("/register", data={"email": "csrf@example.com", "password": factories.PASSWORD})
    assert refused.status_code == 403
    assert "This form has expired" in refused.text
    forged = client.post(
        "/register",
        data={"email": "csrf@example.com", "password": factories.PASSWORD, "csrf_token": "forged"},
    )
    assert forged.status_code == 403
    assert fingerprint(session_factory) == before


@pytest.mark.parametrize(
    ("email", "password", "message"),
    [
        ("bad-email", factories.PASSWORD, "is not a valid email address"),
        ("ok@example.com", "short", "at least 8 characters"),
    ],
)
def test_registration_errors_are_shown_and_change_nothing(client, session_factory, email, password, message):
    token = csrf(client, "/register")
    before = fingerprint(session_factory)
    page = client.post("/register", data={"email": email, "password": password, "csrf_token": token})
    assert page.status_code == 422
    assert message in page.text
    assert fingerprint(session_factory) == before


def test_wrong_password_shows_an_error_and_logs_nobody_in(client, session_factory, settings):
    with unit_of_work(session_factory) as session:
        factories.customer(session, settings, email="ana@example.com")
    before = fingerprint(session_factory)
    page = login(client, "ana@example.com", "wrong password")
    assert page.status_code == 401 and "Wrong email or password." in page.text
    assert fingerprint(session_factory) == before


def test_language_switch_follows_accept_language_the_account_and_the_switch(
    client, session_factory, settings
):
    chinese_title = gettext("zh_Hans", "Log in")
    page = client.get("/login", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.5"})
    assert 'lang="zh-Hans"' in page.text and chinese_title in page.text
    with unit_of_work(session_factory) as session:
        customer = factories.customer(session, settings, email="li@example.com", language="zh_Hans")
    login(client, "li@example.com")
    assert 'lang="zh-Hans"' in client.get("/lines").text
    switched = client.post(
        "/language",
        data={"language": "en", "next": "/lines", "csrf_token": csrf(client, "/lines")},
        follow_redirects=False,
    )
    assert switched.status_code == 303
    assert 'lang="en"' in client.get("/lines").text
    with unit_of_work(session_factory) as session:
        assert session.get(Customer, customer.id).language == "en"


def test_an_unknown_language_is_refused_and_changes_nothing(client, session_factory, settings):
    with unit_of_work(session_factory) as session:
        factories.customer(session, settings, email="li@example.com", language="zh_Hans")
    login(client, "li@example.com")
    token = csrf(client, "/lines")
    before = fingerprint(session_factory)
    refused = client.post("/language", data={"language": "klingon", "next": "/lines", "csrf_token": token})
    expected = gettext("zh_Hans", "Unknown language %(code)s; choose one of: %(languages)s.") % {
        "code": "klingon",
        "languages": "en, zh_Hans",
    }
    assert refused.status_code == 422 and expected in refused.text
    assert "airtime_lang" not in refused.cookies
    assert fingerprint(session_factory) == before


def test_forgotten_password_by_emailed_link(client, session_factory, settings):
    with unit_of_work(session_factory) as session:
        factories.customer(session, settings, email="ana@example.com")
    page = client.post(
        "/forgot-password", data={"email": "ana@example.com", "csrf_token": csrf(client, "/forgot-password")}
    )
    assert "If an account exists" in page.text
    with unit_of_work(session_factory) as session:
        body = session.scalars(
            select(Notification.body_text).where(Notification.template == "password_reset")
        ).one()
    link = re.search(r"http://testserver(/reset-password/\S+)", body).group(1)
    form = client.get(link)
    assert form.status_code == 200
    done = client.post(
        link,
        data={"password": "my new password", "csrf_token": CSRF.search(form.text).group(1)},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert login(client, "ana@example.com", "my new password").status_code == 303
    again = client.get(link)
    assert again.status_code == 400 and "already been used" in again.text


def test_outbox_page_shows_messages_in_the_demo(client, session_factory, settings):
    with unit_of_work(session_factory) as session:
        factories.customer(session, settings, email="ana@example.com")
    page = client.get("/outbox")
    assert page.status_code == 200 and "ana@example.com" in page.text


def test_health_and_metrics(client):
    assert client.get("/healthz").json()["status"] == "ok"
    client.get("/login")
    metrics = client.get("/metrics").text
    assert 'airtime_http_requests_total{method="GET",route="/login",status="200"}' in metrics
