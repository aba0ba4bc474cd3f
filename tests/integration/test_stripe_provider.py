"""Stripe through the real SDK against a local fake Stripe API, on both databases.

Webhooks are signed with the SDK's own helper (``stripe.WebhookSignature``) and delivered
to the app's endpoint ``POST /webhooks/stripe``, as Stripe would.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest
import stripe
from sqlalchemy import func, select

from airtime.accounts.models import Line
from airtime.ledger.service import balance_of, check_invariants
from airtime.payments.base import PaymentOutcome, ProviderUnavailable
from airtime.payments.models import PaymentEvent
from airtime.payments.stripe_provider import StripeProvider
from airtime.topups import service as topups
from airtime.topups.models import OrderStatus, TopupOrder
from airtime.topups.tasks import reconcile
from tests import topup_helpers
from tests.fakes.stripe_api import SECRET_KEY, WEBHOOK_SECRET, FakeStripe
from tests.snapshot import fingerprint


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    fake = FakeStripe()
    yield fake
    fake.close()


@pytest.fixture
def settings(settings, fake_stripe):
    """The suite's settings with Stripe configured against the fake."""
    return settings.model_copy(
        update={
            "stripe_secret_key": SECRET_KEY,
            "stripe_webhook_secret": WEBHOOK_SECRET,
            "stripe_api_base": fake_stripe.url,
        }
    )


@pytest.fixture
def provider(client) -> StripeProvider:
    """The app's own Stripe provider, the one its webhook endpoint uses."""
    return client.app.state.payment_providers["stripe"]


def new_order(uow, settings, provider, *, amount_minor: int = 1000, key: str = "k1") -> TopupOrder:
    with uow() as session:
        line = topup_helpers.line_with_catalogue(session, settings)
        quote = topups.quote(session, line=line, channel="web", amount_minor=amount_minor)
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


def deliver(client, event: dict, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None, body=None):
    """POST an event to the webhook endpoint, signed as Stripe signs it."""
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp)
    return client.post(
        "/webhooks/stripe",
        content=payload if body is None else body,
        headers={
            "Stripe-Signature": header,
            "Content-Type": "application/json",
            "Accept": "application/json",
        },
    )


def current(uow, order_id: int) -> tuple[TopupOrder, int]:
    """The order as stored now and its line's main balance."""
    with uow() as session:
        order = session.get(TopupOrder, order_id)
        line = session.get(Line, order.line_id)
        return order, balance_of(session, line.main_account_id)


def event_count(uow) -> int:
    with uow() as session:
        return session.scalar(select(func.count()).select_from(PaymentEvent))


def test_an_order_starts_a_checkout_session_for_its_amount(uow, settings, provider, fake_stripe):
    order = new_order(uow, settings, provider, amount_minor=1250)
    [checkout] = fake_stripe.sessions.values()
    assert order.status == OrderStatus.AWAITING_PAYMENT
    assert order.payment_reference == checkout["id"] and order.payment_redirect_url == checkout["url"]
    assert checkout["mode"] == "payment" and (checkout["amount_total"], checkout["currency"]) == (1250, "gbp")
    assert checkout["client_reference_id"] == order.public_id
    assert checkout["metadata"] == {"order": order.public_id}
    assert checkout["_payment_intent_data"]["metadata"] == {"order": order.public_id}
    assert checkout["_params"]["adaptive_pricing"] == {"enabled": "false"}
    assert checkout["success_url"] == f"{settings.base_url}/topup/orders/{order.public_id}?returned=1"
    assert checkout["cancel_url"] == f"{settings.base_url}/topup/orders/{order.public_id}?cancelled=1"
    [request] = fake_stripe.server.requests_to("POST", "/v1/checkout/sessions")
    assert request.headers["idempotency-key"] == f"order-{order.public_id}"
    with uow() as session:
        state = provider.fetch_payment(session, order.payment_reference)
    assert (state.outcome, state.amount_minor, state.currency) == (PaymentOutcome.PENDING, 1250, "GBP")


