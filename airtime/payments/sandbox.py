"""The sandbox provider: a clearly labelled test-mode payment page inside the app.

It behaves like a hosted payment page: the customer approves, declines or leaves the
payment pending, and the outcome reaches the order through the same event path as a real
provider's webhook (stored once per event id, then processed).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from airtime.clock import utcnow
from airtime.db.dialect import insert_ignoring_conflicts
from airtime.errors import Conflict, NotFound, ValidationFailed
from airtime.payments.base import (
    OffSessionCharge,
    PaymentOutcome,
    PaymentRequest,
    PaymentStart,
    PaymentState,
    ProviderEvent,
    SavedMethodState,
    SaveMethodRequest,
    SetupStatus,
)
from airtime.payments.models import SandboxCardSetup, SandboxPayment

SANDBOX_STATUS_TO_OUTCOME = {
    "pending": PaymentOutcome.PENDING,
    "succeeded": PaymentOutcome.SUCCEEDED,
    "declined": PaymentOutcome.FAILED,
    "refunded": PaymentOutcome.REFUNDED,
}
# The test cards one can save on the sandbox's page, and how they answer an off-session charge.
SANDBOX_CARDS = {
    "success": "Test card •••• 4242",
    "decline": "Test card •••• 0002 (declines)",
}


@dataclass
class SandboxProvider:
    base_url: str
    name: str = "sandbox"
    saves_methods: bool = True

    def start_payment(self, session: Session, request: PaymentRequest) -> PaymentStart:
        reference = self.new_reference()
        now = utcnow()
        session.add(
            SandboxPayment(
                reference=reference,
                amount_minor=request.amount_minor,
                currency=request.currency,
                description=request.description[:200],
                return_url=request.return_url,
                status="pending",
                created_at=now,
                updated_at=now,
            )
        )
        session.flush()
        return PaymentStart(reference=reference, redirect_url=self.payment_url(reference))

    @staticmethod
    def new_reference() -> str:
        return "sbx_" + secrets.token_urlsafe(18)

    def payment_url(self, reference: str) -> str:
        """The test-mode payment page of one payment."""
        return f"{self.base_url}/sandbox/pay/{reference}"

    def fetch_payment(self, session: Session, reference: str) -> PaymentState:
        payment = session.get(SandboxPayment, reference)
        if payment is None:
            raise NotFound("No sandbox payment %(reference)s.", reference=reference)
        return PaymentState(
            reference=reference,
            outcome=SANDBOX_STATUS_TO_OUTCOME[payment.status],
            amount_minor=payment.amount_minor,
            currency=payment.currency,
            method="sandbox card",
            failure_code="payment_declined" if payment.status == "declined" else "",
            refunded_minor=payment.refunded_minor,
        )

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent | None:
        # The sandbox delivers its events in-process (see decide); there is no public webhook.
        return None

    def refund(self, session: Session, reference: str, amount_minor: int, idempotency_key: str) -> None:
        refunded = session.execute(
            update(SandboxPayment)
            .where(SandboxPayment.reference == reference, SandboxPayment.status == "succeeded")
            .values(status="refunded", refunded_minor=amount_minor, updated_at=utcnow())
        )
        if refunded.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict("Only a succeeded sandbox payment can be refunded.")

    def decide(self, session: Session, reference: str, decision: str) -> ProviderEvent | None:
        """The customer's choice on the test page; returns the event to process, if any."""
        if decision not in {"approve", "decline", "pending"}:
            raise NotFound("Unknown sandbox decision.")
        payment = session.get(SandboxPayment, reference)
        if payment is None:
            raise NotFound("No sandbox payment %(reference)s.", reference=reference)
        if decision == "pending":
            return None
        status = "succeeded" if decision == "approve" else "declined"
        changed = session.execute(
            update(SandboxPayment)
            .where(SandboxPayment.reference == reference, SandboxPayment.status == "pending")
            .values(status=status, updated_at=utcnow())
        )
        if changed.rowcount != 1:  # type: ignore[attr-defined]
            return None  # already decided: a second click changes nothing
        return ProviderEvent(
            event_id=f"{reference}:{status}",
            event_type=f"payment.{status}",
            reference=reference,
            outcome=SANDBOX_STATUS_TO_OUTCOME[status],
            occurred_at=utcnow(),
            amount_minor=payment.amount_minor,
            currency=payment.currency,
            method="sandbox card",
            failure_code="payment_declined" if status == "declined" else "",
        )

    def refund_event(self, session: Session, reference: str) -> ProviderEvent:
        """The event a real provider would send after a refund went through."""
        payment = session.get(SandboxPayment, reference)
        if payment is None:
            raise NotFound("No sandbox payment %(reference)s.", reference=reference)
        return ProviderEvent(
            event_id=f"{reference}:refunded",
            event_type="payment.refunded",
            reference=reference,
            outcome=PaymentOutcome.REFUNDED,
            occurred_at=utcnow(),
            amount_minor=payment.amount_minor,
            currency=payment.currency,
            refunded_minor=payment.refunded_minor,
        )

    # --- saved payment methods (auto top-up) ------------------------------------------------

    def start_saving_method(self, session: Session, request: SaveMethodRequest) -> PaymentStart:
        reference = "sbs_" + secrets.token_urlsafe(18)
        now = utcnow()
        session.add(
            SandboxCardSetup(
                reference=reference,
                customer_email=request.customer_email[:254],
                return_url=request.return_url,
                status=SetupStatus.PENDING,
                card="",
                created_at=now,
                updated_at=now,
            )
        )
        session.flush()
        return PaymentStart(reference=reference, redirect_url=f"{self.base_url}/sandbox/save/{reference}")

    def decide_setup(self, session: Session, reference: str, card: str) -> SandboxCardSetup:
        """The customer's choice on the test page: save one of the test cards, or cancel."""
        if card not in SANDBOX_CARDS and card != "cancel":
            raise ValidationFailed("Choose one of the test cards.", field="card")
        setup = session.get(SandboxCardSetup, reference)
        if setup is None:
            raise NotFound("No sandbox card setup %(reference)s.", reference=reference)
        saved = card != "cancel"
        # Conditional: a second click (or a second tab) changes nothing.
        session.execute(
            update(SandboxCardSetup)
            .where(SandboxCardSetup.reference == reference, SandboxCardSetup.status == SetupStatus.PENDING)
            .values(
                status=SetupStatus.SAVED if saved else SetupStatus.FAILED,
                card=card if saved else "",
                token=("sbxpm_" + secrets.token_urlsafe(18)) if saved else None,
                updated_at=utcnow(),
            )
            .execution_options(synchronize_session="fetch")
        )
        return setup

    def fetch_saved_method(self, session: Session, reference: str) -> SavedMethodState:
        setup = session.get(SandboxCardSetup, reference)
        if setup is None:
            raise NotFound("No sandbox card setup %(reference)s.", reference=reference)
        return SavedMethodState(
            reference=reference,
            status=setup.status,
            token=setup.token or "",
            provider_customer="",
            label=SANDBOX_CARDS.get(setup.card, ""),
        )

    def charge_saved_method(self, session: Session, charge: OffSessionCharge) -> PaymentState:
        """Charge a saved test card at once. The payment's reference is derived from the
        idempotency key, so a retry with the same key returns the first answer, as Stripe's does."""
        setup = session.scalar(select(SandboxCardSetup).where(SandboxCardSetup.token == charge.token))
        if setup is None or setup.status != SetupStatus.SAVED:
            return PaymentState(
                reference="",
                outcome=PaymentOutcome.FAILED,
                amount_minor=charge.amount_minor,
                currency=charge.currency,
                failure_code="payment_method_unusable",
            )
        reference = "sbx_" + hashlib.sha256(charge.idempotency_key.encode()).hexdigest()[:32]
        now = utcnow()
        session.execute(
            insert_ignoring_conflicts(session, SandboxPayment.__table__).values(
                reference=reference,
                amount_minor=charge.amount_minor,
                currency=charge.currency,
                description=charge.description[:200],
                return_url="",
                status="succeeded" if setup.card == "success" else "declined",
                refunded_minor=0,
                created_at=now,
                updated_at=now,
            )
        )
        state = self.fetch_payment(session, reference)
        return PaymentState(
            reference=state.reference,
            outcome=state.outcome,
            amount_minor=state.amount_minor,
            currency=state.currency,
            method=SANDBOX_CARDS[setup.card],
            failure_code=state.failure_code,
            refunded_minor=state.refunded_minor,
        )
