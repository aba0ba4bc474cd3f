"""The agent portal in a real browser at 375 px, in English and Chinese, on a demo app of its
own: the demo agent AG-CORNER ("Corner Agents", GBP, 3% commission, £500.00 float) and its
staff login agent@example.com sell top-ups to the unowned demo line +44 7400 123456."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from airtime.clock import today
from airtime.demo import (
    DEMO_AGENT_COMMISSION_BASIS_POINTS,
    DEMO_AGENT_FLOAT_MINOR,
    DEMO_AGENT_STAFF,
    DEMO_PASSWORD,
)
from airtime.i18n import gettext
from tests.browser.conftest import PHONE_VIEWPORT, LiveServer, serving_demo_app
from tests.browser.pages import (
    AgentHistoryPage,
    AgentLoginPage,
    AgentPage,
    AgentSellPage,
    AgentStatementPage,
)

pytestmark = pytest.mark.browser

ZH = "zh_Hans"
CUSTOMER_NUMBER_TYPED = "07400 123456"
CUSTOMER_NUMBER = "+447400123456"


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A demo app of this module's own: its sales move the agent's float and a line's balance,
    which other modules' tests must not see."""
    with serving_demo_app(tmp_path_factory.mktemp("agent_portal")) as server:
        yield server


def pounds(text: str) -> int:
    """Pence in an amount as shown ("£1,012.50", "-£9.70", "−£9.70")."""
    match = re.search(r"([-−]?)£([\d,]+)\.(\d\d)", text)
    assert match, f"no £ amount in {text!r}"
    sign = -1 if match.group(1) else 1
    return sign * (int(match.group(2).replace(",", "")) * 100 + int(match.group(3)))


def shown(pence: int) -> str:
    return f"£{pence / 100:,.2f}"


def commission_on(pence: int) -> int:
    """The demo agent's commission: 3%, whole pence (the amounts sold here round exactly)."""
    commission, remainder = divmod(pence * DEMO_AGENT_COMMISSION_BASIS_POINTS, 10_000)
    assert remainder == 0, "pick an amount whose commission is whole pence"
    return commission


def sold(text: str) -> tuple[int, int]:
    """The statement's "Top-ups sold" value ("2 · £30.00"): how many, and for how much."""
    count, _, amount = text.partition("·")
    return int(count.strip()), pounds(amount)


