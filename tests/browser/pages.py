"""Page objects for the subscriber portal: tests say what a person does, these say how.

Locators prefer what a person sees (roles, labels, button names) over CSS classes, so a
test breaks when the page stops working for people, not when markup is tidied.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from playwright.sync_api import Locator, Page


@dataclass
class PortalPage:
    """What every page has: a heading, the header navigation and the language switch."""

    page: Page
    path = "/"

    def open(self) -> PortalPage:
        self.page.goto(self.path)
        return self

    @property
    def heading(self) -> Locator:
        return self.page.get_by_role("heading", level=1)

    @property
    def html_lang(self) -> str | None:
        return self.page.locator("html").get_attribute("lang")

    @property
    def error(self) -> Locator:
        return self.page.get_by_role("alert")

    @property
    def notice(self) -> Locator:
        return self.page.get_by_role("status")

    def navigation_link(self, name: str) -> Locator:
        return self.page.locator("header.top nav").get_by_role("link", name=name, exact=True)

    def log_out(self) -> None:
        """Press the header's log-out button, found by its form so it works in every language."""
        self.page.locator('header.top nav form[action="/logout"]').get_by_role("button").click()
        self.page.wait_for_url("**/")

    def switch_language(self, button_name: str) -> None:
        """Press a footer language button (``English`` or ``简体中文``); the same page reloads."""
        language_form = self.page.locator("footer form.languages")
        with self.page.expect_navigation():
            language_form.get_by_role("button", name=button_name, exact=True).click()

    def current_language_button(self) -> Locator:
        return self.page.locator('footer form.languages button[aria-current="true"]')

    def scroll_width_pixels(self) -> int:
        """How wide the document is; wider than the viewport means sideways scrolling."""
        width: int = self.page.evaluate("document.documentElement.scrollWidth")
        return width


class HomePage(PortalPage):
    path = "/"


class LoginPage(PortalPage):
    path = "/login"

    def log_in(self, email: str, password: str) -> None:
        form = self.page.locator("main form")
        form.get_by_label("Email").fill(email)
        form.get_by_label("Password").fill(password)
        with self.page.expect_navigation():
            form.get_by_role("button", name="Log in").click()

    def forgot_password(self) -> ForgotPasswordPage:
        self.page.get_by_role("link", name="Forgot your password?").click()
        self.page.wait_for_url("**/forgot-password")
        return ForgotPasswordPage(self.page)


class RegisterPage(PortalPage):
    path = "/register"

    def register(self, email: str, password: str) -> None:
        form = self.page.locator("main form")
        form.get_by_label("Email").fill(email)
        form.get_by_label("Password").fill(password)
        with self.page.expect_navigation():
            form.get_by_role("button", name="Create account").click()


class ForgotPasswordPage(PortalPage):
    path = "/forgot-password"

    def request_link(self, email: str) -> None:
        form = self.page.locator("main form")
        form.get_by_label("Email").fill(email)
        with self.page.expect_navigation():
            form.get_by_role("button", name="Send the link").click()


@dataclass
class LineCard:
    """One line as the "my lines" list shows it."""

    root: Locator

    @property
    def number(self) -> Locator:
        return self.root.locator(".card-link .msisdn")

    def value(self, term: str) -> Locator:
        """The ``<dd>`` that follows the ``<dt>`` named ``term`` (Balance, Valid until, State, Plan)."""
        return self.root.locator(f'dl > dt:text-is("{term}") + dd')

    @property
    def balance(self) -> Locator:
        return self.root.locator("dd.balance")

    @property
    def validity_date(self) -> Locator:
        return self.root.locator("time")

    @property
    def state(self) -> Locator:
        return self.root.locator(".state")

    @property
    def risk(self) -> Locator:
        """The risk badge: its text names the risk, its class gives the colour."""
        return self.root.locator(".number-head .risk")

    @property
    def deadline(self) -> Locator:
        """The next deadline in words, then the days left."""
        return self.root.locator("p.deadline")

    @property
    def keep_alive(self) -> Locator:
        return self.root.locator("p.keep-alive")

    @property
    def top_up_button(self) -> Locator:
        return self.root.locator('a.button[href^="/topup?line="]')

    def top_up(self) -> TopupNumberPage:
        """The card's one-tap "Top up": the first top-up step, with this line preselected."""
        self.top_up_button.click()
        self.root.page.wait_for_url("**/topup?line=*")
        return TopupNumberPage(self.root.page)


