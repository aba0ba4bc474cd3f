"""Top-ups over HTTP on both databases: the quick top-up pages, the sandbox page, the API."""

from __future__ import annotations

import re

from sqlalchemy import select

from airtime.accounts.phone import mask_msisdn
from airtime.db.session import unit_of_work
from airtime.ledger.service import balance_of, check_invariants
from airtime.topups.models import OrderStatus, TopupOrder
from tests import factories, topup_helpers
from tests.e2e.test_web import CSRF, csrf, login
from tests.snapshot import fingerprint

IDEMPOTENCY = {"Idempotency-Key": "key-1"}


def _setup(session_factory, settings, **line_args):
    with unit_of_work(session_factory) as session:
        return topup_helpers.line_with_catalogue(session, settings, **line_args)


def _form(page) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))


def test_quick_top_up_through_the_sandbox_to_the_receipt(client, session_factory, settings):
    line = _setup(session_factory, settings)
    token = csrf(client, "/topup")
    options = client.post("/topup/options", data={"msisdn": "07911 123456", "csrf_token": token})
    assert options.status_code == 200
    assert mask_msisdn("+447911123456") in options.text  # masked, to confirm it is the right number
    assert "+447911123456" not in options.text.split("<form")[0]
    review = client.post(
        "/topup/review",
        data={
            "msisdn": "+447911123456",
            "amount_minor": "1000",
            "provider": "sandbox",
            "email": "friend@example.com",
            "csrf_token": token,
        },
    )
    assert review.status_code == 200 and "£10.00" in review.text
    pay = client.post("/topup/pay", data=_form(review), follow_redirects=False)
    assert pay.status_code == 303 and "/sandbox/pay/" in pay.headers["location"]
    sandbox_page = client.get(pay.headers["location"])
    assert "TEST MODE" in sandbox_page.text
    # Pressing "Pay" twice makes one order.
    assert (
        client.post("/topup/pay", data=_form(review), follow_redirects=False).headers["location"]
        == pay.headers["location"]
    )
    approved = client.post(
        pay.headers["location"], data={"decision": "approve", "csrf_token": token}, follow_redirects=False
    )
    status_page = client.get(approved.headers["location"])
    assert "Credited to the line" in status_page.text and 'http-equiv="refresh"' not in status_page.text
    with unit_of_work(session_factory) as session:
        order = session.scalars(select(TopupOrder)).one()
        assert order.status == OrderStatus.CREDITED and order.channel == "quick"
        assert balance_of(session, line.main_account_id) == 1000
        assert check_invariants(session) == []
    receipt = client.get(f"/topup/orders/{order.public_id}/receipt")
    assert order.receipt_number in receipt.text and "£10.00" in receipt.text
    download = client.get(f"/topup/orders/{order.public_id}/receipt.txt")
    assert "attachment" in download.headers["content-disposition"] and order.receipt_number in download.text


def test_a_declined_payment_shows_a_reason(client, session_factory, settings):
    _setup(session_factory, settings)
    token = csrf(client, "/topup")
    review = client.post(
        "/topup/review",
        data={"msisdn": "+447911123456", "amount_minor": "500", "provider": "sandbox", "csrf_token": token},
    )
    pay = client.post("/topup/pay", data=_form(review), follow_redirects=False)
    declined = client.post(pay.headers["location"], data={"decision": "decline", "csrf_token": token})
    assert "The payment was declined" in declined.text


def test_pending_payment_page_refreshes_and_says_what_to_do(client, session_factory, settings):
    _setup(session_factory, settings)
    token = csrf(client, "/topup")
    review = client.post(
        "/topup/review",
        data={"msisdn": "+447911123456", "amount_minor": "500", "provider": "sandbox", "csrf_token": token},
    )
    pay = client.post("/topup/pay", data=_form(review), follow_redirects=False)
    pending = client.post(pay.headers["location"], data={"decision": "pending", "csrf_token": token})
    assert 'http-equiv="refresh"' in pending.text and "Taking long?" in pending.text


def test_bad_number_and_bad_amount_are_refused_on_the_page_and_change_nothing(
    client, session_factory, settings
):
    _setup(session_factory, settings)
    token = csrf(client, "/topup")
    before = fingerprint(session_factory)
    unknown = client.post("/topup/options", data={"msisdn": "+447911999999", "csrf_token": token})
    assert unknown.status_code == 422 and "is not a" in unknown.text
    bad = client.post("/topup/options", data={"msisdn": "12", "csrf_token": token})
    assert bad.status_code == 422
    too_small = client.post(
        "/topup/review",
        data={"msisdn": "+447911123456", "custom_amount": "1.00", "provider": "sandbox", "csrf_token": token},
    )
    assert too_small.status_code == 422 and "Top up between" in too_small.text
    nonsense = client.post(
        "/topup/review",
        data={"msisdn": "+447911123456", "custom_amount": "ten", "provider": "sandbox", "csrf_token": token},
    )
    assert nonsense.status_code == 422 and "Not an amount" in nonsense.text
    assert fingerprint(session_factory) == before


def test_logged_in_customer_buys_a_bundle_and_sees_it_on_the_line(client, session_factory, settings):
    with unit_of_work(session_factory) as session:
        customer = factories.customer(session, settings, email="ana@example.com")
        line = topup_helpers.line_with_catalogue(session, settings, customer_id=customer.id)
    login(client, "ana@example.com")
    token = csrf(client, "/topup")
    review = client.post(
        "/topup/review",
        data={"msisdn": line.msisdn, "bundle": "DATA-5GB", "provider": "sandbox", "csrf_token": token},
    )
    pay = client.post("/topup/pay", data=_form(review), follow_redirects=False)
    client.post(pay.headers["location"], data={"decision": "approve", "csrf_token": token})
    page = client.get(f"/lines/{line.id}")
    assert "5 GB" in page.text and "5120 MB data" in page.text
    with unit_of_work(session_factory) as session:
        assert session.scalars(select(TopupOrder)).one().channel == "web"


