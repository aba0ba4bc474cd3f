"""The sandbox provider: a clearly labelled test-mode payment page inside the app.

It behaves like a hosted payment page: the customer approves, declines or leaves the
payment pending, and the outcome reaches the order through the same event path as a real
provider's webhook (stored once per event id, then processed).
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.orm import Session

from airtime.clock import utcnow
from airtime.errors import Conflict, NotFound
from airtime.payments.base import PaymentOutcome, PaymentRequest, PaymentStart, PaymentState, ProviderEvent
from airtime.payments.models import SandboxPayment

SANDBOX_STATUS_TO_OUTCOME = {
    "pending": PaymentOutcome.PENDING,
    "succeeded": PaymentOutcome.SUCCEEDED,
    "declined": PaymentOutcome.FAILED,
    "refunded": PaymentOutcome.REFUNDED,
}


@dataclass
class SandboxProvider:
    base_url: str
    name: str = "sandbox"

    def start_payment(self, session: Session, request: PaymentRequest) -> PaymentStart:
        reference = "sbx_" + secrets.token_urlsafe(18)
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
        return PaymentStart(reference=reference, redirect_url=f"{self.base_url}/sandbox/pay/{reference}")

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
