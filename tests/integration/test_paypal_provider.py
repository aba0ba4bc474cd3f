"""PayPal Orders v2 over httpx against a local fake PayPal API, on both databases.

Webhooks carry the transmission headers PayPal sends and are delivered to the app's
endpoint ``POST /webhooks/paypal``; the provider has the fake verify them, as PayPal would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from airtime.accounts.models import Line
from airtime.config import Settings
from airtime.errors import Conflict
from airtime.ledger.service import balance_of, check_invariants
from airtime.payments.base import PaymentOutcome, PaymentRequest, ProviderUnavailable
from airtime.payments.models import PaymentEvent
from airtime.payments.paypal_provider import PayPalProvider
from airtime.topups import service as topups
from airtime.topups.checkout import refresh_from_provider
from airtime.topups.models import OrderStatus, TopupOrder
from airtime.topups.tasks import reconcile
from tests import topup_helpers
from tests.fakes.paypal_api import CLIENT_ID, CLIENT_SECRET, WEBHOOK_ID, FakePayPal
from tests.snapshot import fingerprint

VERIFY_PATH = "/v1/notifications/verify-webhook-signature"


@pytest.fixture
def fake_paypal() -> Iterator[FakePayPal]:
    fake = FakePayPal()
    yield fake
    fake.close()


@pytest.fixture
def settings(settings, fake_paypal):
    """The suite's settings with PayPal configured against the fake."""
    return settings.model_copy(
        update={
            "paypal_client_id": CLIENT_ID,
            "paypal_client_secret": CLIENT_SECRET,
            "paypal_webhook_id": WEBHOOK_ID,
            "paypal_api_base": fake_paypal.url,
        }
    )


@pytest.fixture
def provider(client) -> PayPalProvider:
    """The app's own PayPal provider, the one its webhook endpoint uses."""
    return client.app.state.payment_providers["paypal"]


@pytest.fixture
def line_id(uow, settings) -> int:
    with uow() as session:
        return topup_helpers.line_with_catalogue(session, settings).id


def new_order(
    uow, settings, provider, line_id: int, *, amount_minor: int = 1000, key: str = "k1"
) -> TopupOrder:
    with uow() as session:
        quote = topups.quote(
            session, line=session.get(Line, line_id), channel="web", amount_minor=amount_minor
        )
        order, created = topups.create_order(
            session,
            quote=quote,
            channel="web",
            provider=provider,
            idempotency_scope="test",
            idempotency_key=key,
            settings=settings,
        )
        assert created
        return order


def deliver(client, fake: FakePayPal, event: dict, *, headers: dict | None = None, body: bytes | None = None):
    """POST an event to the webhook endpoint with PayPal's transmission headers."""
    return client.post(
        "/webhooks/paypal",
        content=json.dumps(event).encode() if body is None else body,
        headers={
            **(fake.signed_headers(event) if headers is None else headers),
            "Content-Type": "application/json",
            "Accept": "application/json",
        },
    )


def approved(fake: FakePayPal, order: TopupOrder) -> dict:
    """The payer approves; the CHECKOUT.ORDER.APPROVED event PayPal then sends."""
    return fake.event("CHECKOUT.ORDER.APPROVED", fake.approve(order.payment_reference))


def current(uow, order_id: int) -> tuple[TopupOrder, int]:
    with uow() as session:
        order = session.get(TopupOrder, order_id)
        line = session.get(Line, order.line_id)
        return order, balance_of(session, line.main_account_id)


def test_an_order_creates_a_paypal_order_to_approve(uow, settings, provider, fake_paypal, line_id):
    order = new_order(uow, settings, provider, line_id, amount_minor=1250)
    second = new_order(uow, settings, provider, line_id, key="k2")
    [request, _] = fake_paypal.server.requests_to("POST", "/v2/checkout/orders")
    sent = request.json()
    assert request.headers["paypal-request-id"] == f"order-{order.public_id}"
    assert sent["intent"] == "CAPTURE"
    [unit] = sent["purchase_units"]
    assert unit["amount"] == {"currency_code": "GBP", "value": "12.50"}
    assert unit["custom_id"] == order.public_id
    experience = sent["payment_source"]["paypal"]["experience_context"]
    assert experience["return_url"] == f"{settings.base_url}/topup/orders/{order.public_id}?returned=1"
    assert experience["cancel_url"] == f"{settings.base_url}/topup/orders/{order.public_id}?cancelled=1"
    assert order.payment_reference in fake_paypal.orders
    assert order.payment_redirect_url == f"https://www.paypal.com/checkoutnow?token={order.payment_reference}"
    with uow() as session:
        state = provider.fetch_payment(session, order.payment_reference)
    assert (state.outcome, state.amount_minor, state.currency) == (PaymentOutcome.PENDING, 1250, "GBP")
    assert second.payment_reference != order.payment_reference
    # One token served every call.
    assert len(fake_paypal.server.requests_to("POST", "/v1/oauth2/token")) == 1