def test_api_top_up_with_idempotency_key(client, session_factory, settings):
    line = _setup(session_factory, settings)
    body = {"msisdn": "+447911123456", "amount_minor": 2000, "provider": "sandbox"}
    created = client.post("/api/v1/topups", json=body, headers=IDEMPOTENCY)
    assert created.status_code == 201, created.text
    order = created.json()
    assert order["status"] == "awaiting_payment" and order["payment_url"]
    replay = client.post("/api/v1/topups", json=body, headers=IDEMPOTENCY)
    assert replay.status_code == 200 and replay.json()["id"] == order["id"]
    before = fingerprint(session_factory)
    conflict = client.post("/api/v1/topups", json={**body, "amount_minor": 1000}, headers=IDEMPOTENCY)
    assert conflict.status_code == 409 and conflict.headers["content-type"].startswith(
        "application/problem+json"
    )
    missing = client.post("/api/v1/topups", json=body)
    assert missing.status_code == 422
    assert fingerprint(session_factory) == before
    # The customer pays on the sandbox page, then the API shows the credit.
    page = client.get(order["payment_url"])
    client.post(
        order["payment_url"], data={"decision": "approve", "csrf_token": CSRF.search(page.text).group(1)}
    )
    status = client.get(f"/api/v1/topups/{order['id']}").json()
    assert status["status"] == "credited" and status["balance_after"]["amount_minor"] == 2000
    with unit_of_work(session_factory) as session:
        assert balance_of(session, line.main_account_id) == 2000


def test_api_refuses_bad_top_ups_with_problems_and_moves_nothing(client, session_factory, settings):
    _setup(session_factory, settings)
    before = fingerprint(session_factory)
    for body, status in [
        ({"msisdn": "nope", "amount_minor": 1000}, 422),
        ({"msisdn": "+447911999999", "amount_minor": 1000}, 422),
        ({"msisdn": "+447911123456", "amount_minor": 1}, 422),
        ({"msisdn": "+447911123456"}, 422),
        ({"msisdn": "+447911123456", "amount_minor": 1000, "provider": "cash"}, 422),
        ({"msisdn": "+447911123456", "bundle_code": "NOPE"}, 422),
    ]:
        response = client.post("/api/v1/topups", json=body, headers={"Idempotency-Key": str(body)})
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    assert fingerprint(session_factory) == before


def test_api_bundle_from_balance_and_line_topups(client, session_factory, settings):
    from tests.e2e.test_api import token_for

    with unit_of_work(session_factory) as session:
        customer = factories.customer(session, settings, email="ana@example.com")
        line = topup_helpers.line_with_catalogue(
            session, settings, customer_id=customer.id, balance_minor=1500
        )
    headers = token_for(client, "ana@example.com")
    bought = client.post(
        f"/api/v1/lines/{line.id}/bundles",
        json={"bundle_code": "DATA-5GB"},
        headers={**headers, "Idempotency-Key": "b-1"},
    )
    assert bought.status_code == 201 and bought.json()["data_mb_remaining"] == 5120
    again = client.post(
        f"/api/v1/lines/{line.id}/bundles",
        json={"bundle_code": "DATA-5GB"},
        headers={**headers, "Idempotency-Key": "b-1"},
    )
    assert again.status_code == 201
    short = client.post(
        f"/api/v1/lines/{line.id}/bundles",
        json={"bundle_code": "DATA-5GB"},
        headers={**headers, "Idempotency-Key": "b-2"},
    )
    assert short.status_code == 409 and "Insufficient funds" in short.json()["detail"]
    assert len(client.get(f"/api/v1/lines/{line.id}/allowances", headers=headers).json()) == 1
    assert client.get(f"/api/v1/lines/{line.id}/topups", headers=headers).json() == []


def test_a_payment_after_the_number_went_out_of_service_says_it_will_be_refunded(
    client, session_factory, settings
):
    from sqlalchemy import update

    from airtime.accounts.models import Line, LineState

    line = _setup(session_factory, settings)
    body = {"msisdn": "+447911123456", "amount_minor": 2000}
    order = client.post("/api/v1/topups", json=body, headers=IDEMPOTENCY).json()
    with unit_of_work(session_factory) as session:
        session.execute(update(Line).where(Line.id == line.id).values(state=LineState.TERMINATED))
    page = client.get(order["payment_url"])
    approved = client.post(
        order["payment_url"],
        data={"decision": "approve", "csrf_token": CSRF.search(page.text).group(1)},
        follow_redirects=False,
    )
    assert approved.status_code == 303
    status_page = client.get(approved.headers["location"])
    assert "Customer care will refund it" in status_page.text
    assert 'http-equiv="refresh"' not in status_page.text
    chinese = client.get(approved.headers["location"], headers={"Accept-Language": "zh-CN"})
    assert "客服会为您退款" in chinese.text
    assert client.get(f"/api/v1/topups/{order['id']}").json()["status"] == "paid"
    with unit_of_work(session_factory) as session:
        assert balance_of(session, line.main_account_id) == 0
        assert check_invariants(session) == []
