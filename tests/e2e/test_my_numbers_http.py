"""'My numbers' and its calendar feed over HTTP, on both databases."""

from __future__ import annotations

import re
from datetime import date

import icalendar

from airtime.db.session import unit_of_work
from tests import factories
from tests.e2e.test_web import csrf, login
from tests.number_helpers import DAY, at, three_lines

CALENDAR_LINK = re.compile(r'value="(http://testserver/calendar/([^"]+)\.ics)"')


def cards(html: str) -> list[str]:
    return re.findall(r'<li class="card number risk-[a-z]+".*?</li>', html, flags=re.DOTALL)


def test_my_numbers_page_shows_deadlines_days_left_risk_and_keep_alive(client, uow, settings):
    with at(DAY):
        lines = three_lines(uow, settings)
        login(client, lines.email)
        page = client.get("/lines")

    assert page.status_code == 200
    assert "<h1>My numbers</h1>" in page.text
    grace, suspended, active = cards(page.text)
    assert 'class="card number risk-urgent"' in grace and "+44 7911 123457" in grace and "Work" in grace
    assert "Suspended on 27 March 2027 unless you top up" in grace
    assert "26 days left" in grace and ">Urgent<" in grace
    assert "Top up £5.00 to keep it until 31 March 2027 (30 more days)" in grace
    assert f'href="/topup?line={lines.grace_id}"' in grace

    assert "+44 7911 123458" in suspended and ">Urgent<" in suspended
    assert "Number lost on 15 April 2027 unless you top up" in suspended and "45 days left" in suspended
    assert "a fee of £2.00" in suspended

    assert 'class="card number risk-ok"' in active and ">On track<" in active
    assert "Valid until 10 April 2027" in active and "40 days left" in active and "£12.50" in active
    assert f'href="/topup?line={lines.active_id}"' in active


def test_my_numbers_in_chinese(client, uow, settings):
    with at(DAY):
        lines = three_lines(uow, settings, language="zh_Hans")
        login(client, lines.email)
        page = client.get("/lines")
    assert "<h1>我的号码</h1>" in page.text
    grace, _, _ = cards(page.text)
    assert "2027年3月27日 将被停机，除非您充值" in grace and ">紧急<" in grace


def test_the_calendar_link_serves_my_deadlines_and_nobody_elses(client, uow, settings):
    with at(DAY):
        lines = three_lines(uow, settings)
        with unit_of_work(client.app.state.session_factory) as session:
            other = factories.customer(session, settings, email="other@example.com")
            factories.line(session, settings, msisdn="+447911123459", customer_id=other.id)
        login(client, lines.email)
        url, token = CALENDAR_LINK.search(client.get("/lines").text).groups()
        client.cookies.clear()  # calendar apps have no session
        response = client.get(url.removeprefix("http://testserver"))

        login(client, "other@example.com")
        other_url, other_token = CALENDAR_LINK.search(client.get("/lines").text).groups()
        client.cookies.clear()
        other_feed = client.get(other_url.removeprefix("http://testserver"))

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/calendar; charset=utf-8"
    calendar = icalendar.Calendar.from_ical(response.content)
    events = calendar.walk("VEVENT")
    assert {str(event["UID"]).split("@")[0] for event in events} >= {
        f"line-{lines.grace_id}-suspension",
        f"line-{lines.suspended_id}-termination",
        f"line-{lines.active_id}-validity_end",
    }
    starts = {str(event["UID"]).split("@")[0]: event.decoded("DTSTART") for event in events}
    assert starts[f"line-{lines.grace_id}-suspension"] == date(2027, 3, 27)
    assert "+44 7911 123459" not in response.text

    assert other_token != token
    other_events = icalendar.Calendar.from_ical(other_feed.content).walk("VEVENT")
    assert other_events and all("+44 7911 123459" in str(event["SUMMARY"]) for event in other_events)
    assert not any(str(event["UID"]).startswith(f"line-{lines.grace_id}-") for event in other_events)


def test_a_bad_calendar_token_is_an_html_404(client, uow, settings):
    with at(DAY):
        lines = three_lines(uow, settings)
    for path in (
        "/calendar/nonsense.ics",
        f"/calendar/{lines.customer_id}-{'A' * 43}.ics",
        f"/calendar/{lines.customer_id + 1000}-{'A' * 43}.ics",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("text/html")
        assert "BEGIN:VCALENDAR" not in response.text


def test_changing_the_password_gives_a_new_calendar_link(client, uow, settings):
    # Real time here: the new password's time must differ from the registration's.
    lines = three_lines(uow, settings)
    login(client, lines.email)
    old_url, _ = CALENDAR_LINK.search(client.get("/lines").text).groups()
    changed = client.post(
        "/account/password",
        data={
            "current_password": factories.PASSWORD,
            "new_password": "a brand new passphrase",
            "csrf_token": csrf(client, "/account/password"),
        },
    )
    assert changed.status_code == 200
    new_url, _ = CALENDAR_LINK.search(client.get("/lines").text).groups()
    assert new_url != old_url
    assert client.get(old_url.removeprefix("http://testserver")).status_code == 404
    assert client.get(new_url.removeprefix("http://testserver")).status_code == 200