def test_an_approved_order_is_captured_and_credited_once(
    uow, client, settings, provider, fake_paypal, line_id
):
    order = new_order(uow, settings, provider, line_id)
    event = approved(fake_paypal, order)
    answers = [deliver(client, fake_paypal, event) for _ in range(5)]
    assert answers[0].json() == {"status": "processed", "change": "paid", "credited": True}
    assert {answer.json()["status"] for answer in answers[1:]} == {"duplicate"}
    capture_path = f"/v2/checkout/orders/{order.payment_reference}/capture"
    [capture] = fake_paypal.server.requests_to("POST", capture_path)
    assert capture.headers["paypal-request-id"] == f"capture-{order.payment_reference}"
    # PayPal's own capture event follows; the order is already paid and credited.
    captured = fake_paypal.capture(fake_paypal.capture_id_of(order.payment_reference))
    later = deliver(client, fake_paypal, fake_paypal.event("PAYMENT.CAPTURE.COMPLETED", captured))
    assert later.json() == {"status": "processed", "change": "unchanged", "credited": False}
    order, balance = current(uow, order.id)
    assert (order.status, order.payment_method, balance) == (OrderStatus.CREDITED, "paypal", 1000)
    with uow() as session:
        assert session.scalar(select(func.count()).select_from(PaymentEvent)) == 2
        assert check_invariants(session) == []


def test_a_webhook_paypal_does_not_verify_is_refused_and_changes_nothing(
    uow, client, session_factory, settings, provider, fake_paypal, line_id
):
    order = new_order(uow, settings, provider, line_id)
    event = approved(fake_paypal, order)
    before = fingerprint(session_factory)
    forged = deliver(
        client, fake_paypal, event, headers=fake_paypal.signed_headers(event, webhook_id="WH-OTHER")
    )
    assert forged.status_code == 400
    assert forged.headers["content-type"] == "application/problem+json"
    assert forged.json()["type"].endswith("/webhook_refused") and "signature" in forged.json()["detail"]
    tampered = {**event, "resource": {**event["resource"], "id": "SOMEONE-ELSES"}}
    assert (
        deliver(client, fake_paypal, tampered, headers=fake_paypal.signed_headers(event)).status_code == 400
    )
    headers = fake_paypal.signed_headers(event)
    del headers["paypal-transmission-sig"]
    unsigned = deliver(client, fake_paypal, event, headers=headers)
    assert unsigned.status_code == 400 and "paypal-transmission-sig" in unsigned.json()["detail"]
    assert len(fake_paypal.server.requests_to("POST", VERIFY_PATH)) == 2
    assert (
        fake_paypal.server.requests_to("POST", f"/v2/checkout/orders/{order.payment_reference}/capture") == []
    )
    assert fingerprint(session_factory) == before


def test_an_event_sent_ten_minutes_ago_is_refused_without_asking_paypal(
    uow, client, session_factory, settings, provider, fake_paypal, line_id
):
    order = new_order(uow, settings, provider, line_id)
    event = approved(fake_paypal, order)
    sent_at = (datetime.now(UTC) - timedelta(minutes=10)).strftime("%Y-%m-%dT%H:%M:%SZ")
    before = fingerprint(session_factory)
    replayed = deliver(
        client, fake_paypal, event, headers=fake_paypal.signed_headers(event, transmission_time=sent_at)
    )
    assert replayed.status_code == 400 and "seconds ago" in replayed.json()["detail"]
    assert fake_paypal.server.requests_to("POST", VERIFY_PATH) == []
    assert fingerprint(session_factory) == before


def test_the_customer_coming_back_captures_and_credits(
    uow, client, session_factory, settings, provider, fake_paypal, line_id
):
    order = new_order(uow, settings, provider, line_id)
    fake_paypal.approve(order.payment_reference)
    refreshed = refresh_from_provider(
        session_factory,
        public_id=order.public_id,
        providers=client.app.state.payment_providers,
        settings=settings,
    )
    assert refreshed.status == OrderStatus.CREDITED
    # The approval webhook arriving afterwards finds the order captured and changes nothing.
    late = deliver(
        client,
        fake_paypal,
        fake_paypal.event("CHECKOUT.ORDER.APPROVED", fake_paypal.order(order.payment_reference)),
    )
    assert late.json() == {"status": "processed", "change": "unchanged", "credited": False}
    assert (
        len(fake_paypal.server.requests_to("POST", f"/v2/checkout/orders/{order.payment_reference}/capture"))
        == 1
    )
    assert current(uow, order.id)[1] == 1000


def test_a_declined_capture_fails_the_order_with_a_reason(
    uow, client, settings, provider, fake_paypal, line_id
):
    order = new_order(uow, settings, provider, line_id)
    fake_paypal.next_capture = "decline"
    answer = deliver(client, fake_paypal, approved(fake_paypal, order))
    assert answer.json()["change"] == "failed"
    order, balance = current(uow, order.id)
    assert (order.status, order.failure_code, balance) == (OrderStatus.FAILED, "payment_declined", 0)


