"""The subscriber portal in a real browser, on a phone-sized screen.

Each test starts with no cookies. Tests that change an account (password reset) work on an
account they register themselves, so the demo logins stay as the demo data made them.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from airtime.clock import today
from airtime.i18n import gettext
from tests.browser.conftest import PHONE_VIEWPORT, LiveServer
from tests.browser.pages import (
    HomePage,
    LinePage,
    LinesPage,
    LoginPage,
    OutboxPage,
    RegisterPage,
    ResetPasswordPage,
)

pytestmark = pytest.mark.browser

ANA_EMAIL = "ana@example.com"
LI_WEI_EMAIL = "li.wei@example.com"
DEMO_PASSWORD = "demo-password"
ANA_ACTIVE_LINE = "+44 7911 123456"
ANA_GRACE_LINE = "+44 7911 123457"


def fresh_email() -> str:
    return f"browser-{uuid.uuid4().hex[:12]}@example.com"


def log_in(page: Page, email: str, password: str) -> LinesPage:
    login = LoginPage(page).open()
    login.log_in(email, password)
    expect(page).to_have_url(re.compile(r"/lines$"))
    return LinesPage(page)


def test_register_log_out_and_log_in_again(page: Page) -> None:
    email, password = fresh_email(), "a-new-password-1"

    RegisterPage(page).open().register(email, password)

    lines = LinesPage(page)
    expect(page).to_have_url(re.compile(r"/lines$"))
    expect(lines.heading).to_have_text("My numbers")
    expect(page.get_by_text("There is no line on your account yet.")).to_be_visible()
    expect(lines.cards).to_have_count(0)

    lines.log_out()
    home = HomePage(page)
    expect(home.navigation_link("Log in")).to_be_visible()
    expect(home.navigation_link("My numbers")).to_have_count(0)

    # A logged-out visitor asking for their lines is sent to log in, then back to them.
    page.goto("/lines")
    expect(page).to_have_url(re.compile(r"/login\?next=/lines$"))
    LoginPage(page).log_in(email, password)
    expect(page).to_have_url(re.compile(r"/lines$"))
    expect(lines.heading).to_have_text("My numbers")
    expect(lines.navigation_link("My numbers")).to_be_visible()


def test_wrong_password_is_refused_with_a_message(page: Page) -> None:
    login = LoginPage(page).open()
    login.log_in(LI_WEI_EMAIL, "not-the-password")

    expect(page).to_have_url(re.compile(r"/login$"))
    expect(login.error).to_be_visible()
    expect(login.navigation_link("Log in")).to_be_visible()


def test_my_lines_show_balance_validity_and_state(page: Page, tmp_path: Path) -> None:
    lines = log_in(page, ANA_EMAIL, DEMO_PASSWORD)

    expect(lines.cards).to_have_count(3)  # active, grace and suspended
    active = lines.card(ANA_ACTIVE_LINE)
    expect(active.number).to_have_text(ANA_ACTIVE_LINE)
    expect(active.balance).to_have_text(re.compile(r"^\s*£12\.50\s*$"))
    valid_until = (today() + timedelta(days=75)).isoformat()
    expect(active.validity_date).to_have_text(valid_until)
    expect(active.validity_date).to_have_attribute("datetime", valid_until)
    expect(active.value("Valid until")).to_contain_text("(75 days left)")
    expect(active.state).to_have_text("Active")
    expect(active.value("Plan")).to_have_text("Traveller")

    grace = lines.card(ANA_GRACE_LINE)
    expect(grace.balance).to_have_text(re.compile(r"^\s*£0\.00\s*$"))
    expect(grace.value("Valid until")).to_contain_text("(expired)")
    expect(grace.state).to_have_text("Grace period")

    screenshot = tmp_path / "lines-375px.png"
    page.screenshot(path=str(screenshot), full_page=True)
    print(f"lines page screenshot: {screenshot}")

    line = lines.open_line(ANA_ACTIVE_LINE)
    expect(line.heading).to_have_text(ANA_ACTIVE_LINE)
    expect(line.value("Balance")).to_have_text("£12.50")
    expect(line.value("Valid until")).to_contain_text(valid_until)
    expect(line.value("State")).to_have_text("Active")
    expect(line.history_rows).to_have_count(1)
    expect(line.history_rows.first).to_contain_text("+£12.50")


def test_someone_elses_line_is_not_shown(page: Page) -> None:
    lines = log_in(page, LI_WEI_EMAIL, DEMO_PASSWORD)
    li_wei_line_links = lines.cards.locator("a.card-link").evaluate_all("links => links.map(l => l.href)")
    assert li_wei_line_links
    lines.log_out()
    log_in(page, ANA_EMAIL, DEMO_PASSWORD)

    response = page.goto(li_wei_line_links[0])

    assert response is not None and response.status == 404
    expect(LinePage(page).heading).to_have_text("Something is not right")
    expect(page.get_by_text("保号套餐")).to_have_count(0)


def test_switch_to_chinese_and_back(page: Page) -> None:
    lines = log_in(page, ANA_EMAIL, DEMO_PASSWORD)
    expect(lines.heading).to_have_text("My numbers")
    assert lines.html_lang == "en"

    lines.switch_language("简体中文")

    expect(page).to_have_url(re.compile(r"/lines$"))
    expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
    # The heading is whatever the catalogue says (English until the translation exists).
    expect(lines.heading).to_have_text(gettext("zh_Hans", "My numbers"))
    expect(lines.current_language_button()).to_have_text("简体中文")
    # Plan names in Chinese come from the data, not the catalogue, so they show either way.
    expect(lines.card(ANA_ACTIVE_LINE).value(gettext("zh_Hans", "Plan"))).to_have_text("旅行卡")

    lines.switch_language("English")

    expect(page).to_have_url(re.compile(r"/lines$"))
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(lines.heading).to_have_text("My numbers")
    expect(lines.current_language_button()).to_have_text("English")
    expect(lines.card(ANA_ACTIVE_LINE).value("Plan")).to_have_text("Traveller")


def test_a_customer_who_chose_chinese_sees_chinese_in_an_english_browser(page: Page) -> None:
    lines = log_in(page, LI_WEI_EMAIL, DEMO_PASSWORD)

    expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
    expect(lines.heading).to_have_text(gettext("zh_Hans", "My numbers"))
    expect(lines.cards).to_have_count(2)
    expect(page.get_by_text("保号套餐(人民币)")).to_be_visible()


def test_forgotten_password_reset_by_emailed_link(page: Page, live_server: LiveServer) -> None:
    email, old_password, new_password = fresh_email(), "the-old-password", "the-new-password"
    RegisterPage(page).open().register(email, old_password)
    LinesPage(page).log_out()

    forgot = LoginPage(page).open().forgot_password()
    forgot.request_link(email)
    expect(forgot.notice).to_contain_text("If an account exists for that email")

    outbox = OutboxPage(page).open()
    link = outbox.newest_link_to(email, "Reset your", "/reset-password/")
    assert link.startswith(f"{live_server.base_url}/reset-password/"), link

    reset = ResetPasswordPage(page, link).open()
    expect(reset.heading).to_have_text("Choose a new password")
    reset.set_password(new_password)

    login = LoginPage(page)
    expect(page).to_have_url(re.compile(r"/login\?reset=1$"))
    expect(login.notice).to_have_text("Your password was changed. Log in with the new one.")
    login.log_in(email, old_password)
    expect(login.error).to_be_visible()
    login.log_in(email, new_password)
    expect(page).to_have_url(re.compile(r"/lines$"))

    # The change is announced by email too.
    outbox.open()
    expect(outbox.messages_to(email).first).to_contain_text("password was changed")
    expect(outbox.messages_to(email, "Reset your")).to_have_count(1)

    # A reset link works once.
    reset.open()
    expect(reset.error).to_have_text("This reset link has already been used. Ask for a new one.")
    expect(reset.form).to_have_count(0)
    expect(page.get_by_role("link", name="Ask for a new link")).to_be_visible()


def test_a_made_up_reset_link_is_refused(page: Page) -> None:
    reset = ResetPasswordPage(page, "/reset-password/not-a-real-token").open()

    expect(reset.error).to_have_text("This reset link is not valid. Ask for a new one.")
    expect(reset.form).to_have_count(0)


def test_no_sideways_scrolling_on_a_phone(page: Page) -> None:
    width_max = PHONE_VIEWPORT["width"]
    too_wide: dict[str, int] = {}

    def measure(label: str) -> None:
        width = HomePage(page).scroll_width_pixels()
        if width > width_max:
            too_wide[label] = width

    for path in ("/", "/login", "/register", "/forgot-password"):
        page.goto(path)
        measure(path)
    lines = log_in(page, ANA_EMAIL, DEMO_PASSWORD)
    measure("/lines")
    lines.open_line(ANA_ACTIVE_LINE)
    measure("/lines/{id}")
    page.goto("/outbox")
    measure("/outbox")
    page.goto("/lines")
    lines.switch_language("简体中文")
    measure("/lines in Chinese")
    lines.switch_language("English")

    assert not too_wide, f"wider than the {width_max} px screen: {too_wide}"