class LinesPage(PortalPage):
    """ "My numbers": a card per line, most urgent first, and the calendar feed link."""

    path = "/lines"

    @property
    def cards(self) -> Locator:
        return self.page.locator("main ul.cards > li.card")

    @property
    def numbers_in_order(self) -> list[str]:
        return self.cards.locator(".card-link .msisdn").all_inner_texts()

    @property
    def calendar_link(self) -> Locator:
        """The feed's https address, in the field to copy it from."""
        return self.page.locator("main section.calendar-feed input[readonly]")

    def card(self, number_as_shown: str) -> LineCard:
        return LineCard(self.cards.filter(has=self.page.locator(".msisdn", has_text=number_as_shown)))

    def open_line(self, number_as_shown: str) -> LinePage:
        self.card(number_as_shown).number.click()
        self.page.wait_for_url("**/lines/*")
        return LinePage(self.page)


class LinePage(PortalPage):
    """One line: balance, validity, state, plan and the money history."""

    def value(self, term: str) -> Locator:
        return self.page.locator(f'main dl.card > dt:text-is("{term}") + dd')

    @property
    def history_rows(self) -> Locator:
        return self.page.locator("main table.history tbody tr")

    @property
    def allowances(self) -> Locator:
        """The live bundle allowances (each card names its bundle, then what is left)."""
        return self.page.locator("main ul.allowances > li.card:has(> strong)")

    @property
    def topups(self) -> Locator:
        """The line's top-ups, newest first, each linking to its status page."""
        return self.page.locator('main ul.allowances > li.card:has(> a[href^="/topup/orders/"])')

    def top_up(self) -> TopupNumberPage:
        """Follow "Top up this line" to the first top-up step, where this line is preselected."""
        self.page.locator('main a.button[href^="/topup?line="]').click()
        self.page.wait_for_url("**/topup?line=*")
        return TopupNumberPage(self.page)


class OutboxPage(PortalPage):
    """The demo outbox: every email and SMS the system wrote, newest first."""

    path = "/outbox"

    def messages_to(self, recipient: str, subject_contains: str = "") -> Locator:
        messages = self.page.locator("main article.message").filter(has_text=recipient)
        if subject_contains:
            messages = messages.filter(has=self.page.locator("header strong", has_text=subject_contains))
        return messages

    def newest_link_to(self, recipient: str, subject_contains: str, url_contains: str) -> str:
        """The first matching link in the newest matching message's body."""
        newest = self.messages_to(recipient, subject_contains).first
        link = newest.locator(f'pre a[href*="{url_contains}"]').first
        href = link.get_attribute("href")
        assert href, f"no link containing {url_contains!r} in the newest {subject_contains!r} email"
        return href


class ResetPasswordPage(PortalPage):
    """Where an emailed reset link leads."""

    def __init__(self, page: Page, link: str) -> None:
        super().__init__(page)
        self.link = link

    def open(self) -> ResetPasswordPage:
        self.page.goto(self.link)
        return self

    @property
    def form(self) -> Locator:
        return self.page.locator("main form")

    def set_password(self, new_password: str) -> None:
        self.form.get_by_label("New password").fill(new_password)
        with self.page.expect_navigation():
            self.form.get_by_role("button", name="Save the new password").click()


# --- online top-ups ---------------------------------------------------------------------
#
# Buttons that move from one step to the next are found by the form they submit, so the
# same page objects drive the flow in English and in Chinese; tests check the wording.


