"""Customer care in a real browser: a care agent logs in with TOTP (enrolling on the way),
finds a paid-but-not-credited top-up by its payment reference, credits it, and the
subscriber's line page shows the new balance."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pyotp
import pytest
from playwright.sync_api import Browser, Page, expect
from sqlalchemy import select

from airtime.accounts import service as accounts
from airtime.accounts.models import Line
from airtime.db.session import make_engine, make_session_factory, unit_of_work
from airtime.ledger.service import balance_of
from airtime.money import format_money
from airtime.payments.sandbox import SandboxProvider
from airtime.topups import service as topups
from tests import topup_helpers
from tests.browser.conftest import PHONE_VIEWPORT, LiveServer, serving_demo_app
from tests.browser.pages import CareLoginPage, CarePage, LinePage, LoginPage, TwoFactorEnrolPage

pytestmark = pytest.mark.browser

CARE_EMAIL = "care@example.com"
CARE_PASSWORD = "care agent password"
ANA_EMAIL = "ana@example.com"
DEMO_PASSWORD = "demo-password"
ANA_LINE = "+447911123456"


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """This module's own server with fresh demo data (it changes a balance)."""
    with serving_demo_app(tmp_path_factory.mktemp("care_server")) as server:
        yield server


@pytest.fixture
def paid_not_credited(live_server: LiveServer) -> Iterator[tuple[str, int, int]]:
    """A care agent, and a top-up of Ana's line paid at the sandbox but never credited:
    its payment reference, the line's id and the balance the credit should leave."""
    settings = live_server.settings
    engine = make_engine(settings.database_url)
    factory = make_session_factory(engine)
    provider = SandboxProvider(base_url=settings.base_url)
    with unit_of_work(factory) as session:
        accounts.create_staff(session, email=CARE_EMAIL, password=CARE_PASSWORD, role="care")
        line = session.scalars(select(Line).where(Line.msisdn == ANA_LINE)).one()
        order = topup_helpers.order(session, settings, line_id=line.id, amount_minor=1000)
        provider.decide(session, order.payment_reference, "approve")
        topups.apply_payment_state(session, order, provider.fetch_payment(session, order.payment_reference))
        expected = balance_of(session, line.main_account_id) + order.amount_minor
        reference, line_id = order.payment_reference, line.id
    yield reference, line_id, expected
    engine.dispose()


def test_care_agent_credits_a_paid_order_found_by_payment_reference(
    page: Page, browser: Browser, live_server: LiveServer, paid_not_credited: tuple[str, int, int]
) -> None:
    reference, line_id, expected_balance_minor = paid_not_credited
    CareLoginPage(page).open().log_in(CARE_EMAIL, CARE_PASSWORD)
    expect(page).to_have_url(re.compile(r"/staff/two-factor/enrol$"))
    enrol = TwoFactorEnrolPage(page)
    expect(page.locator("main .qr svg")).to_be_visible()
    enrol.confirm(pyotp.TOTP(enrol.secret).now())
    expect(page).to_have_url(re.compile(r"/care$"))

    console = CarePage(page)
    console.search(reference)
    console.open_first_result()
    expect(page.locator("[data-order-status]")).to_have_text(re.compile("^paid"))
    console.credit_order()
    expect(console.notice).to_contain_text("Credited")
    expect(page.locator("[data-order-status]")).to_have_text(re.compile("^credited"))

    # The subscriber, in a browser of their own, sees the new balance on the line's page.
    context = browser.new_context(viewport=PHONE_VIEWPORT, locale="en-US", base_url=live_server.base_url)
    subscriber = context.new_page()
    LoginPage(subscriber).open().log_in(ANA_EMAIL, DEMO_PASSWORD)
    expect(subscriber).to_have_url(re.compile(r"/lines$"))
    subscriber.goto(f"/lines/{line_id}")
    expect(LinePage(subscriber).value("Balance")).to_contain_text(format_money(expected_balance_minor, "GBP"))
    context.close()
