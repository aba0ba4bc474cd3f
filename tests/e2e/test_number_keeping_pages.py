"""Number keeping on the pages: the low-balance alert setting, and the top-up link reminders carry."""

from __future__ import annotations

from airtime.accounts.models import Line
from airtime.db.session import unit_of_work
from tests import factories
from tests.e2e.test_web import csrf, login
from tests.snapshot import fingerprint


def owned_line(session_factory, settings):
    with unit_of_work(session_factory) as session:
        customer = factories.customer(session, settings, email="owner@example.com")
        line = factories.line(session, settings, customer_id=customer.id, balance_minor=800)
        return line.id


def threshold_of(session_factory, line_id):
    with unit_of_work(session_factory) as session:
        line = session.get(Line, line_id)
        return line.low_balance_threshold_minor, line.low_balance_alerted_at


def test_a_customer_sets_and_clears_the_low_balance_alert(client, session_factory, settings):
    line_id = owned_line(session_factory, settings)
    login(client, "owner@example.com")
    page = f"/lines/{line_id}"
    saved = client.post(f"{page}/alert", data={"threshold": "£5", "csrf_token": csrf(client, page)})
    assert saved.status_code == 200 and "Saved." in saved.text and "under £5.00" in saved.text
    assert threshold_of(session_factory, line_id) == (500, None)
    cleared = client.post(f"{page}/alert", data={"threshold": "", "csrf_token": csrf(client, page)})
    assert cleared.status_code == 200
    assert threshold_of(session_factory, line_id) == (None, None)


def test_a_bad_alert_amount_is_refused_and_changes_nothing(client, session_factory, settings):
    line_id = owned_line(session_factory, settings)
    login(client, "owner@example.com")
    page = f"/lines/{line_id}"
    token = csrf(client, page)
    before = fingerprint(session_factory)
    for typed, message in (("five", "Not an amount"), ("0", "above zero"), ("1.005", "")):
        refused = client.post(f"{page}/alert", data={"threshold": typed, "csrf_token": token})
        assert refused.status_code == 422, typed
        assert message in refused.text and f'value="{typed}"' in refused.text
    assert fingerprint(session_factory) == before
    assert threshold_of(session_factory, line_id) == (None, None)


def test_another_customers_line_is_not_found(client, session_factory, settings):
    line_id = owned_line(session_factory, settings)
    with unit_of_work(session_factory) as session:
        factories.customer(session, settings, email="other@example.com")
    login(client, "other@example.com")
    refused = client.post(
        f"/lines/{line_id}/alert", data={"threshold": "5", "csrf_token": csrf(client, "/lines")}
    )
    assert refused.status_code == 404
    assert threshold_of(session_factory, line_id) == (None, None)


def test_a_reminders_top_up_link_opens_the_form_with_the_number_filled_in(client):
    from airtime.config import Settings
    from airtime.lifecycle.reminders import topup_link

    link = topup_link(Settings(base_url="http://testserver"), "+447911123456")
    page = client.get(link.removeprefix("http://testserver"))
    assert page.status_code == 200 and 'value="+447911123456"' in page.text
    assert client.get("/topup", params={"msisdn": "9" * 41}).status_code == 422  # bounded