class TopupNumberPage(PortalPage):
    """Step 1: the number to top up (a logged-in customer also sees their own lines)."""

    path = "/topup"

    @property
    def number_form(self) -> Locator:
        return self.page.locator('main form[action="/topup/options"]:has(input[name="msisdn"][type="tel"])')

    @property
    def continue_button(self) -> Locator:
        return self.number_form.get_by_role("button")

    def enter_number(self, number: str, *, label: str = "Phone number") -> TopupOptionsPage:
        self.number_form.get_by_label(label).fill(number)
        with self.page.expect_navigation():
            self.continue_button.click()
        return TopupOptionsPage(self.page)

    @property
    def own_lines(self) -> Locator:
        return self.page.locator("main ul.cards > li.card")

    def own_line_button(self, number_as_shown: str) -> Locator:
        """The "Top up this line" button on the card of one of the customer's own lines."""
        card = self.own_lines.filter(has=self.page.locator(".msisdn", has_text=number_as_shown))
        return card.get_by_role("button")

    def top_up_own_line(self, number_as_shown: str) -> TopupOptionsPage:
        with self.page.expect_navigation():
            self.own_line_button(number_as_shown).click()
        return TopupOptionsPage(self.page)


class TopupOptionsPage(PortalPage):
    """Step 2: the masked number to confirm, an amount or a bundle, how to pay."""

    @property
    def form(self) -> Locator:
        return self.page.locator('main form[action="/topup/review"]')

    def option(self, name: str) -> Locator:
        """A radio button (amount, bundle or payment method) by the text beside it."""
        return self.form.get_by_role("radio", name=name, exact=True)

    def bundle(self, name: str) -> Locator:
        """A bundle's radio button by its name (the price follows the name on the label)."""
        return self.form.locator('label.choice:has(input[name="bundle"])', has_text=name).get_by_role("radio")

    @property
    def amounts(self) -> Locator:
        return self.form.locator('input[name="amount_minor"]')

    @property
    def custom_amount(self) -> Locator:
        return self.form.locator('input[name="custom_amount"]')

    @property
    def promotions(self) -> Locator:
        return self.page.locator("main > p.notice")

    @property
    def review_button(self) -> Locator:
        return self.form.get_by_role("button")

    def review(self) -> TopupReviewPage:
        with self.page.expect_navigation():
            self.review_button.click()
        return TopupReviewPage(self.page)


class TopupReviewPage(PortalPage):
    """Step 3: what will be paid and credited, then pay."""

    def value(self, term: str) -> Locator:
        return self.page.locator(f'main dl.card > dt:text-is("{term}") + dd')

    @property
    def pay_button(self) -> Locator:
        return self.page.locator('main form[action="/topup/pay"]').get_by_role("button")

    def pay(self) -> SandboxPaymentPage:
        self.pay_button.click()
        self.page.wait_for_url("**/sandbox/pay/*")
        return SandboxPaymentPage(self.page)


class SandboxPaymentPage(PortalPage):
    """The sandbox provider's hosted payment page, in test mode."""

    @property
    def test_mode_banner(self) -> Locator:
        return self.page.get_by_role("note")

    def value(self, term: str) -> Locator:
        return self.page.locator(f'main dl.card > dt:text-is("{term}") + dd')

    def decision_button(self, decision: str) -> Locator:
        """``approve``, ``decline`` or ``pending``."""
        return self.page.locator(f'main form button[name="decision"][value="{decision}"]')

    def decide(self, decision: str) -> TopupStatusPage:
        self.decision_button(decision).click()
        self.page.wait_for_url("**/topup/orders/*")
        return TopupStatusPage(self.page)

    def approve(self) -> TopupStatusPage:
        return self.decide("approve")

    def decline(self) -> TopupStatusPage:
        return self.decide("decline")