def test_a_paid_event_credits_once_however_often_it_arrives(uow, client, settings, provider, fake_stripe):
    order = new_order(uow, settings, provider)
    event = fake_stripe.event("checkout.session.completed", fake_stripe.pay(order.payment_reference))
    answers = [deliver(client, event) for _ in range(10)]
    assert [a.status_code for a in answers] == [200] * 10
    assert answers[0].json() == {"status": "processed", "change": "paid", "credited": True}
    assert {a.json()["status"] for a in answers[1:]} == {"duplicate"}
    order, balance = current(uow, order.id)
    assert order.status == OrderStatus.CREDITED and order.payment_method == "card"
    assert balance == 1000 and event_count(uow) == 1
    with uow() as session:
        assert check_invariants(session) == []


def test_a_bad_signature_is_refused_and_changes_nothing(
    uow, client, session_factory, settings, provider, fake_stripe
):
    order = new_order(uow, settings, provider)
    event = fake_stripe.event("checkout.session.completed", fake_stripe.pay(order.payment_reference))
    before = fingerprint(session_factory)
    wrong_secret = deliver(client, event, secret="whsec_someone_else")
    assert wrong_secret.status_code == 400
    assert wrong_secret.headers["content-type"] == "application/problem+json"
    problem = wrong_secret.json()
    assert problem["type"].endswith("/webhook_refused") and "signature" in problem["detail"]
    tampered = json.dumps({**event, "data": {"object": {**event["data"]["object"], "amount_total": 1}}})
    assert deliver(client, event, body=tampered).status_code == 400
    unsigned = client.post(
        "/webhooks/stripe", content=json.dumps(event), headers={"Accept": "application/json"}
    )
    assert unsigned.status_code == 400
    assert fingerprint(session_factory) == before
    assert current(uow, order.id)[0].status == OrderStatus.AWAITING_PAYMENT


def test_an_event_signed_ten_minutes_ago_is_refused(
    uow, client, session_factory, settings, provider, fake_stripe
):
    order = new_order(uow, settings, provider)
    event = fake_stripe.event("checkout.session.completed", fake_stripe.pay(order.payment_reference))
    before = fingerprint(session_factory)
    replayed = deliver(client, event, timestamp=int(time.time()) - 600)
    assert replayed.status_code == 400 and "seconds ago" in replayed.json()["detail"]
    assert fingerprint(session_factory) == before
    # The same event freshly signed (Stripe's own retry) goes through.
    assert deliver(client, event).json()["credited"] is True


def test_a_delayed_payment_that_fails_fails_the_order_with_a_reason(
    uow, client, settings, provider, fake_stripe
):
    order = new_order(uow, settings, provider)
    submitted = fake_stripe.pay(order.payment_reference, payment_status="unpaid", method="bacs_debit")
    completed = deliver(client, fake_stripe.event("checkout.session.completed", submitted))
    assert completed.json() == {"status": "ignored"}
    assert current(uow, order.id)[0].status == OrderStatus.AWAITING_PAYMENT
    failed = deliver(client, fake_stripe.event("checkout.session.async_payment_failed", submitted))
    assert failed.json()["change"] == "failed"
    order, balance = current(uow, order.id)
    assert (order.status, order.failure_code, balance) == (OrderStatus.FAILED, "payment_declined", 0)


def test_a_delayed_payment_that_succeeds_is_credited(uow, client, settings, provider, fake_stripe):
    order = new_order(uow, settings, provider)
    fake_stripe.pay(order.payment_reference, payment_status="unpaid", method="sepa_debit")
    cleared = fake_stripe.sessions[order.payment_reference]
    cleared["payment_status"] = "paid"
    answer = deliver(client, fake_stripe.event("checkout.session.async_payment_succeeded", dict(cleared)))
    assert answer.json()["credited"] is True
    order, balance = current(uow, order.id)
    assert (order.status, order.payment_method, balance) == (OrderStatus.CREDITED, "sepa_debit", 1000)


