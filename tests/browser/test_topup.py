"""Online top-ups in a real browser, on a phone-sized screen, paid on the sandbox's test page.

Top-ups change the demo lines that the portal tests read (a £10 bundle on Ana's line earns
the first-top-up bonus, which the lines page then shows), so this module runs on a server
of its own with fresh demo data. Its tests share that server, so each tops up a line no
other test here tops up, or checks what changed rather than absolute amounts:

- +44 7400 123456 (no owner, £5.00, never topped up): the quick top-up, with the
  first-top-up bonus; only that test uses it.
- +44 7911 123456 (Ana): the bundle, which is paid for by the payment, so the line's
  balance stays as it was.
- +44 7911 123457 (Ana, grace period): only a declined payment, which changes nothing.
- +86 138 0013 8000 (Li Wei, CNY): the top-up in Chinese.
- +33 6 12 34 56 78 (Li Wei, GBP): the page-width checks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from airtime.clock import today
from airtime.i18n import gettext
from tests.browser.conftest import PHONE_VIEWPORT, LiveServer, serving_demo_app
from tests.browser.pages import LinesPage, LoginPage, TopupNumberPage, TopupStatusPage

pytestmark = pytest.mark.browser

ANA_EMAIL = "ana@example.com"
DEMO_PASSWORD = "demo-password"
ANA_ACTIVE_LINE = "+44 7911 123456"
ANA_GRACE_LINE = "+44 7911 123457"
ZH = "zh_Hans"
RECEIPT_NUMBER = re.compile(r"R\d{6}-\d{7}")


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """This module's own server with fresh demo data (overrides the shared one)."""
    with serving_demo_app(tmp_path_factory.mktemp("topup_server")) as server:
        yield server


def log_in_as_ana(page: Page) -> LinesPage:
    LoginPage(page).open().log_in(ANA_EMAIL, DEMO_PASSWORD)
    expect(page).to_have_url(re.compile(r"/lines$"))
    return LinesPage(page)


