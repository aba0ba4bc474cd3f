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


class SavingNotOffered(AppError):
    """The provider cannot keep a payment method for later (off-session) charges."""

    status_code = 422
    code = "saving_not_offered"
    title = "Saving a payment method is not offered"


class SetupStatus:
    PENDING = "pending"
    SAVED = "saved"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SaveMethodRequest:
    """Ask a provider to keep a payment method for later charges; the customer is sent there."""

    customer_email: str
    # The provider's customer record from an earlier saved method, or "" to make one.
    provider_customer: str
    return_url: str
    cancel_url: str
    idempotency_key: str = ""


@dataclass(frozen=True, slots=True)
class SavedMethodState:
    """What the provider says about a "save a payment method" flow. Only a token and a
    label (brand and last four digits, when the provider gives them): never card data."""

    reference: str
    status: str
    token: str = ""
    provider_customer: str = ""
    label: str = ""


@dataclass(frozen=True, slots=True)
class OffSessionCharge:
    """Charge a saved method while the customer is away; the key makes a retry replay."""

    token: str
    provider_customer: str
    order_public_id: str
    amount_minor: int
    currency: str
    description: str
    idempotency_key: str


class PaymentProvider(Protocol):
    name: str
    # False: the provider is offered for payments, but cannot keep a method (auto top-up).
    saves_methods: bool

    def start_payment(self, session: Session, request: PaymentRequest) -> PaymentStart:
        """Create the payment at the provider; the customer is sent to ``redirect_url``."""

    def fetch_payment(self, session: Session, reference: str) -> PaymentState:
        """Ask the provider for the payment's state (for returns and reconciliation)."""

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent | None:
        """Verify and read a webhook; None for event types we do not act on."""

    def refund(self, session: Session, reference: str, amount_minor: int, idempotency_key: str) -> None:
        """Ask the provider to refund; the outcome arrives as a refund event."""

    def start_saving_method(self, session: Session, request: SaveMethodRequest) -> PaymentStart:
        """Start a "save a payment method" flow at the provider (raises SavingNotOffered)."""

    def fetch_saved_method(self, session: Session, reference: str) -> SavedMethodState:
        """The outcome of a "save a payment method" flow, once the customer is back."""

    def charge_saved_method(self, session: Session, charge: OffSessionCharge) -> PaymentState:
        """Charge a saved method off-session: succeeded, failed (a decline, with its code) or
        pending. Raises ProviderUnavailable when the outcome is unknown (retry with the same key)."""
