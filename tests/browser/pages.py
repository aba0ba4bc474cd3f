"""Page objects for the subscriber portal: tests say what a person does, these say how.

Locators prefer what a person sees (roles, labels, button names) over CSS classes, so a
test breaks when the page stops working for people, not when markup is tidied.
"""

from __future__ import annotations

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


class LinesPage(PortalPage):
    path = "/lines"

    @property
    def cards(self) -> Locator:
        return self.page.locator("main ul.cards > li.card")

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
