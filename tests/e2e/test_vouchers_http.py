"""Vouchers over HTTP on both databases: redeem page, API, outlet till and statement."""

from __future__ import annotations

import re

from airtime.accounts import service as accounts
from airtime.db.session import unit_of_work
from airtime.ledger.service import balance_of
from tests import topup_helpers, voucher_helpers
from tests.e2e.test_web import CSRF, csrf
from tests.snapshot import fingerprint

ATTEMPT_TABLES = {"voucher_attempts", "voucher_locks", "rate_limit_counters"}


def _line(session_factory, settings):
    with unit_of_work(session_factory) as session:
        return topup_helpers.line_with_catalogue(session, settings)


def _redeem(client, pin, msisdn="+447911123456"):
    page = client.get("/redeem")
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
    return client.post("/redeem", data={**form, "pin": pin, "msisdn": msisdn})


def test_redeem_page_credits_and_refuses_with_clear_messages(client, session_factory, settings, tmp_path):
    line = _line(session_factory, settings)
    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path)
    done = _redeem(client, rows[0]["pin"])
    assert done.status_code == 200 and "Credited to the line" in done.text
    with unit_of_work(session_factory) as session:
        assert balance_of(session, line.main_account_id) == 1000
    before = fingerprint(session_factory, ignore=ATTEMPT_TABLES)
    used = _redeem(client, rows[0]["pin"])
    assert used.status_code == 422 and "already used on" in used.text
    wrong = _redeem(client, "0000 0000 0000 0000")
    assert wrong.status_code == 422 and "This PIN is not valid" in wrong.text
    assert fingerprint(session_factory, ignore=ATTEMPT_TABLES) == before


def test_five_wrong_pins_show_until_when_the_lock_lasts(client, session_factory, settings, tmp_path):
    _line(session_factory, settings)
    for attempt in range(settings.voucher_failures_max):
        page = _redeem(client, f"1111 2222 3333 {attempt:04d}")
    assert page.status_code == 429 and "locked until" in page.text


def test_api_redeem_with_idempotency_key(client, session_factory, settings, tmp_path):
    line = _line(session_factory, settings)
    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path)
    body = {"pin": rows[1]["pin"], "msisdn": "+447911123456"}
    first = client.post("/api/v1/vouchers/redeem", json=body, headers={"Idempotency-Key": "r-1"})
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "credited" and first.json()["channel"] == "voucher"
    again = client.post("/api/v1/vouchers/redeem", json=body, headers={"Idempotency-Key": "r-1"})
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    used = client.post("/api/v1/vouchers/redeem", json=body, headers={"Idempotency-Key": "r-2"})
    assert used.status_code == 422 and used.headers["content-type"].startswith("application/problem+json")
    assert used.json()["reason"] == "used"
    with unit_of_work(session_factory) as session:
        assert balance_of(session, line.main_account_id) == 1000


def test_outlet_staff_sell_an_epin_and_see_the_statement(client, session_factory, settings):
    _line(session_factory, settings)
    with unit_of_work(session_factory) as session:
        shop = voucher_helpers.outlet(session, float_minor=3000)
        accounts.create_staff(
            session, email="till@example.com", password="till password", role="outlet", outlet_id=shop.id
        )
    assert client.get("/outlet", follow_redirects=False).headers["location"] == "/outlet/login"
    login = client.post(
        "/outlet/login",
        data={
            "email": "till@example.com",
            "password": "till password",
            "csrf_token": csrf(client, "/outlet/login"),
        },
        follow_redirects=False,
    )
    assert login.status_code == 303
    till = client.get("/outlet")
    assert "£30.00" in till.text
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', till.text))
    receipt = client.post("/outlet/sell", data={**form, "face_value_minor": "1000"})
    pin = re.search(r'data-testid="epin">([\d ]+)<', receipt.text).group(1)
    # Printing the same sale again shows no PIN and sells nothing more.
    reprint = client.post("/outlet/sell", data={**form, "face_value_minor": "1000"})
    assert "cannot be shown again" in reprint.text
    statement = client.get("/outlet/statement")
    assert "£20.00" in statement.text and "e-PIN" in statement.text
    assert _redeem(client, pin).status_code == 200


def test_customer_login_is_not_an_outlet_login(client, session_factory, settings):
    from tests import factories

    with unit_of_work(session_factory) as session:
        factories.customer(session, settings, email="ana@example.com")
    refused = client.post(
        "/outlet/login",
        data={
            "email": "ana@example.com",
            "password": factories.PASSWORD,
            "csrf_token": csrf(client, "/outlet/login"),
        },
    )
    assert refused.status_code == 401 and CSRF.search(refused.text)


def test_logged_in_customer_redeems_onto_a_chosen_own_line_with_a_receipt(
    client, session_factory, settings, tmp_path
):
    from sqlalchemy import select

    from airtime.notifications.models import Notification
    from tests import factories
    from tests.e2e.test_web import login

    with unit_of_work(session_factory) as session:
        customer = factories.customer(session, settings, email="ana@example.com")
        line = topup_helpers.line_with_catalogue(session, settings, customer_id=customer.id)
    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path)
    login(client, "ana@example.com")
    page = client.get("/redeem")
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
    done = client.post(
        "/redeem", data={**form, "pin": rows[0]["pin"], "line_msisdn": line.msisdn, "msisdn": ""}
    )
    assert done.status_code == 200 and "Credited to the line" in done.text
    assert "Waiting for payment" not in done.text  # a voucher pays at once
    with unit_of_work(session_factory) as session:
        assert balance_of(session, line.main_account_id) == 1000
        receipt = session.scalars(select(Notification).where(Notification.template == "receipt")).one()
        assert receipt.recipient == "ana@example.com" and "£10.00" in receipt.body_text


def test_api_redemption_answers_with_the_receipt(client, session_factory, settings, tmp_path):
    from tests import factories
    from tests.e2e.test_api import token_for

    with unit_of_work(session_factory) as session:
        customer = factories.customer(session, settings, email="ana@example.com")
        topup_helpers.line_with_catalogue(session, settings, customer_id=customer.id)
    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path)
    response = client.post(
        "/api/v1/vouchers/redeem",
        json={"pin": rows[0]["pin"], "msisdn": "+447911123456"},
        headers={**token_for(client, "ana@example.com"), "Idempotency-Key": "r-9"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["receipt_number"] and body["credited_at"] and body["balance_after"]["amount_minor"] == 1000
