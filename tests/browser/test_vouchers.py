"""Vouchers in a real browser, on a phone-sized screen: the outlet sells an e-PIN at the
till, a subscriber redeems it and sees the new balance; wrong PINs lock voucher top-up.

The demo voucher data (the Corner Shop outlet with its float and staff login, five released
£10 vouchers whose PINs go to ``demo-vouchers.csv``) is what ``airtime demo`` adds with
``seed_vouchers``; the shared server has only ``seed``'s data, so this module runs servers of
its own:

- one for the module (sales and redemptions change the outlet's float and the lines the
  other modules read): Ana's +44 7911 123456 is credited by a logged-in redemption, Li Wei's
  +33 6 12 34 56 78 by an anonymous one; tests compare before and after, not absolute amounts;
- one for each lockout test: wrong PINs are counted per line, per customer and per IP
  address, and every browser request comes from 127.0.0.1, so a lockout would lock every
  later redemption on the same server.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from airtime.clock import today, utcnow
from airtime.db.session import make_engine, make_session_factory
from airtime.demo import DEMO_OUTLET_STAFF, DEMO_PASSWORD, seed_vouchers
from airtime.i18n import gettext
from tests.browser.conftest import (
    ACTION_TIMEOUT_MILLISECONDS,
    PHONE_VIEWPORT,
    LiveServer,
    serving_demo_app,
)
from tests.browser.pages import (
    LinesPage,
    LoginPage,
    OutletLoginPage,
    OutletStatementPage,
    OutletTillPage,
    RedeemPage,
    TopupStatusPage,
)

pytestmark = pytest.mark.browser

ANA_EMAIL = "ana@example.com"
ANA_ACTIVE_LINE = "+44 7911 123456"
LI_WEI_FRENCH_LINE = "+33 6 12 34 56 78"
UNOWNED_LINE = "+44 7400 123456"
ZH = "zh_Hans"
PIN_AS_PRINTED = re.compile(r"^\d{4} \d{4} \d{4} \d{4}$")
# Sixteen well-formed digits: refused because no voucher has them, not because of a typo.
WRONG_PIN = "0000 1111 2222 3333"
INVALID_PIN_MESSAGE = "This PIN is not valid. Check the digits and try again."
LOCKED_MESSAGE = "Too many wrong PINs. Voucher top-up is locked until %(until)s UTC."
LOCKED_UNTIL = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d)")
FAILURES_BEFORE_LOCK = 5  # Settings.voucher_failures_max, the default the servers run with
LOCK_HOURS = 24  # Settings.voucher_lock_hours


@dataclass(frozen=True)
class VoucherDemo:
    """A live server with the demo data and the demo vouchers, and the printed PINs."""

    server: LiveServer
    printed_pins: list[str]


@contextmanager
def serving_voucher_demo(data_dir: Path) -> Iterator[VoucherDemo]:
    """The app with ``seed``'s demo data plus ``seed_vouchers``' outlet and vouchers."""
    with serving_demo_app(data_dir) as server:
        engine = make_engine(server.settings.database_url)
        try:
            pins = seed_vouchers(
                make_session_factory(engine), server.settings, data_dir / "demo-vouchers.csv"
            )
        finally:
            engine.dispose()
        yield VoucherDemo(server=server, printed_pins=pins)


@pytest.fixture(scope="module")
def voucher_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VoucherDemo]:
    with serving_voucher_demo(tmp_path_factory.mktemp("voucher_server")) as demo:
        yield demo


@pytest.fixture(scope="module")
def live_server(voucher_demo: VoucherDemo) -> LiveServer:
    """This module's own server (overrides the shared one), for the ``page`` fixture."""
    return voucher_demo.server


@pytest.fixture
def lockout_demo(tmp_path: Path) -> Iterator[VoucherDemo]:
    """A server for one lockout test alone, so the locked IP address locks nothing else."""
    data_dir = tmp_path / "server"
    data_dir.mkdir()
    with serving_voucher_demo(data_dir) as demo:
        yield demo


@pytest.fixture
def lockout_page(browser: Browser, lockout_demo: VoucherDemo) -> Iterator[Page]:
    """A fresh phone-sized page in English on the lockout test's own server."""
    context = browser.new_context(
        viewport=PHONE_VIEWPORT, locale="en-US", base_url=lockout_demo.server.base_url
    )
    context.set_default_timeout(ACTION_TIMEOUT_MILLISECONDS)
    yield context.new_page()
    context.close()