class TopupStatusPage(PortalPage):
    """The public status page of one top-up: its stages, then the receipt or what went wrong."""

    @property
    def stages(self) -> Locator:
        return self.page.locator("main ol.stages > li")

    @property
    def stages_to_come(self) -> Locator:
        return self.page.locator("main ol.stages > li.todo")

    def stage(self, name: str) -> Locator:
        """A stage by its code: created, awaiting_payment, paid, credited, failed, cancelled, refunded."""
        return self.page.locator(f"main ol.stages > li.stage-{name}")

    @property
    def receipt_link(self) -> Locator:
        return self.page.locator('main a.button[href$="/receipt"]')

    @property
    def new_topup_link(self) -> Locator:
        return self.page.locator('main a.button[href="/topup"]')

    def open_receipt(self) -> ReceiptPage:
        self.receipt_link.click()
        self.page.wait_for_url("**/receipt")
        return ReceiptPage(self.page)


class ReceiptPage(PortalPage):
    """A credited top-up's receipt, with a text file to download."""

    def value(self, term: str) -> Locator:
        return self.page.locator(f'main dl.receipt > dt:text-is("{term}") + dd')

    @property
    def download_link(self) -> Locator:
        return self.page.locator('main a[href$="/receipt.txt"]')


# --- vouchers: redeeming a PIN, and the outlet till ---------------------------------------
#
# Forms are found by where they post and fields by their names, so the same page objects
# work in English and in Chinese; tests check the wording.


class RedeemPage(PortalPage):
    """Redeem a voucher or e-PIN onto a line: a logged-in customer picks one of their lines
    (or types another number), a visitor types the number."""

    path = "/redeem"

    @property
    def form(self) -> Locator:
        return self.page.locator('main form[action="/redeem"]')

    @property
    def pin_field(self) -> Locator:
        return self.form.locator('input[name="pin"]')

    @property
    def number_field(self) -> Locator:
        """The typed number ("Number to credit", or "Or another number" beside one's own lines)."""
        return self.form.locator('input[name="msisdn"][type="tel"]')

    @property
    def own_lines(self) -> Locator:
        return self.form.get_by_role("radio")

    def own_line(self, number_as_shown: str) -> Locator:
        return self.form.get_by_role("radio", name=number_as_shown, exact=True)

    @property
    def redeem_button(self) -> Locator:
        return self.form.get_by_role("button")

    def redeem(self, pin: str, *, number: str | None = None, own_line: str | None = None) -> int:
        """Fill in the PIN and the number (typed, or one's own line picked), press Redeem;
        returns the HTTP status of the page that answers (after any redirect)."""
        self.pin_field.fill(pin)
        if own_line is not None:
            self.own_line(own_line).check()
        if number is not None:
            self.number_field.fill(number)
        with self.page.expect_navigation() as navigation:
            self.redeem_button.click()
        response = navigation.value
        assert response is not None
        return response.status


class OutletPage(PortalPage):
    """What the outlet's pages share: the outlet navigation (Sell, Statement, Log out)."""

    @property
    def outlet_navigation(self) -> Locator:
        return self.page.locator("main nav.subnav")

    def outlet_link(self, path: str) -> Locator:
        return self.outlet_navigation.locator(f'a[href="{path}"]')


class OutletLoginPage(PortalPage):
    path = "/outlet/login"

    @property
    def form(self) -> Locator:
        return self.page.locator('main form[action="/outlet/login"]')

    def log_in(self, email: str, password: str) -> None:
        self.form.locator('input[name="email"]').fill(email)
        self.form.locator('input[name="password"]').fill(password)
        with self.page.expect_navigation():
            self.form.get_by_role("button").click()


class OutletTillPage(OutletPage):
    """The till: the float, the e-PIN values, and the button that sells one."""

    path = "/outlet"

    @property
    def float_balance(self) -> Locator:
        return self.page.locator("main strong.balance")

    @property
    def form(self) -> Locator:
        return self.page.locator('main form[action="/outlet/sell"]')

    @property
    def values(self) -> Locator:
        return self.form.locator('input[name="face_value_minor"]')

    def value(self, amount_as_shown: str) -> Locator:
        return self.form.get_by_role("radio", name=amount_as_shown, exact=True)

    @property
    def sell_button(self) -> Locator:
        return self.form.get_by_role("button")

    def sell(self, amount_as_shown: str) -> OutletReceiptPage:
        self.value(amount_as_shown).check()
        with self.page.expect_navigation():
            self.sell_button.click()
        return OutletReceiptPage(self.page)


