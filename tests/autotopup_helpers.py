"""Shared steps for auto top-up tests: a customer with a line, a saved sandbox card, a rule."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from airtime.accounts.models import Customer, Line
from airtime.autotopup import service as autotopup
from airtime.autotopup.models import AutoTopupRule, SavedPaymentMethod
from airtime.clock import today
from airtime.config import Settings
from airtime.payments.sandbox import SandboxProvider
from airtime.topups.models import AmountRule
from tests import factories, topup_helpers


@dataclass
class Setup:
    customer_id: int
    line_id: int
    method_id: int
    rule_id: int


def saved_sandbox_card(
    session: Session, settings: Settings, *, customer: Customer, line_id: int, card: str = "success"
) -> SavedPaymentMethod:
    """Save a test card as the customer would on the sandbox's page."""
    provider = SandboxProvider(base_url=settings.base_url)
    method, _ = autotopup.start_saving_method(
        session, customer=customer, provider=provider, line_id=line_id, settings=settings
    )
    assert method.setup_reference
    provider.decide_setup(session, method.setup_reference, card)
    return autotopup.finish_saving_method(
        session, customer_id=customer.id, public_id=method.public_id, providers={"sandbox": provider}
    )


def rule_on_line(
    session: Session,
    settings: Settings,
    *,
    card: str = "success",
    balance_minor: int = 100,
    validity_days: int = 30,
    amount: str = "10.00",
    balance_below: str = "5.00",
    days_before: str = "",
    cap: str = "50.00",
    msisdn: str = "+447911123456",
    language: str = "en",
) -> Setup:
    customer = factories.customer(session, settings, language=language)
    factories.plan(session)
    if session.get(AmountRule, "GBP") is None:
        topup_helpers.catalogue(session)
    line = factories.line(
        session,
        settings,
        msisdn=msisdn,
        customer_id=customer.id,
        balance_minor=balance_minor,
        validity_date=today() + timedelta(days=validity_days),
    )
    method = saved_sandbox_card(session, settings, customer=customer, line_id=line.id, card=card)
    rule = autotopup.save_rule(
        session,
        line=session.get(Line, line.id),
        customer_id=customer.id,
        method_id=method.id,
        amount_text=amount,
        balance_below_text=balance_below,
        days_before_text=days_before,
        cap_text=cap,
        enabled=True,
    )
    return Setup(customer_id=customer.id, line_id=line.id, method_id=method.id, rule_id=rule.id)


def rule(session: Session, rule_id: int) -> AutoTopupRule:
    found = session.get(AutoTopupRule, rule_id)
    assert found is not None
    return found