def screenshot(page: Page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def test_quick_top_up_without_an_account_with_receipt(page: Page, tmp_path: Path) -> None:
    start = TopupNumberPage(page).open()
    expect(start.heading).to_have_text("Top up")
    expect(start.own_lines).to_have_count(0)
    expect(start.continue_button).to_have_text("Continue")

    # Typed the way people in the UK write their own number: no +44, spaces, leading 0.
    options = start.enter_number("07400 123456")

    expect(options.heading).to_have_text("Top up +447••••••456")
    expect(page.get_by_role("link", name="Change")).to_have_attribute("href", "/topup")
    expect(options.promotions.filter(has_text="10% bonus on your first top-up")).to_be_visible()
    expect(options.amounts).to_have_count(4)
    expect(options.custom_amount).to_be_visible()
    sandbox_card = options.option("Test card (sandbox, no real money)")
    expect(sandbox_card).to_be_checked()
    options.option("£10.00").check()
    expect(options.review_button).to_have_text("Review")
    screenshot(page, tmp_path / "topup-options-375px.png")

    review = options.review()

    expect(review.heading).to_have_text("Check and pay")
    expect(review.value("Line")).to_have_text("+447••••••456")
    expect(review.value("You pay")).to_have_text("£10.00")
    expect(review.value("Bonus")).to_contain_text("+£1.00")
    expect(review.value("Bonus")).to_contain_text("10% bonus on your first top-up")
    # Traveller plan: £10 adds 90 days to the 30 left.
    valid_until = (today() + timedelta(days=30 + 90)).isoformat()
    expect(review.value("Valid until")).to_have_text(valid_until)
    expect(review.pay_button).to_have_text("Pay £10.00")

    sandbox = review.pay()

    expect(sandbox.test_mode_banner).to_contain_text("TEST MODE")
    expect(sandbox.test_mode_banner).to_contain_text("No real money moves.")
    expect(sandbox.value("Amount")).to_have_text("£10.00")
    expect(sandbox.value("Status")).to_have_text("Pending")
    expect(sandbox.decision_button("approve")).to_have_text("Approve the payment")
    expect(sandbox.decision_button("decline")).to_have_text("Decline the payment")
    expect(sandbox.decision_button("pending")).to_have_text("Leave it pending")

    status = sandbox.approve()

    expect(status.heading).to_have_text("Top-up of £10.00 for +447••••••456")
    expect(status.stage("credited")).to_contain_text("Credited to the line")
    expect(status.stage("credited")).to_have_class(re.compile(r"\bdone\b"))
    expect(status.stages_to_come).to_have_count(0)
    expect(status.notice).to_contain_text("Done: the credit is on the line.")
    # £5.00 before, £10.00 paid (the £1.00 bonus goes to the bonus balance).
    expect(status.notice).to_contain_text("New balance: £15.00")
    expect(status.notice).to_contain_text(f"Valid until {valid_until}")
    expect(status.receipt_link).to_have_text(re.compile(r"^Receipt R\d{6}-\d{7}$"))
    screenshot(page, tmp_path / "topup-status-375px.png")
    receipt_label = status.receipt_link.inner_text()
    match = RECEIPT_NUMBER.search(receipt_label)
    assert match, receipt_label
    receipt_number = match.group()

    receipt = status.open_receipt()

    expect(receipt.heading).to_have_text(f"Receipt {receipt_number}")
    expect(receipt.value("Line")).to_have_text("+447••••••456")
    expect(receipt.value("Amount")).to_have_text("£10.00")
    expect(receipt.value("Bonus")).to_have_text("£1.00")
    expect(receipt.value("New balance")).to_have_text("£15.00")
    expect(receipt.value("Valid until")).to_have_text(valid_until)
    expect(receipt.download_link).to_have_text("Download the receipt")

    with page.expect_download() as download_info:
        receipt.download_link.click()
    download = download_info.value
    assert download.suggested_filename == f"receipt-{receipt_number}.txt"
    text = Path(download.path()).read_text(encoding="utf-8")
    assert receipt_number in text
    assert "£10.00" in text


def test_logged_in_customer_buys_a_bundle_for_their_line(page: Page) -> None:
    lines = log_in_as_ana(page)
    line = lines.open_line(ANA_ACTIVE_LINE)
    expect(line.allowances).to_have_count(0)
    balance_before = line.value("Balance").inner_text()

    start = line.top_up()

    # Both of Ana's lines are offered; the one she came from has the focus.
    expect(start.own_lines).to_have_count(3)
    expect(start.own_line_button(ANA_ACTIVE_LINE)).to_have_text("Top up this line")
    expect(start.own_line_button(ANA_ACTIVE_LINE)).to_be_focused()

    options = start.top_up_own_line(ANA_ACTIVE_LINE)

    expect(options.heading).to_have_text("Top up +447••••••456")
    options.bundle("5 GB data, 30 days").check()
    review = options.review()

    expect(review.value("Bundle")).to_have_text("5 GB data, 30 days")
    expect(review.value("You pay")).to_have_text("£10.00")
    sandbox = review.pay()
    expect(sandbox.test_mode_banner).to_contain_text("TEST MODE")
    status = sandbox.approve()
    expect(status.stage("credited")).to_contain_text("Credited to the line")

    page.goto("/lines")
    line = LinesPage(page).open_line(ANA_ACTIVE_LINE)

    expect(line.allowances).to_have_count(1)
    expect(line.allowances.first).to_contain_text("5 GB data, 30 days")
    expect(line.allowances.first).to_contain_text("5120 MB data")
    # A bundle bought directly is paid for by the payment, not from the balance.
    expect(line.value("Balance")).to_have_text(balance_before)


def test_a_declined_payment_says_why_and_changes_nothing(page: Page) -> None:
    lines = log_in_as_ana(page)
    line = lines.open_line(ANA_GRACE_LINE)
    balance_before = line.value("Balance").inner_text()
    state_before = line.value("State").inner_text()

    options = line.top_up().top_up_own_line(ANA_GRACE_LINE)
    options.option("£5.00").check()
    status = options.review().pay().decline()

    expect(status.error).to_contain_text("The payment was declined")
    expect(status.error).to_contain_text("No money was taken")
    expect(status.stage("failed")).to_contain_text("Failed")
    expect(status.stage("credited")).to_have_class(re.compile(r"\btodo\b"))
    expect(status.receipt_link).to_have_count(0)
    expect(status.new_topup_link).to_have_text("Start a new top-up")

    page.goto("/lines")
    line = LinesPage(page).open_line(ANA_GRACE_LINE)
    expect(line.value("Balance")).to_have_text(balance_before)
    expect(line.value("State")).to_have_text(state_before)

    newest_topup = line.topups.first
    expect(newest_topup).to_contain_text("£5.00")
    expect(newest_topup).to_contain_text("Failed")

    # The line's top-up list leads back to the status page, and that to a new top-up.
    newest_topup.get_by_role("link", name="£5.00").click()
    status = TopupStatusPage(page)
    expect(status.error).to_contain_text("The payment was declined")
    status.new_topup_link.click()
    expect(page).to_have_url(re.compile(r"/topup$"))


def test_quick_top_up_in_chinese(page: Page) -> None:
    start = TopupNumberPage(page).open()
    start.switch_language("简体中文")

    expect(page).to_have_url(re.compile(r"/topup$"))
    expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
    expect(start.heading).to_have_text(gettext(ZH, "Top up"))

    options = start.enter_number("+86 138 0013 8000", label=gettext(ZH, "Phone number"))

    masked = "+861•••••••000"
    expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
    expect(options.heading).to_have_text(gettext(ZH, "Top up %(number)s") % {"number": masked})
    # Yuan top-ups are fixed amounts, shown with ¥; no amount of one's own, no GBP bundles.
    expect(options.amounts).to_have_count(4)
    for amount in ("¥30.00", "¥50.00", "¥100.00", "¥200.00"):
        expect(options.option(amount)).to_be_visible()
    expect(options.custom_amount).to_have_count(0)
    expect(options.bundle("10GB 流量，30 天")).to_be_visible()
    expect(options.bundle("5 GB data")).to_have_count(0)
    options.option("¥50.00").check()

    review = options.review()

    expect(review.heading).to_have_text(gettext(ZH, "Check and pay"))
    expect(review.value(gettext(ZH, "You pay"))).to_have_text("¥50.00")
    expect(review.pay_button).to_have_text(gettext(ZH, "Pay %(amount)s") % {"amount": "¥50.00"})

    sandbox = review.pay()

    expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
    expect(sandbox.test_mode_banner).to_contain_text(gettext(ZH, "TEST MODE"))
    expect(sandbox.value(gettext(ZH, "Amount"))).to_have_text("¥50.00")

    status = sandbox.approve()

    expect(page.locator("html")).to_have_attribute("lang", "zh-Hans")
    expect(status.heading).to_have_text(
        gettext(ZH, "Top-up of %(amount)s for %(number)s") % {"amount": "¥50.00", "number": masked}
    )
    expect(status.stage("credited")).to_contain_text(gettext(ZH, "Credited to the line"))
    expect(status.stage("credited")).to_have_class(re.compile(r"\bdone\b"))
    new_balance_in_yuan = re.compile(re.escape(gettext(ZH, "New balance")) + r".*¥[\d,]+\.\d\d")
    expect(status.notice).to_contain_text(new_balance_in_yuan)
    expect(status.receipt_link).to_contain_text(gettext(ZH, "Receipt"))


def test_no_sideways_scrolling_through_a_top_up_on_a_phone(page: Page) -> None:
    width_max = PHONE_VIEWPORT["width"]
    too_wide: dict[str, int] = {}

    def measure(label: str) -> None:
        width = TopupNumberPage(page).scroll_width_pixels()
        if width > width_max:
            too_wide[label] = width

    start = TopupNumberPage(page).open()
    measure("/topup")
    options = start.enter_number("+33 6 12 34 56 78")
    expect(options.heading).to_have_text("Top up +336•••••678")
    measure("options")
    options.option("£5.00").check()
    review = options.review()
    measure("review")
    sandbox = review.pay()
    measure("sandbox")
    status = sandbox.approve()
    expect(status.stage("credited")).to_have_class(re.compile(r"\bdone\b"))
    measure("status")
    receipt = status.open_receipt()
    expect(receipt.download_link).to_be_visible()
    measure("receipt")

    assert not too_wide, f"wider than the {width_max} px screen: {too_wide}"