class OutletReceiptPage(PortalPage):
    """The till receipt of one e-PIN sale: the PIN is shown this once."""

    @property
    def receipt(self) -> Locator:
        return self.page.locator("main article.till-receipt")

    @property
    def outlet_name(self) -> Locator:
        return self.receipt.get_by_role("heading", level=1)

    @property
    def face_value(self) -> Locator:
        return self.receipt.locator("p.balance")

    @property
    def pin(self) -> Locator:
        return self.page.get_by_test_id("epin")

    def value(self, term: str) -> Locator:
        return self.receipt.locator(f'dl > dt:text-is("{term}") + dd')

    @property
    def next_sale_link(self) -> Locator:
        return self.page.locator('main a.button[href="/outlet"]')

    def next_sale(self) -> OutletTillPage:
        self.next_sale_link.click()
        self.page.wait_for_url("**/outlet")
        return OutletTillPage(self.page)


class OutletStatementPage(OutletPage):
    """The outlet's float for one day: opening, sold, closing, and every movement."""

    path = "/outlet/statement"

    def value(self, term: str) -> Locator:
        return self.page.locator(f'main dl.card > dt:text-is("{term}") + dd')

    @property
    def rows(self) -> Locator:
        return self.page.locator("main table.history tbody tr")

    def row(self, description_contains: str) -> Locator:
        return self.rows.filter(has_text=description_contains)


# --- the agent portal: agent staff sell top-ups from the agent's float --------------------
#
# As for the till, forms are found by where they post and fields by their names, so the
# same page objects work in English and in Chinese; tests check the wording.


class AgentPage(PortalPage):
    """What the agent's pages share: the agent navigation (Sell, History, Statement, Log out)
    and, on the sell and history pages, the float card."""

    @property
    def agent_navigation(self) -> Locator:
        return self.page.locator("main nav.subnav")

    def agent_link(self, path: str) -> Locator:
        return self.agent_navigation.locator(f'a[href="{path}"]')

    def go_to(self, path: str) -> None:
        """Follow an agent navigation link, as a person taps it."""
        self.agent_link(path).click()
        self.page.wait_for_url(f"**{path}")

    @property
    def float_balance(self) -> Locator:
        return self.page.locator('main [data-testid="float"] dd.balance')

    def log_out(self) -> None:
        self.agent_navigation.locator('form[action="/agent/logout"]').get_by_role("button").click()
        self.page.wait_for_url("**/agent/login")


class AgentLoginPage(PortalPage):
    path = "/agent/login"

    @property
    def form(self) -> Locator:
        return self.page.locator('main form[action="/agent/login"]')

    def log_in(self, email: str, password: str) -> None:
        self.form.locator('input[name="email"]').fill(email)
        self.form.locator('input[name="password"]').fill(password)
        with self.page.expect_navigation():
            self.form.get_by_role("button").click()


class AgentSellPage(AgentPage):
    """Sell a top-up: the customer's number, an amount (or another amount), one button."""

    path = "/agent"

    @property
    def form(self) -> Locator:
        return self.page.locator('main form[action="/agent/sell"]')

    @property
    def number_field(self) -> Locator:
        return self.form.locator('input[name="msisdn"]')

    @property
    def amounts(self) -> Locator:
        return self.form.locator('input[name="amount_minor"]')

    def amount(self, amount_as_shown: str) -> Locator:
        return self.form.get_by_role("radio", name=amount_as_shown, exact=True)

    @property
    def sell_button(self) -> Locator:
        return self.form.get_by_role("button")

    def sell(self, number: str, amount_as_shown: str) -> AgentReceiptPage:
        self.number_field.fill(number)
        self.amount(amount_as_shown).check()
        with self.page.expect_navigation():
            self.sell_button.click()
        return AgentReceiptPage(self.page)