def test_an_expired_session_fails_the_order(uow, client, settings, provider, fake_stripe):
    order = new_order(uow, settings, provider)
    expired = fake_stripe.expire(order.payment_reference)
    with uow() as session:
        state = provider.fetch_payment(session, order.payment_reference)
    assert (state.outcome, state.failure_code) == (PaymentOutcome.FAILED, "payment_expired")
    deliver(client, fake_stripe.event("checkout.session.expired", expired))
    order, _ = current(uow, order.id)
    assert (order.status, order.failure_code) == (OrderStatus.FAILED, "payment_expired")


def test_refunds_claw_back_by_stripes_running_total(uow, client, settings, provider, fake_stripe):
    order = new_order(uow, settings, provider)
    deliver(client, fake_stripe.event("checkout.session.completed", fake_stripe.pay(order.payment_reference)))
    with uow() as session:
        provider.refund(session, order.payment_reference, 400, "refund-1")
        provider.refund(session, order.payment_reference, 400, "refund-1")  # a retry: refunded once
    assert fake_stripe.charge_of(order.payment_reference)["amount_refunded"] == 400
    first = fake_stripe.event("charge.refunded", fake_stripe.charge_of(order.payment_reference))
    assert deliver(client, first).json()["change"] == "refunded"
    assert deliver(client, first).json()["status"] == "duplicate"
    order_now, balance = current(uow, order.id)
    assert (order_now.status, order_now.refunded_minor, balance) == (OrderStatus.CREDITED, 400, 600)
    with uow() as session:
        provider.refund(session, order.payment_reference, 600, "refund-2")
    second = fake_stripe.event("charge.refunded", fake_stripe.charge_of(order.payment_reference))
    deliver(client, second)
    order_now, balance = current(uow, order.id)
    assert (order_now.status, order_now.refunded_minor, balance) == (OrderStatus.REFUNDED, 1000, 0)
    with uow() as session:
        stored = session.scalars(select(PaymentEvent).order_by(PaymentEvent.id)).all()
        assert {event.payment_reference for event in stored} == {order.payment_reference}
        assert all(event.order_id == order.id for event in stored)
        assert check_invariants(session) == []
        # Nothing left to refund: Stripe's refusal reaches the caller as a conflict.
        with pytest.raises(Exception, match="Stripe refused the refund"):
            provider.refund(session, order.payment_reference, 100, "refund-3")


def test_a_refund_of_a_payment_we_did_not_start_is_ignored(client, fake_stripe):
    charge = {"id": "ch_other", "object": "charge", "amount": 500, "amount_refunded": 500, "currency": "gbp"}
    answer = deliver(client, fake_stripe.event("charge.refunded", {**charge, "payment_intent": "pi_other"}))
    assert answer.status_code == 200 and answer.json() == {"status": "ignored"}


def test_reconciliation_credits_a_paid_session_whose_webhook_never_came(
    uow, client, session_factory, settings, provider, fake_stripe
):
    order = new_order(uow, settings, provider)
    fake_stripe.pay(order.payment_reference)
    report = reconcile(
        session_factory,
        providers={"stripe": provider},
        settings=settings.model_copy(update={"reconcile_after_seconds": 0}),
    )
    assert (report.found_paid, report.credited, report.errors) == (1, 1, [])
    order, balance = current(uow, order.id)
    assert (order.status, balance) == (OrderStatus.CREDITED, 1000)


def test_stripe_unreachable_creates_no_order(uow, session_factory, settings, fake_stripe):
    with uow() as session:
        line = topup_helpers.line_with_catalogue(session, settings)
    fake_stripe.close()  # nothing listens on its port any more
    provider = StripeProvider.from_settings(settings, network_retries_max=0)
    before = fingerprint(session_factory)
    with pytest.raises(ProviderUnavailable), uow() as session:
        quote = topups.quote(session, line=session.get(Line, line.id), channel="web", amount_minor=1000)
        topups.create_order(
            session,
            quote=quote,
            channel="web",
            provider=provider,
            idempotency_scope="test",
            idempotency_key="k1",
            settings=settings,
        )
    assert fingerprint(session_factory) == before
