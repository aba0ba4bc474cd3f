"""Reports and announcements in a real browser at 375 px: a supervisor's report page draws its
charts (an inline SVG with visible bars), and an announcement shows on the home page in
English and in Chinese."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from playwright.sync_api import Browser, expect

from airtime.accounts import service as accounts
from airtime.announcements import service as announcements
from airtime.clock import utcnow
from airtime.db.session import make_engine, make_session_factory, unit_of_work
from airtime.web.context import STAFF_COOKIE
from tests import report_helpers, staff_helpers
from tests.browser.conftest import ACTION_TIMEOUT_MILLISECONDS, PHONE_VIEWPORT, LiveServer, serving_demo_app
from tests.browser.pages import AnnouncementBanner, HomePage, ReportPage

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """This module's own server: it adds report data and an announcement."""
    with serving_demo_app(tmp_path_factory.mktemp("reports_server")) as server:
        engine = make_engine(server.settings.database_url)
        with unit_of_work(make_session_factory(engine)) as session:
            report_helpers.seed(session, server.settings)
            announcements.publish(
                session,
                draft=announcements.AnnouncementDraft(
                    level="price_change",
                    title_en="New prices from 1 May",
                    body_en="Calls to the UK cost less.",
                    title_zh="5月1日起新资费",
                    body_zh="拨打英国电话更便宜。",
                    starts_at=utcnow() - timedelta(hours=1),
                    ends_at=utcnow() + timedelta(days=7),
                ),
                actor=staff_helpers.staff_user(session, email="announcer@example.com", role="admin"),
            )
        engine.dispose()
        yield server


def _context(browser: Browser, live_server: LiveServer, locale: str):
    context = browser.new_context(viewport=PHONE_VIEWPORT, locale=locale, base_url=live_server.base_url)
    context.set_default_timeout(ACTION_TIMEOUT_MILLISECONDS)
    return context


def test_a_report_page_draws_its_chart_with_visible_bars(browser: Browser, live_server: LiveServer) -> None:
    engine = make_engine(live_server.settings.database_url)
    factory = make_session_factory(engine)
    with unit_of_work(factory) as session:
        staff = accounts.create_staff(
            session, email="boss@example.com", password="boss password", role="supervisor"
        )
        token = accounts.open_session(
            session, kind="staff", lifetime=timedelta(hours=1), staff_user_id=staff.id
        )
    engine.dispose()
    context = _context(browser, live_server, "en-US")
    context.add_cookies(
        [
            {
                "name": STAFF_COOKIE,
                "value": staff_helpers.sign(live_server.settings, STAFF_COOKIE, token),
                "url": live_server.base_url,
            }
        ]
    )
    page = context.new_page()
    report = ReportPage(page, "topups")
    page.goto(f"{report.path}?start=2026-03-01&end=2026-03-03&currency=GBP")
    expect(report.heading).to_have_text("Top-ups")
    expect(report.chart("by-channel")).to_be_visible()
    expect(report.bars("by-channel")).to_have_count(len(report_helpers.TOPUPS_BY_CHANNEL))
    first_bar = report.bars("by-channel").first
    expect(first_bar).to_be_visible()
    box = first_bar.bounding_box()
    assert box is not None and box["width"] >= 10 and box["height"] >= 10
    expect(report.points("success-rate")).to_have_count(2)
    chart_box = report.chart("by-channel").bounding_box()
    assert chart_box is not None and chart_box["width"] <= PHONE_VIEWPORT["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE_VIEWPORT["width"]
    expect(report.csv_link("by-channel")).to_have_attribute(
        "href", "/admin/reports/topups/by-channel.csv?start=2026-03-01&end=2026-03-03&currency=GBP"
    )
    context.close()


@pytest.mark.parametrize(
    ("locale", "title", "other"),
    [
        ("en-GB", "New prices from 1 May", "5月1日起新资费"),
        ("zh-CN", "5月1日起新资费", "New prices from 1 May"),
    ],
)
def test_an_announcement_shows_on_the_home_page_in_the_readers_language(
    browser: Browser, live_server: LiveServer, locale: str, title: str, other: str
) -> None:
    context = _context(browser, live_server, locale)
    page = context.new_page()
    HomePage(page).open()
    banner = AnnouncementBanner(page)
    expect(banner.items).to_have_count(1)
    expect(banner.items.first).to_be_visible()
    assert banner.titles() == [title]
    expect(page.locator("main")).not_to_contain_text(other)
    context.close()