class Widths:
    """Records every page wider than the phone: sideways scrolling is a failure."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.too_wide: dict[str, int] = {}

    def measure(self, label: str) -> None:
        width = AgentPage(self.page).scroll_width_pixels()
        if width > PHONE_VIEWPORT["width"]:
            self.too_wide[label] = width

    def assert_none_too_wide(self) -> None:
        assert not self.too_wide, f"wider than the {PHONE_VIEWPORT['width']} px screen: {self.too_wide}"


def agent_staff_log_in(page: Page, widths: Widths) -> AgentSellPage:
    login = AgentLoginPage(page).open()
    widths.measure("/agent/login")
    login.log_in(DEMO_AGENT_STAFF, DEMO_PASSWORD)
    expect(page).to_have_url(re.compile(r"/agent$"))
    return AgentSellPage(page)


def screenshot(page: Page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def test_agent_staff_sell_a_top_up_and_see_it_in_history_and_statement(page: Page, tmp_path: Path) -> None:
    widths = Widths(page)
    expect(AgentLoginPage(page).open().heading).to_have_text("Agent log in")
    sell_page = agent_staff_log_in(page, widths)

    expect(sell_page.heading).to_have_text("Sell a top-up")
    expect(sell_page.agent_navigation).to_contain_text("Corner Agents")
    expect(sell_page.float_balance).to_have_text(shown(DEMO_AGENT_FLOAT_MINOR))
    expect(sell_page.amounts).to_have_count(4)
    for amount in ("£5.00", "£10.00", "£20.00", "£50.00"):
        expect(sell_page.amount(amount)).to_be_visible()
    expect(sell_page.sell_button).to_have_text("Take the money and top up")
    widths.measure("/agent")

    sell_page.go_to("/agent/statement")
    statement = AgentStatementPage(page)
    expect(statement.heading).to_have_text(f"Statement {today().isoformat()}")
    float_before = pounds(statement.value("Closing float").inner_text())
    count_before, sold_before = sold(statement.value("Top-ups sold").inner_text())
    widths.measure("/agent/statement before")

    receipt = AgentSellPage(page).open().sell(CUSTOMER_NUMBER_TYPED, "£10.00")

    commission = commission_on(1000)
    expect(receipt.heading).to_have_text("Topped up")
    expect(receipt.sold_amount).to_have_text("£10.00")
    expect(receipt.value("Number")).to_have_text(CUSTOMER_NUMBER)
    expect(receipt.value("Your commission")).to_have_text(shown(commission))
    expect(receipt.value("From your float")).to_have_text(shown(1000 - commission))
    expect(receipt.value("Time")).to_have_text(re.compile(rf"^{today().isoformat()} \d\d:\d\d UTC$"))
    receipt_number = receipt.receipt_number.inner_text()
    assert receipt_number.strip(), "the receipt has no number"
    expect(receipt.next_sale_link).to_have_text("Next sale")
    widths.measure("receipt")
    screenshot(page, tmp_path / "agent-receipt-375px.png")

    receipt.go_to("/agent/history")
    history = AgentHistoryPage(page)
    expect(history.heading).to_have_text("Sales history")
    sale = history.row(receipt_number)
    expect(sale).to_have_count(1)
    expect(sale.get_by_test_id("sale-number")).to_have_text(CUSTOMER_NUMBER)
    expect(sale.get_by_test_id("sale-amount")).to_have_text("£10.00")
    expect(sale.get_by_test_id("sale-commission")).to_have_text(shown(commission))
    # The float went down by the amount less the commission the agent keeps.
    expect(history.float_balance).to_have_text(shown(float_before - (1000 - commission)))
    widths.measure("/agent/history")
    screenshot(page, tmp_path / "agent-history-375px.png")

    history.go_to("/agent/statement")
    expect(statement.value("Closing float")).to_have_text(shown(float_before - (1000 - commission)))
    assert sold(statement.value("Top-ups sold").inner_text()) == (count_before + 1, sold_before + 1000)
    expect(statement.value("Commission")).to_have_text(shown(commission))
    movement = statement.row(CUSTOMER_NUMBER)
    expect(movement).to_have_count(1)
    expect(movement).to_contain_text("Top-up")
    expect(movement).to_contain_text("£10.00")
    assert pounds(movement.locator("td.num").inner_text()) == -(1000 - commission)
    expect(statement.csv_link).to_have_text("Download CSV")
    widths.measure("/agent/statement after")
    screenshot(page, tmp_path / "agent-statement-375px.png")

    page.locator('main a[href^="/agent/statement?period=month"]').click()
    page.wait_for_url("**/agent/statement?period=month*")
    expect(statement.heading).to_have_text(f"Statement {today().strftime('%Y-%m')}")
    expect(statement.row(CUSTOMER_NUMBER)).to_have_count(1)
    widths.measure("/agent/statement month")

    statement.log_out()
    page.goto("/agent")
    expect(page).to_have_url(re.compile(r"/agent/login$"))
    widths.assert_none_too_wide()


def test_the_agent_portal_in_chinese(page: Page, tmp_path: Path) -> None:
    def zh(message: str) -> str:
        """The Chinese the page must show; a missing catalogue entry fails here, not silently."""
        translated = gettext(ZH, message)
        assert translated != message, f"no Chinese translation for {message!r}"
        return translated

    widths = Widths(page)
    AgentLoginPage(page).open().switch_language("简体中文")
    login = AgentLoginPage(page)
    expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
    expect(login.heading).to_have_text(zh("Agent log in"))
    sell_page = agent_staff_log_in(page, widths)

    expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
    expect(sell_page.heading).to_have_text(zh("Sell a top-up"))
    expect(sell_page.sell_button).to_have_text(zh("Take the money and top up"))
    for path, name in (("/agent", "Sell"), ("/agent/history", "History"), ("/agent/statement", "Statement")):
        expect(sell_page.agent_link(path)).to_have_text(zh(name))
    float_before = pounds(sell_page.float_balance.inner_text())
    widths.measure("/agent in Chinese")

    receipt = sell_page.sell(CUSTOMER_NUMBER_TYPED, "£20.00")

    commission = commission_on(2000)
    expect(receipt.heading).to_have_text(zh("Topped up"))
    expect(receipt.sold_amount).to_have_text("£20.00")
    expect(receipt.value(zh("Your commission"))).to_have_text(shown(commission))
    expect(receipt.value(zh("From your float"))).to_have_text(shown(2000 - commission))
    receipt_number = receipt.receipt_number.inner_text()
    widths.measure("receipt in Chinese")
    screenshot(page, tmp_path / "agent-receipt-zh-375px.png")

    receipt.go_to("/agent/history")
    history = AgentHistoryPage(page)
    expect(history.heading).to_have_text(zh("Sales history"))
    expect(history.row(receipt_number)).to_have_count(1)
    expect(history.float_balance).to_have_text(shown(float_before - (2000 - commission)))
    widths.measure("/agent/history in Chinese")

    history.go_to("/agent/statement")
    statement = AgentStatementPage(page)
    expect(statement.heading).to_have_text(f"{zh('Statement')} {today().isoformat()}")
    expect(statement.value(zh("Closing float"))).to_have_text(shown(float_before - (2000 - commission)))
    expect(statement.row(CUSTOMER_NUMBER).filter(has_text="£20.00")).to_have_count(1)
    expect(statement.csv_link).to_have_text(zh("Download CSV"))
    widths.measure("/agent/statement in Chinese")
    screenshot(page, tmp_path / "agent-statement-zh-375px.png")

    widths.assert_none_too_wide()
