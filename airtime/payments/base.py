"""The one protocol every payment provider implements. No card data ever reaches us:
providers host the payment page and tell us the outcome by webhook or on request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.orm import Session

from airtime.errors import AppError


class PaymentOutcome:
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUNDED = "refunded"


class WebhookRefused(AppError):
    """A webhook we will not act on: bad signature, unknown shape, too old."""

    status_code = 400
    code = "webhook_refused"
    title = "Webhook refused"


class ProviderUnavailable(AppError):
    status_code = 502
    code = "provider_unavailable"
    title = "Payment provider unavailable"


@dataclass(frozen=True, slots=True)
class PaymentRequest:
    """What we ask a provider to collect: minor units, currency, and where to come back."""

    order_public_id: str
    amount_minor: int
    currency: str
    description: str
    return_url: str
    cancel_url: str
    customer_email: str = ""
    idempotency_key: str = ""


@dataclass(frozen=True, slots=True)
class PaymentStart:
    reference: str
    redirect_url: str


@dataclass(frozen=True, slots=True)
class PaymentState:
    """What the provider says about a payment now."""

    reference: str
    outcome: str
    amount_minor: int
    currency: str
    method: str = ""
    failure_code: str = ""
    refunded_minor: int = 0


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """A verified webhook event, reduced to what the order state machine needs."""

    event_id: str
    event_type: str
    reference: str
    outcome: str
    occurred_at: datetime
    amount_minor: int = 0
    currency: str = ""
    method: str = ""
    failure_code: str = ""
    refunded_minor: int = 0
    payload: Mapping[str, Any] = field(default_factory=dict)


class PaymentProvider(Protocol):
    name: str

    def start_payment(self, session: Session, request: PaymentRequest) -> PaymentStart:
        """Create the payment at the provider; the customer is sent to ``redirect_url``."""

    def fetch_payment(self, session: Session, reference: str) -> PaymentState:
        """Ask the provider for the payment's state (for returns and reconciliation)."""

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent | None:
        """Verify and read a webhook; None for event types we do not act on."""

    def refund(self, session: Session, reference: str, amount_minor: int, idempotency_key: str) -> None:
        """Ask the provider to refund; the outcome arrives as a refund event."""