@contextmanager
def another_person(page: Page, server: LiveServer) -> Iterator[Page]:
    """A second browser context on the same server: someone else, on their own phone."""
    browser = page.context.browser
    assert browser is not None
    context = browser.new_context(viewport=PHONE_VIEWPORT, locale="en-US", base_url=server.base_url)
    context.set_default_timeout(ACTION_TIMEOUT_MILLISECONDS)
    try:
        yield context.new_page()
    finally:
        context.close()


def pounds(text: str) -> int:
    """Pence in an amount as shown ("£1,012.50", "-£10.00", "−£10.00")."""
    match = re.search(r"([-−]?)£([\d,]+)\.(\d\d)", text)
    assert match, f"no £ amount in {text!r}"
    sign = -1 if match.group(1) else 1
    return sign * (int(match.group(2).replace(",", "")) * 100 + int(match.group(3)))


def shown(pence: int) -> str:
    return f"£{pence / 100:,.2f}"


def sold(text: str) -> tuple[int, int]:
    """The statement's "Sold" value ("2 · £60.00"): how many sales, and for how much."""
    count, _, amount = text.partition("·")
    return int(count.strip()), pounds(amount)


def outlet_staff_logs_in(page: Page) -> OutletTillPage:
    OutletLoginPage(page).open().log_in(DEMO_OUTLET_STAFF, DEMO_PASSWORD)
    expect(page).to_have_url(re.compile(r"/outlet$"))
    return OutletTillPage(page)


def the_shop_sells_an_e_pin(page: Page, server: LiveServer, amount: str) -> str:
    """The shop assistant, at the till in a browser of their own, sells one; its PIN."""
    with another_person(page, server) as shop:
        receipt = outlet_staff_logs_in(shop).sell(amount)
        expect(receipt.pin).to_have_text(PIN_AS_PRINTED)
        return receipt.pin.inner_text()


def log_in_as_ana(page: Page) -> LinesPage:
    LoginPage(page).open().log_in(ANA_EMAIL, DEMO_PASSWORD)
    expect(page).to_have_url(re.compile(r"/lines$"))
    return LinesPage(page)