class AgentReceiptPage(AgentPage):
    """The receipt of one sale: the amount, the number, the commission and the float debit."""

    @property
    def sold_amount(self) -> Locator:
        return self.page.get_by_test_id("sold-amount")

    @property
    def receipt_number(self) -> Locator:
        return self.page.get_by_test_id("receipt-number")

    def value(self, term: str) -> Locator:
        return self.page.locator(f'main article.card dl > dt:text-is("{term}") + dd')

    @property
    def next_sale_link(self) -> Locator:
        return self.page.locator('main a.button[href="/agent"]')


class AgentHistoryPage(AgentPage):
    """The agent's sales, newest first: time and receipt, number, amount, commission."""

    path = "/agent/history"

    @property
    def rows(self) -> Locator:
        return self.page.locator('main [data-testid="sales"] tbody tr')

    def row(self, contains: str) -> Locator:
        return self.rows.filter(has_text=contains)


class AgentStatementPage(AgentPage):
    """The float for a day (or month): opening, sold, commission, funding, closing, and
    every movement."""

    path = "/agent/statement"

    def value(self, term: str) -> Locator:
        return self.page.locator(f'main [data-testid="statement-summary"] > dt:text-is("{term}") + dd')

    @property
    def rows(self) -> Locator:
        return self.page.locator('main [data-testid="statement-rows"] tbody tr')

    def row(self, contains: str) -> Locator:
        return self.rows.filter(has_text=contains)

    @property
    def csv_link(self) -> Locator:
        return self.page.locator('main a[href^="/agent/statement.csv"]')


# --- customer care -------------------------------------------------------------------------


class CareLoginPage(PortalPage):
    """The care console's door: password, then the TOTP step (enrolment the first time)."""

    path = "/care/login"

    def log_in(self, email: str, password: str) -> None:
        form = self.page.locator('main form[action="/care/login"]')
        form.get_by_label("Email").fill(email)
        form.get_by_label("Password").fill(password)
        form.get_by_role("button").click()


class TwoFactorEnrolPage(PortalPage):
    """The one-time enrolment page: a QR code, the key as text, and a code to confirm."""

    @property
    def secret(self) -> str:
        return self.page.locator("[data-totp-secret]").inner_text().replace(" ", "")

    def confirm(self, code: str) -> None:
        form = self.page.locator('main form[action="/staff/two-factor/enrol"]')
        form.get_by_label("Code").fill(code)
        form.get_by_role("button").click()


class CarePage(PortalPage):
    """The console: search, queues; and the order page reached from a result."""

    path = "/care"

    def search(self, text: str) -> None:
        form = self.page.get_by_role("search")
        form.get_by_role("searchbox").fill(text)
        form.get_by_role("button").click()

    def open_first_result(self) -> None:
        self.page.locator("main ul.care-results").get_by_role("link").first.click()

    def credit_order(self) -> None:
        self.page.locator('main form[action$="/credit"]').get_by_role("button").click()


class ReportPage(PortalPage):
    """A staff report: headline figures, then a chart (inline SVG), CSV link and table per section."""

    def __init__(self, page: Page, slug: str) -> None:
        super().__init__(page)
        self.path = f"/admin/reports/{slug}"

    def chart(self, section: str) -> Locator:
        return self.page.locator(f"section#{section} figure svg")

    def bars(self, section: str) -> Locator:
        return self.chart(section).locator("rect.bar")

    def points(self, section: str) -> Locator:
        return self.chart(section).locator(".point")

    def csv_link(self, section: str) -> Locator:
        return self.page.locator(f"section#{section}").get_by_role("link", name=re.compile("CSV"))


class AnnouncementBanner:
    """The announcements on a portal page (home, my numbers, a line)."""

    def __init__(self, page: Page) -> None:
        self.items = page.locator("section.announcements article.announcement")

    def titles(self) -> list[str]:
        return [title.strip() for title in self.items.locator("h2").all_inner_texts()]
