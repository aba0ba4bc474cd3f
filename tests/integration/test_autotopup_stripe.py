"""Auto top-up with Stripe through the real SDK against the fake Stripe API, on both
databases: a setup-mode Checkout Session saves the card, an off-session PaymentIntent
charges it, a declined card backs the rule off."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from airtime.accounts.models import Customer, Line
from airtime.autotopup import service as autotopup
from airtime.autotopup.models import AutoTopupRule, MethodStatus, SavedPaymentMethod
from airtime.autotopup.tasks import run_due
from airtime.ledger.service import balance_of, check_invariants
from airtime.payments.base import OffSessionCharge, PaymentOutcome
from airtime.payments.stripe_provider import StripeProvider
from airtime.topups.models import OrderStatus, TopupOrder
from tests import factories, topup_helpers
from tests.fakes.stripe_api import SECRET_KEY, WEBHOOK_SECRET, FakeStripe


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    fake = FakeStripe()
    yield fake
    fake.close()


@pytest.fixture
def stripe_settings(settings, fake_stripe):
    return settings.model_copy(
        update={
            "stripe_secret_key": SECRET_KEY,
            "stripe_webhook_secret": WEBHOOK_SECRET,
            "stripe_api_base": fake_stripe.url,
        }
    )


@pytest.fixture
def provider(stripe_settings) -> StripeProvider:
    return StripeProvider.from_settings(stripe_settings, network_retries_max=0)


def saved_card_rule(uow, settings, provider, fake_stripe, *, last4: str, msisdn: str = "+447911123456"):
    with uow() as session:
        customer = factories.customer(session, settings)
        if not session.scalar(select(Line.id).limit(1)):
            topup_helpers.catalogue(session)
        line = factories.line(session, settings, msisdn=msisdn, customer_id=customer.id, balance_minor=100)
        method, redirect_url = autotopup.start_saving_method(
            session, customer=customer, provider=provider, line_id=line.id, settings=settings
        )
        assert redirect_url.startswith("https://checkout.stripe.com/c/setup/")
        setup = fake_stripe.sessions[method.setup_reference]
        assert setup["mode"] == "setup" and setup["customer"] in fake_stripe.customers
        assert setup["success_url"].startswith(
            f"{settings.base_url}/autotopup/methods/{method.public_id}/return"
        )
        public_id, customer_id, line_id = method.public_id, customer.id, line.id
    with uow() as session:  # the customer is back before entering a card: still pending
        still = autotopup.finish_saving_method(
            session, customer_id=customer_id, public_id=public_id, providers={"stripe": provider}
        )
        assert still.status == MethodStatus.PENDING
    fake_stripe.save_card(method.setup_reference, last4=last4)
    with uow() as session:
        saved = autotopup.finish_saving_method(
            session, customer_id=customer_id, public_id=public_id, providers={"stripe": provider}
        )
        assert saved.status == MethodStatus.ACTIVE
        assert saved.token in fake_stripe.payment_methods
        assert saved.label == f"Visa •••• {last4}"
        rule = autotopup.save_rule(
            session,
            line=session.get(Line, line_id),
            customer_id=customer_id,
            method_id=saved.id,
            amount_text="10.00",
            balance_below_text="5.00",
            days_before_text="",
            cap_text="30.00",
            enabled=True,
        )
        return line_id, rule.id, saved.id


def test_saved_card_is_charged_off_session_and_credited(
    uow, session_factory, stripe_settings, provider, fake_stripe
):
    line_id, _, method_id = saved_card_rule(uow, stripe_settings, provider, fake_stripe, last4="4242")
    report = run_due(session_factory, providers={"stripe": provider}, settings=stripe_settings)
    assert (report.succeeded, report.errors) == (1, [])
    (intent,) = fake_stripe.payment_intents.values()
    assert intent["status"] == "succeeded" and intent["amount"] == 1000 and intent["currency"] == "gbp"
    with uow() as session:
        order = session.scalar(select(TopupOrder))
        assert order.status == OrderStatus.CREDITED and order.payment_reference == intent["id"]
        assert balance_of(session, session.get(Line, line_id).main_account_id) == 1100
        assert check_invariants(session) == []
        # Reconciliation and refunds find the payment by its PaymentIntent id.
        assert provider.fetch_payment(session, intent["id"]).outcome == PaymentOutcome.SUCCEEDED
    # The same idempotency key again: Stripe answers with the first PaymentIntent.
    with uow() as session:
        method = session.get(SavedPaymentMethod, method_id)
        charge = OffSessionCharge(
            token=method.token,
            provider_customer=method.provider_customer,
            order_public_id=order.public_id,
            amount_minor=1000,
            currency="GBP",
            description="again",
            idempotency_key="k-twice",
        )
        first = provider.charge_saved_method(session, charge)
        second = provider.charge_saved_method(session, charge)
    assert first.reference == second.reference and len(fake_stripe.payment_intents) == 2


def test_declined_card_backs_off_and_moves_no_money(
    uow, session_factory, stripe_settings, provider, fake_stripe
):
    line_id, rule_id, _ = saved_card_rule(uow, stripe_settings, provider, fake_stripe, last4="0341")
    report = run_due(session_factory, providers={"stripe": provider}, settings=stripe_settings)
    assert (report.charged, report.declined, report.errors) == (1, 1, [])
    (intent,) = fake_stripe.payment_intents.values()
    with uow() as session:
        order = session.scalar(select(TopupOrder))
        assert (order.status, order.failure_code) == (OrderStatus.FAILED, "payment_declined")
        assert order.payment_reference == intent["id"]
        assert balance_of(session, session.get(Line, line_id).main_account_id) == 100
        rule = session.get(AutoTopupRule, rule_id)
        assert rule.consecutive_declines == 1 and rule.next_attempt_at is not None
        assert session.scalar(select(Customer.id)) is not None


def test_paypal_does_not_offer_saving(uow, settings):
    from airtime.payments.base import SavingNotOffered
    from airtime.payments.paypal_provider import PayPalProvider

    paypal = PayPalProvider.from_settings(settings.model_copy(update={"paypal_client_id": "x"}))
    assert paypal.saves_methods is False
    with uow() as session:
        customer = factories.customer(session, settings)
        with pytest.raises(SavingNotOffered):
            autotopup.start_saving_method(
                session, customer=customer, provider=paypal, line_id=1, settings=settings
            )


def test_a_refund_at_stripe_claws_the_auto_top_up_back(
    uow, session_factory, stripe_settings, fake_stripe, database_url, tmp_path
):
    """charge.refunded for an off-session PaymentIntent finds the order by the PaymentIntent."""
    from fastapi.testclient import TestClient

    from airtime.app import create_app
    from tests.integration.test_stripe_provider import deliver

    with TestClient(create_app(stripe_settings, run_background_jobs=False)) as client:
        provider = client.app.state.payment_providers["stripe"]
        line_id, _, _ = saved_card_rule(uow, stripe_settings, provider, fake_stripe, last4="4242")
        assert (
            run_due(session_factory, providers={"stripe": provider}, settings=stripe_settings).succeeded == 1
        )
        (intent,) = fake_stripe.payment_intents.values()
        with uow() as session:
            provider.refund(session, intent["id"], 1000, "refund-1")
        charge = fake_stripe.charges[intent["latest_charge"]]
        response = deliver(client, fake_stripe.event("charge.refunded", charge))
        assert response.status_code == 200 and response.json()["change"] == "refunded"
    with uow() as session:
        order = session.scalar(select(TopupOrder))
        assert order.status == OrderStatus.REFUNDED
        assert balance_of(session, session.get(Line, line_id).main_account_id) == 100
        assert check_invariants(session) == []