def screenshot(page: Page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def test_outlet_staff_sell_an_e_pin_and_the_statement_shows_it(page: Page, tmp_path: Path) -> None:
    till = outlet_staff_logs_in(page)

    expect(till.heading).to_have_text("Sell an e-PIN")
    expect(till.outlet_navigation).to_contain_text("Corner Shop")
    expect(till.values).to_have_count(4)
    for amount in ("£5.00", "£10.00", "£20.00", "£50.00"):
        expect(till.value(amount)).to_be_visible()
    expect(till.sell_button).to_have_text("Take the cash and print the PIN")
    float_before = pounds(till.float_balance.inner_text())

    statement = OutletStatementPage(page).open()
    expect(statement.heading).to_have_text(f"Statement {today().isoformat()}")
    expect(statement.value("Closing float")).to_have_text(shown(float_before))
    sold_count_before, sold_amount_before = sold(statement.value("Sold").inner_text())

    receipt = OutletTillPage(page).open().sell("£10.00")

    expect(receipt.outlet_name).to_have_text("Corner Shop")
    expect(receipt.face_value).to_have_text("£10.00")
    expect(receipt.pin).to_have_text(PIN_AS_PRINTED)
    expect(receipt.value("Serial")).to_have_text(re.compile(r"^\d{12}$"))
    serial = receipt.value("Serial").inner_text()
    expect(receipt.value("Expires")).to_have_text((today() + timedelta(days=365)).isoformat())
    expect(receipt.value("Sold")).to_have_text(re.compile(rf"^{today().isoformat()} \d\d:\d\d UTC$"))
    expect(receipt.receipt).to_contain_text("/redeem")
    expect(receipt.next_sale_link).to_have_text("Next sale")
    screenshot(page, tmp_path / "till-receipt-375px.png")

    till = receipt.next_sale()

    expect(till.float_balance).to_have_text(shown(float_before - 1000))

    till.outlet_link("/outlet/statement").click()
    page.wait_for_url("**/outlet/statement")
    sale = statement.row(f"e-PIN {serial}")
    expect(sale).to_have_count(1)
    expect(sale.locator("td.num")).to_have_text(re.compile(r"^[-−]£10\.00$"))
    expect(statement.value("Closing float")).to_have_text(shown(float_before - 1000))
    assert sold(statement.value("Sold").inner_text()) == (sold_count_before + 1, sold_amount_before + 1000)


def test_a_customer_redeems_an_e_pin_onto_her_line_and_sees_the_new_balance(
    page: Page, live_server: LiveServer
) -> None:
    pin = the_shop_sells_an_e_pin(page, live_server, "£10.00")
    lines = log_in_as_ana(page)
    balance_before = pounds(lines.card(ANA_ACTIVE_LINE).balance.inner_text())

    lines.navigation_link("Voucher").click()
    page.wait_for_url("**/redeem")
    redeem = RedeemPage(page)
    expect(redeem.heading).to_have_text("Redeem a voucher")
    expect(redeem.own_lines).to_have_count(3)
    expect(redeem.own_line(ANA_ACTIVE_LINE)).to_be_checked()
    expect(redeem.form.get_by_label("Or another number")).to_have_value("")
    expect(redeem.redeem_button).to_have_text("Redeem")

    # She picks her line and types it under "Or another number" too (the typed number wins).
    status_code = redeem.redeem(pin, own_line=ANA_ACTIVE_LINE, number=ANA_ACTIVE_LINE)

    assert status_code == 200, redeem.error.all_inner_texts()
    expect(page).to_have_url(re.compile(r"/topup/orders/[^/]+$"))
    status = TopupStatusPage(page)
    expect(status.heading).to_have_text("Top-up of £10.00 for +447••••••456")
    expect(status.stage("credited")).to_contain_text("Credited to the line")
    expect(status.stage("paid")).to_have_class(re.compile(r"\bdone\b"))
    expect(status.stage("credited")).to_have_class(re.compile(r"\bdone\b"))
    new_balance = shown(balance_before + 1000)
    expect(status.notice).to_contain_text(f"New balance: {new_balance}")

    lines.open()
    # The main balance comes first (a first-top-up bonus, if any, follows it: "+ £1.00 bonus").
    expect(lines.card(ANA_ACTIVE_LINE).balance).to_have_text(
        re.compile(rf"^\s*{re.escape(new_balance)}(\s|$)")
    )

    # An e-PIN works once: the same PIN again says when it was used.
    assert RedeemPage(page).open().redeem(pin, number=ANA_ACTIVE_LINE) == 422
    expect(redeem.error).to_contain_text("This voucher was already used on")


def test_a_customer_redeems_onto_the_line_she_picks(page: Page, live_server: LiveServer) -> None:
    pin = the_shop_sells_an_e_pin(page, live_server, "£5.00")
    log_in_as_ana(page)
    redeem = RedeemPage(page).open()

    status_code = redeem.redeem(pin, own_line=ANA_ACTIVE_LINE)

    assert status_code == 200, redeem.error.all_inner_texts()
    status = TopupStatusPage(page)
    expect(status.heading).to_have_text("Top-up of £5.00 for +447••••••456")
    expect(status.stage("credited")).to_have_class(re.compile(r"\bdone\b"))


def test_anonymous_redemption_onto_a_typed_number(
    page: Page, voucher_demo: VoucherDemo, tmp_path: Path
) -> None:
    pin = the_shop_sells_an_e_pin(page, voucher_demo.server, "£20.00")

    redeem = RedeemPage(page).open()
    expect(redeem.own_lines).to_have_count(0)
    expect(redeem.number_field).to_be_visible()
    expect(redeem.form.get_by_label("Number to credit")).to_be_visible()

    status_code = redeem.redeem(pin, number=LI_WEI_FRENCH_LINE)

    assert status_code == 200
    status = TopupStatusPage(page)
    expect(status.heading).to_have_text("Top-up of £20.00 for +336•••••678")
    expect(status.stage("credited")).to_have_class(re.compile(r"\bdone\b"))
    expect(status.notice).to_contain_text("Done: the credit is on the line.")
    # Li Wei's line had £3.00; anyone with the PIN can credit any number.
    expect(status.notice).to_contain_text("New balance: £23.00")
    screenshot(page, tmp_path / "voucher-status-375px.png")

    # A printed demo voucher (released to the shop) redeems the same way, without spaces.
    RedeemPage(page).open().redeem(voucher_demo.printed_pins[0], number=LI_WEI_FRENCH_LINE)
    expect(status.heading).to_have_text("Top-up of £10.00 for +336•••••678")
    expect(status.notice).to_contain_text("New balance: £33.00")


def assert_locked_until_about_a_day_from_now(message: str) -> None:
    match = LOCKED_UNTIL.search(message)
    assert match, f"no date and time in {message!r}"
    until = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=utcnow().tzinfo)
    expected = utcnow() + timedelta(hours=LOCK_HOURS)
    assert abs(until - expected) < timedelta(minutes=3), (until, expected)


