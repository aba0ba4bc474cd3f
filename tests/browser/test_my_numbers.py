"""'My numbers' in a real browser at 375 px, in English and Chinese, on a fresh demo app
whose customer ana@example.com has three lines in three states: active (valid 75 more
days), grace (suspended in 26 days) and suspended (lost in 16 days)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import icalendar
import pytest
from playwright.sync_api import Page, expect

from airtime.clock import today
from airtime.i18n import gettext
from airtime.lifecycle.numbers import long_date
from tests.browser.conftest import PHONE_VIEWPORT, LiveServer, serving_demo_app
from tests.browser.pages import LinesPage, LoginPage

pytestmark = pytest.mark.browser

ANA_EMAIL = "ana@example.com"
DEMO_PASSWORD = "demo-password"
ACTIVE = "+44 7911 123456"
GRACE = "+44 7911 123457"
SUSPENDED = "+44 7911 123458"


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A demo app of this module's own: other modules top up ana's lines and change their states."""
    with serving_demo_app(tmp_path_factory.mktemp("my_numbers")) as server:
        yield server


def log_in_as_ana(page: Page) -> LinesPage:
    LoginPage(page).open().log_in(ANA_EMAIL, DEMO_PASSWORD)
    expect(page).to_have_url(re.compile(r"/lines$"))
    return LinesPage(page)


def assert_no_sideways_scrolling(numbers: LinesPage) -> None:
    width = numbers.scroll_width_pixels()
    assert width <= PHONE_VIEWPORT["width"], (
        f"the page is {width} px wide on a {PHONE_VIEWPORT['width']} px screen"
    )


def test_my_numbers_in_english_most_urgent_first(page: Page, tmp_path: Path) -> None:
    numbers = log_in_as_ana(page)

    expect(numbers.heading).to_have_text("My numbers")
    expect(numbers.cards).to_have_count(3)
    assert numbers.numbers_in_order == [SUSPENDED, GRACE, ACTIVE]

    suspended = numbers.card(SUSPENDED)
    expect(suspended.risk).to_have_text("Urgent")
    expect(suspended.risk).to_have_class(re.compile(r"\brisk-urgent\b"))
    lost_on = long_date(today() + timedelta(days=16), "en")
    expect(suspended.deadline).to_contain_text(f"Number lost on {lost_on} unless you top up")
    expect(suspended.deadline).to_contain_text("16 days left")
    expect(suspended.state).to_have_text("Suspended")
    expect(suspended.root).to_contain_text("a fee of £2.00")

    grace = numbers.card(GRACE)
    expect(grace.risk).to_have_text("Urgent")
    suspended_on = long_date(today() + timedelta(days=26), "en")
    expect(grace.deadline).to_contain_text(f"Suspended on {suspended_on} unless you top up")
    expect(grace.deadline).to_contain_text("26 days left")
    expect(grace.keep_alive).to_contain_text("Top up £3.00 to keep it until")

    active = numbers.card(ACTIVE)
    expect(active.risk).to_have_text("On track")
    expect(active.risk).to_have_class(re.compile(r"\brisk-ok\b"))
    expect(active.deadline).to_contain_text(f"Valid until {long_date(today() + timedelta(days=75), 'en')}")
    expect(active.deadline).to_contain_text("75 days left")
    expect(active.keep_alive).to_contain_text("Top up £5.00 to keep it until")

    # Colour is never the only signal: every badge has its words, readable at 375 px.
    for card in (suspended, grace, active):
        expect(card.risk).to_be_visible()
        expect(card.top_up_button).to_be_visible()
        box = card.top_up_button.bounding_box()
        assert box is not None and box["height"] >= 44 and box["x"] + box["width"] <= PHONE_VIEWPORT["width"]
    expect(numbers.calendar_link).to_have_value(
        re.compile(r"^http://127\.0\.0\.1:\d+/calendar/\d+-[\w-]{43}\.ics$")
    )
    assert_no_sideways_scrolling(numbers)
    screenshot = tmp_path / "my-numbers-375px.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"my numbers screenshot: {screenshot}")

    # One tap on "Top up" leads to the first top-up step with this number chosen.
    start = numbers.card(GRACE).top_up()
    expect(start.heading).to_have_text("Top up")
    expect(start.own_line_button(GRACE)).to_be_focused()
    options = start.top_up_own_line(GRACE)
    expect(options.form).to_be_visible()
    expect(options.heading).to_contain_text(re.compile(r"•+457$"))  # the number to confirm, masked


def test_my_numbers_in_chinese(page: Page) -> None:
    numbers = log_in_as_ana(page)
    numbers.switch_language("简体中文")

    expect(numbers.heading).to_have_text(gettext("zh_Hans", "My numbers"))
    assert numbers.html_lang == "zh-Hans"
    expect(numbers.cards).to_have_count(3)
    assert numbers.numbers_in_order == [SUSPENDED, GRACE, ACTIVE]
    expect(numbers.card(SUSPENDED).risk).to_have_text("紧急")
    expect(numbers.card(GRACE).risk).to_have_text("紧急")
    expect(numbers.card(ACTIVE).risk).to_have_text("正常")
    suspended_on = long_date(today() + timedelta(days=26), "zh_Hans")
    expect(numbers.card(GRACE).deadline).to_contain_text(f"{suspended_on} 将被停机，除非您充值")
    expect(numbers.card(ACTIVE).deadline).to_contain_text("有效期至")
    expect(numbers.card(ACTIVE).top_up_button).to_have_text("充值")
    assert_no_sideways_scrolling(numbers)

    start = numbers.card(SUSPENDED).top_up()
    expect(start.own_line_button(SUSPENDED)).to_be_focused()
    numbers.switch_language("English")


def test_the_calendar_link_opens_the_deadlines(page: Page) -> None:
    numbers = log_in_as_ana(page)
    url = numbers.calendar_link.input_value()

    response = page.context.request.get(url)

    assert response.status == 200
    assert response.headers["content-type"] == "text/calendar; charset=utf-8"
    events = icalendar.Calendar.from_ical(response.body()).walk("VEVENT")
    summaries = [str(event["SUMMARY"]) for event in events]
    assert f"{SUSPENDED} is lost today unless you top up" in summaries
    assert f"{GRACE} is suspended today unless you top up" in summaries
    assert f"{ACTIVE}: last valid day, top up to keep it" in summaries