@pytest.mark.parametrize(
    ("capture_status", "event_type", "status", "balance_minor"),
    [
        ("COMPLETED", "PAYMENT.CAPTURE.COMPLETED", OrderStatus.CREDITED, 1000),
        ("DECLINED", "PAYMENT.CAPTURE.DENIED", OrderStatus.FAILED, 0),
    ],
)
def test_a_pending_capture_settles_later_by_its_capture_event(
    uow, client, settings, provider, fake_paypal, line_id, capture_status, event_type, status, balance_minor
):
    order = new_order(uow, settings, provider, line_id)
    fake_paypal.next_capture = "pending"
    assert deliver(client, fake_paypal, approved(fake_paypal, order)).json()["change"] == "unchanged"
    assert current(uow, order.id)[0].status == OrderStatus.AWAITING_PAYMENT
    capture = fake_paypal.settle_capture(fake_paypal.capture_id_of(order.payment_reference), capture_status)
    deliver(client, fake_paypal, fake_paypal.event(event_type, capture))
    order, balance = current(uow, order.id)
    assert (order.status, balance) == (status, balance_minor)
    if status == OrderStatus.FAILED:
        assert order.failure_code == "payment_declined"


def test_a_voided_order_is_failed_by_reconciliation(
    uow, session_factory, settings, provider, fake_paypal, line_id
):
    order = new_order(uow, settings, provider, line_id)
    fake_paypal.void(order.payment_reference)
    report = reconcile(
        session_factory,
        providers={"paypal": provider},
        settings=settings.model_copy(update={"reconcile_after_seconds": 0}),
    )
    assert (report.failed, report.errors) == (1, [])
    order, _ = current(uow, order.id)
    assert (order.status, order.failure_code) == (OrderStatus.FAILED, "payment_cancelled")


def test_refunds_claw_back_by_paypals_running_total(uow, client, settings, provider, fake_paypal, line_id):
    order = new_order(uow, settings, provider, line_id)
    deliver(client, fake_paypal, approved(fake_paypal, order))
    capture_id = fake_paypal.capture_id_of(order.payment_reference)
    with uow() as session:
        provider.refund(session, order.payment_reference, 400, "refund-1")
        provider.refund(session, order.payment_reference, 400, "refund-1")  # a retry: refunded once
    [refund] = fake_paypal.order(order.payment_reference)["purchase_units"][0]["payments"]["refunds"]
    assert refund["amount"] == {"currency_code": "GBP", "value": "4.00"}
    event = fake_paypal.event("PAYMENT.CAPTURE.REFUNDED", refund)
    assert deliver(client, fake_paypal, event).json()["change"] == "refunded"
    assert deliver(client, fake_paypal, event).json()["status"] == "duplicate"
    order_now, balance = current(uow, order.id)
    assert (order_now.status, order_now.refunded_minor, balance) == (OrderStatus.CREDITED, 400, 600)
    with uow() as session:
        provider.refund(session, order.payment_reference, 600, "refund-2")
    last = fake_paypal.order(order.payment_reference)["purchase_units"][0]["payments"]["refunds"][-1]
    deliver(client, fake_paypal, fake_paypal.event("PAYMENT.CAPTURE.REFUNDED", last))
    order_now, balance = current(uow, order.id)
    assert (order_now.status, order_now.refunded_minor, balance) == (OrderStatus.REFUNDED, 1000, 0)
    assert fake_paypal.capture(capture_id)["status"] == "REFUNDED"
    with uow() as session:
        assert check_invariants(session) == []
        with pytest.raises(Conflict):
            provider.refund(session, order.payment_reference, 100, "refund-3")


def test_paypal_unreachable_creates_no_order(uow, session_factory, settings, fake_paypal, line_id):
    fake_paypal.close()  # nothing listens on its port any more
    provider = PayPalProvider.from_settings(settings)
    before = fingerprint(session_factory)
    with pytest.raises(ProviderUnavailable):
        new_order(uow, settings, provider, line_id)
    assert fingerprint(session_factory) == before


def test_a_token_paypal_no_longer_accepts_is_renewed_once():
    fake = FakePayPal(token_lifetime_seconds=3600)
    settings = Settings(
        paypal_client_id=CLIENT_ID,
        paypal_client_secret=CLIENT_SECRET,
        paypal_webhook_id=WEBHOOK_ID,
        paypal_api_base=fake.url,
    )
    request = PaymentRequest(
        order_public_id="order-1",
        amount_minor=500,
        currency="JPY",
        description="Top-up",
        return_url="https://example.test/back",
        cancel_url="https://example.test/cancel",
        idempotency_key="start-1",
    )
    try:
        provider = PayPalProvider.from_settings(settings)
        order_id = provider.start_payment(None, request).reference
        assert fake.orders[order_id]["purchase_units"][0]["amount"] == {
            "currency_code": "JPY",
            "value": "500",
        }
        fake.tokens.clear()  # revoked at PayPal's end before it expired
        assert provider.fetch_payment(None, order_id).outcome == PaymentOutcome.PENDING
        assert len(fake.server.requests_to("POST", "/v1/oauth2/token")) == 2
        fake.tokens.clear()
        provider.client_secret = "wrong"  # and a token PayPal will not give is a provider outage
        with pytest.raises(ProviderUnavailable):
            provider.fetch_payment(None, order_id)
    finally:
        fake.close()