def test_five_wrong_pins_lock_voucher_top_up(
    lockout_page: Page, lockout_demo: VoucherDemo, tmp_path: Path
) -> None:
    page = lockout_page
    redeem = RedeemPage(page).open()

    for attempt in range(1, FAILURES_BEFORE_LOCK):
        status_code = redeem.redeem(WRONG_PIN, number=UNOWNED_LINE)
        assert status_code == 422, f"attempt {attempt}"
        expect(redeem.error).to_have_text(INVALID_PIN_MESSAGE)
        # The number stays filled in; the PIN is typed again.
        expect(redeem.number_field).to_have_value(UNOWNED_LINE)

    status_code = redeem.redeem(WRONG_PIN, number=UNOWNED_LINE)

    assert status_code == 429
    expect(redeem.error).to_have_text(
        re.compile(r"^Too many wrong PINs\. Voucher top-up is locked until \d{4}-\d\d-\d\d \d\d:\d\d UTC\.$")
    )
    assert_locked_until_about_a_day_from_now(redeem.error.inner_text())
    screenshot(page, tmp_path / "redeem-locked-375px.png")
    width = redeem.scroll_width_pixels()
    assert width <= PHONE_VIEWPORT["width"], f"the lockout page is {width} px wide"

    # While locked, even the right PIN is refused, and on another number too (same address).
    right_pin = lockout_demo.printed_pins[0]
    status_code = redeem.redeem(right_pin, number=LI_WEI_FRENCH_LINE)

    assert status_code == 429
    expect(redeem.error).to_contain_text("Too many wrong PINs. Voucher top-up is locked until")
    expect(page).to_have_url(re.compile(r"/redeem$"))


def test_the_lockout_in_chinese(lockout_page: Page) -> None:
    page = lockout_page
    redeem = RedeemPage(page).open()
    redeem.switch_language("简体中文")

    expect(page).to_have_url(re.compile(r"/redeem$"))
    expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
    expect(redeem.heading).to_have_text(gettext(ZH, "Redeem a voucher"))
    expect(redeem.redeem_button).to_have_text(gettext(ZH, "Redeem"))
    expect(redeem.form.get_by_label(gettext(ZH, "Voucher PIN"))).to_be_visible()

    for attempt in range(1, FAILURES_BEFORE_LOCK):
        assert redeem.redeem(WRONG_PIN, number=UNOWNED_LINE) == 422, f"attempt {attempt}"
        expect(redeem.error).to_have_text(gettext(ZH, INVALID_PIN_MESSAGE))

    status_code = redeem.redeem(WRONG_PIN, number=UNOWNED_LINE)

    assert status_code == 429
    expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
    locked_text = gettext(ZH, LOCKED_MESSAGE)
    before_time, _, after_time = locked_text.partition("%(until)s")
    assert before_time, locked_text
    expect(redeem.error).to_have_text(
        re.compile("^" + re.escape(before_time) + r"\d{4}-\d\d-\d\d \d\d:\d\d" + re.escape(after_time) + "$")
    )
    assert_locked_until_about_a_day_from_now(redeem.error.inner_text())
    expect(redeem.heading).to_have_text(gettext(ZH, "Redeem a voucher"))


def test_no_sideways_scrolling_at_the_till_and_when_redeeming_on_a_phone(page: Page) -> None:
    width_max = PHONE_VIEWPORT["width"]
    too_wide: dict[str, int] = {}

    def measure(label: str) -> None:
        width = RedeemPage(page).scroll_width_pixels()
        if width > width_max:
            too_wide[label] = width

    RedeemPage(page).open()
    measure("/redeem")
    OutletLoginPage(page).open()
    measure("/outlet/login")
    till = outlet_staff_logs_in(page)
    measure("/outlet")
    receipt = till.sell("£5.00")
    expect(receipt.pin).to_have_text(PIN_AS_PRINTED)
    measure("till receipt")
    statement = OutletStatementPage(page).open()
    expect(statement.rows.first).to_be_visible()
    measure("/outlet/statement")
    log_in_as_ana(page)
    RedeemPage(page).open()
    measure("/redeem with own lines")

    assert not too_wide, f"wider than the {width_max} px screen: {too_wide}"
