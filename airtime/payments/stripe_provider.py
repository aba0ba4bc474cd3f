"""Stripe: one hosted Checkout Session per order; outcomes by signed webhook or on request.

No card data reaches us: the customer pays on Stripe's page (``session.url``) and comes
back to the order page. Webhooks are verified with the Stripe SDK (HMAC-SHA256 over the
``t=`` timestamp of the ``Stripe-Signature`` header and the raw body). That timestamp is
the event's time for us, so an old delivery replayed with its valid signature is refused.

The payment reference of an order is the Checkout Session id. A refund event is about a
charge, which only knows its PaymentIntent; the session is found again by listing Checkout
Sessions for that PaymentIntent (a documented filter), so every event of an order carries
the same reference and the order is found the usual way.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import stripe
import structlog
from sqlalchemy.orm import Session

from airtime.config import Settings
from airtime.errors import Conflict
from airtime.payments.base import (
    OffSessionCharge,
    PaymentOutcome,
    PaymentRequest,
    PaymentStart,
    PaymentState,
    ProviderEvent,
    ProviderUnavailable,
    SavedMethodState,
    SaveMethodRequest,
    SetupStatus,
    WebhookRefused,
)

if TYPE_CHECKING:
    from stripe.params.checkout import SessionCreateParams

log = structlog.get_logger(__name__)

# Seconds to connect and to wait for an answer; Stripe answers in well under a second.
STRIPE_TIMEOUT_SECONDS = (5.0, 30.0)
# The SDK retries connection failures and 5xx answers itself, with the same idempotency key.
STRIPE_NETWORK_RETRIES_MAX = 2
DESCRIPTION_LENGTH_MAX = 200

# Checkout Session events that say the payment went through or did not.
PAID_EVENTS = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})
FAILED_EVENTS = {
    "checkout.session.async_payment_failed": "payment_declined",
    "checkout.session.expired": "payment_expired",
}
REFUND_EVENT = "charge.refunded"
# Off-session charges (auto top-up) are PaymentIntents: their id is the order's reference.
PAYMENT_INTENT_PREFIX = "pi_"


@contextmanager
def _calling_stripe(action: str) -> Iterator[None]:
    """Turn the SDK's errors into ours: the customer sees "try again", the log says why."""
    try:
        yield
    except stripe.StripeError as error:
        log.warning(
            "stripe_call_failed",
            action=action,
            error=type(error).__name__,
            code=error.code,
            status=error.http_status,
            message=str(error.user_message or error)[:300],
        )
        raise ProviderUnavailable("Stripe could not be reached; try again shortly.") from error


def _expanded(value: Any) -> dict[str, Any] | None:
    """An expanded object (a dict), or None when the field is only an id or empty."""
    return value if isinstance(value, dict) else None


def _object_id(value: Any) -> str:
    """The id of a field that may be expanded (an object) or not (an id string)."""
    if isinstance(value, dict):
        return str(value.get("id") or "")
    return str(value or "")


def _session_method(checkout: Mapping[str, Any]) -> str:
    """How the customer paid: the charge's payment method type when expanded, else a best guess."""
    intent = _expanded(checkout.get("payment_intent"))
    charge = _expanded(intent.get("latest_charge")) if intent else None
    details = _expanded(charge.get("payment_method_details")) if charge else None
    if details and details.get("type"):
        return str(details["type"])
    types = checkout.get("payment_method_types") or []
    return str(types[0]) if len(types) == 1 else "stripe"


def _session_refunded_minor(checkout: Mapping[str, Any]) -> int:
    intent = _expanded(checkout.get("payment_intent"))
    charge = _expanded(intent.get("latest_charge")) if intent else None
    return int(charge.get("amount_refunded") or 0) if charge else 0


def session_state(checkout: Mapping[str, Any]) -> PaymentState:
    """What a Checkout Session (as a dict) says about the payment."""
    amount_minor = int(checkout.get("amount_total") or 0)
    currency = str(checkout.get("currency") or "").upper()
    reference = str(checkout["id"])
    if checkout.get("payment_status") == "paid":
        refunded_minor = _session_refunded_minor(checkout)
        # Refunded in full before we heard of the payment: nothing to credit. A partial refund
        # keeps it a success; the refund event claws the refunded part back after crediting.
        outcome = (
            PaymentOutcome.REFUNDED
            if amount_minor and refunded_minor >= amount_minor
            else PaymentOutcome.SUCCEEDED
        )
        return PaymentState(
            reference=reference,
            outcome=outcome,
            amount_minor=amount_minor,
            currency=currency,
            method=_session_method(checkout),
            refunded_minor=refunded_minor,
        )
    if checkout.get("status") == "expired":
        return PaymentState(
            reference=reference,
            outcome=PaymentOutcome.FAILED,
            amount_minor=amount_minor,
            currency=currency,
            failure_code="payment_expired",
        )
    return PaymentState(
        reference=reference, outcome=PaymentOutcome.PENDING, amount_minor=amount_minor, currency=currency
    )


def payment_intent_state(intent: Mapping[str, Any]) -> PaymentState:
    """What a PaymentIntent (as a dict) says: the off-session charge of an auto top-up."""
    amount_minor = int(intent.get("amount") or 0)
    currency = str(intent.get("currency") or "").upper()
    reference = str(intent["id"])
    status = intent.get("status")
    charge = _expanded(intent.get("latest_charge"))
    refunded_minor = int(charge.get("amount_refunded") or 0) if charge else 0
    if status == "succeeded":
        return PaymentState(
            reference=reference,
            outcome=PaymentOutcome.REFUNDED
            if amount_minor and refunded_minor >= amount_minor
            else PaymentOutcome.SUCCEEDED,
            amount_minor=amount_minor,
            currency=currency,
            method="card",
            refunded_minor=refunded_minor,
        )
    if status == "processing":
        return PaymentState(
            reference=reference, outcome=PaymentOutcome.PENDING, amount_minor=amount_minor, currency=currency
        )
    # requires_payment_method (declined), requires_action (the bank wants the customer, who is
    # not there), canceled: no money was taken.
    return PaymentState(
        reference=reference,
        outcome=PaymentOutcome.FAILED,
        amount_minor=amount_minor,
        currency=currency,
        failure_code="payment_declined",
    )


def card_label(payment_method: Mapping[str, Any]) -> str:
    """ "Visa •••• 4242" from a PaymentMethod: the brand and last four digits Stripe shows."""
    card = _expanded(payment_method.get("card")) or {}
    brand = str(card.get("brand") or payment_method.get("type") or "card")
    last4 = str(card.get("last4") or "")
    return f"{brand.title()} •••• {last4}" if last4 else brand.title()


def signature_time(header: str) -> datetime:
    """The ``t=`` timestamp of a (verified) ``Stripe-Signature`` header, in UTC."""
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            return datetime.fromtimestamp(int(value), tz=UTC)
    raise WebhookRefused("The Stripe-Signature header has no timestamp.")


def _audit_payload(event: Mapping[str, Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """What we keep of an event: ids, amounts and states, not the customer's details."""
    kept = ("id", "object", "status", "payment_status", "amount_total", "amount", "amount_refunded")
    return {
        "id": event.get("id"),
        "type": event.get("type"),
        "created": event.get("created"),
        "livemode": event.get("livemode"),
        "object": {key: data.get(key) for key in kept if key in data}
        | {
            "currency": data.get("currency"),
            "payment_intent": _object_id(data.get("payment_intent")) or None,
            "client_reference_id": data.get("client_reference_id"),
        },
    }


@dataclass
class StripeProvider:
    client: stripe.StripeClient
    webhook_secret: str
    tolerance_seconds: int = 300
    name: str = "stripe"
    saves_methods: bool = True

    @classmethod
    def from_settings(
        cls, settings: Settings, *, network_retries_max: int = STRIPE_NETWORK_RETRIES_MAX
    ) -> StripeProvider:
        client = stripe.StripeClient(
            settings.stripe_secret_key,
            base_addresses={"api": settings.stripe_api_base.rstrip("/") or stripe.DEFAULT_API_BASE},
            max_network_retries=network_retries_max,
            http_client=stripe.RequestsClient(timeout=STRIPE_TIMEOUT_SECONDS),
        )
        return cls(
            client=client,
            webhook_secret=settings.stripe_webhook_secret,
            tolerance_seconds=settings.webhook_tolerance_seconds,
        )

    def start_payment(self, session: Session, request: PaymentRequest) -> PaymentStart:
        params: SessionCreateParams = {
            "mode": "payment",
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": request.currency.lower(),
                        "unit_amount": request.amount_minor,
                        "product_data": {"name": request.description[:DESCRIPTION_LENGTH_MAX]},
                    },
                }
            ],
            "success_url": request.return_url,
            "cancel_url": request.cancel_url,
            "client_reference_id": request.order_public_id,
            "metadata": {"order": request.order_public_id},
            # Charge exactly the order's amount and currency: with Adaptive Pricing the amounts on
            # the session and its charge (refunds too) would be in the customer's currency.
            "adaptive_pricing": {"enabled": False},
            # Shown on the payment in Stripe's dashboard, so staff can find the order from it.
            "payment_intent_data": {
                "metadata": {"order": request.order_public_id},
                "description": request.description[:DESCRIPTION_LENGTH_MAX],
            },
        }
        if request.customer_email:
            params["customer_email"] = request.customer_email
        with _calling_stripe("start payment"):
            checkout = self.client.v1.checkout.sessions.create(
                params=params, options={"idempotency_key": request.idempotency_key or None}
            )
        if not checkout.url:
            raise ProviderUnavailable("Stripe did not return a payment page; try again shortly.")
        return PaymentStart(reference=checkout.id, redirect_url=checkout.url)

    def _retrieve(self, reference: str) -> dict[str, Any]:
        with _calling_stripe("retrieve session"):
            checkout = self.client.v1.checkout.sessions.retrieve(
                reference, params={"expand": ["payment_intent.latest_charge"]}
            )
        return checkout.to_dict()

    def fetch_payment(self, session: Session, reference: str) -> PaymentState:
        if reference.startswith(PAYMENT_INTENT_PREFIX):
            with _calling_stripe("retrieve payment intent"):
                intent = self.client.v1.payment_intents.retrieve(
                    reference, params={"expand": ["latest_charge"]}
                )
            return payment_intent_state(intent.to_dict())
        return session_state(self._retrieve(reference))

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent | None:
        header = headers.get("stripe-signature", "")
        try:
            event = self.client.construct_event(
                body, header, self.webhook_secret, tolerance=self.tolerance_seconds
            ).to_dict()
        except stripe.SignatureVerificationError as error:
            reason = str(error.user_message or error)
            log.warning("stripe_webhook_refused", reason=reason[:300])
            if "tolerance" in reason:  # a valid signature, made too long ago: a replay
                raise WebhookRefused(
                    "Stripe event signed more than %(seconds)s seconds ago.", seconds=self.tolerance_seconds
                ) from error
            raise WebhookRefused("Stripe webhook signature not accepted.") from error
        except ValueError as error:  # not JSON, or not an event
            raise WebhookRefused("The body is not a Stripe event.") from error
        event_type = str(event.get("type") or "")
        envelope = _expanded(event.get("data")) or {}
        data = _expanded(envelope.get("object"))
        if data is None or not event.get("id"):
            raise WebhookRefused("The body is not a Stripe event.")

        def provider_event(state: PaymentState) -> ProviderEvent:
            return ProviderEvent(
                event_id=str(event["id"]),
                event_type=event_type,
                reference=state.reference,
                outcome=state.outcome,
                occurred_at=signature_time(header),
                amount_minor=state.amount_minor,
                currency=state.currency,
                method=state.method,
                failure_code=state.failure_code,
                refunded_minor=state.refunded_minor,
                payload=_audit_payload(event, data),
            )

        if event_type in PAID_EVENTS:
            state = session_state(data)
            # "completed" with payment_status "unpaid" is a delayed method (bank debit):
            # the outcome follows as async_payment_succeeded or async_payment_failed.
            return provider_event(state) if state.outcome == PaymentOutcome.SUCCEEDED else None
        if event_type in FAILED_EVENTS:
            return provider_event(
                PaymentState(
                    reference=str(data["id"]),
                    outcome=PaymentOutcome.FAILED,
                    amount_minor=int(data.get("amount_total") or 0),
                    currency=str(data.get("currency") or "").upper(),
                    failure_code=FAILED_EVENTS[event_type],
                )
            )
        if event_type == REFUND_EVENT:
            payment_intent_id = _object_id(data.get("payment_intent"))
            reference = self._session_of_payment_intent(payment_intent_id) or self._off_session_order_intent(
                payment_intent_id
            )
            if reference is None:
                log.info("stripe_refund_not_from_checkout", charge=data.get("id"))
                return None
            return provider_event(
                PaymentState(
                    reference=reference,
                    outcome=PaymentOutcome.REFUNDED,
                    amount_minor=int(data.get("amount") or 0),
                    currency=str(data.get("currency") or "").upper(),
                    # Stripe's running total for the charge, so a repeated or late event moves nothing.
                    refunded_minor=int(data.get("amount_refunded") or 0),
                )
            )
        return None

    def _session_of_payment_intent(self, payment_intent_id: str) -> str | None:
        """The Checkout Session (our payment reference) that created a PaymentIntent."""
        if not payment_intent_id:
            return None
        with _calling_stripe("retrieve session"):
            found = self.client.v1.checkout.sessions.list(
                params={"payment_intent": payment_intent_id, "limit": 1}
            )
        return found.data[0].id if found.data else None

    def _off_session_order_intent(self, payment_intent_id: str) -> str | None:
        """The PaymentIntent itself when it is one of our off-session charges (auto top-up):
        those have no Checkout Session, and the order's reference is the PaymentIntent id."""
        if not payment_intent_id.startswith(PAYMENT_INTENT_PREFIX):
            return None
        try:
            with _calling_stripe("retrieve payment intent"):
                intent = self.client.v1.payment_intents.retrieve(payment_intent_id)
        except ProviderUnavailable as error:
            if isinstance(error.__cause__, stripe.InvalidRequestError):  # not ours, or gone
                return None
            raise
        metadata = _expanded(intent.to_dict().get("metadata")) or {}
        return payment_intent_id if metadata.get("order") else None

    def refund(self, session: Session, reference: str, amount_minor: int, idempotency_key: str) -> None:
        """Refund ``amount_minor`` of the payment now (Stripe adds it to earlier refunds)."""
        payment_intent_id = (
            reference
            if reference.startswith(PAYMENT_INTENT_PREFIX)
            else _object_id(self._retrieve(reference).get("payment_intent"))
        )
        if not payment_intent_id:
            raise Conflict("This Stripe payment was never completed, so there is nothing to refund.")
        with _calling_stripe("refund"):
            try:
                self.client.v1.refunds.create(
                    params={
                        "payment_intent": payment_intent_id,
                        "amount": amount_minor,
                        "metadata": {"checkout_session": reference},
                    },
                    options={"idempotency_key": idempotency_key or None},
                )
            except stripe.InvalidRequestError as error:
                # A refusal a person can act on (already refunded, more than was paid).
                raise Conflict(
                    "Stripe refused the refund: %(reason)s", reason=str(error.user_message or error)[:300]
                ) from error

    # --- saved payment methods (auto top-up) ------------------------------------------------

    def start_saving_method(self, session: Session, request: SaveMethodRequest) -> PaymentStart:
        """A Checkout Session in setup mode: Stripe collects the card and keeps it on a Stripe
        Customer (made here on the first save), for off-session charges later."""
        customer_id = request.provider_customer
        key = request.idempotency_key or None
        if not customer_id:
            with _calling_stripe("create customer"):
                customer = self.client.v1.customers.create(
                    params={"email": request.customer_email} if request.customer_email else {},
                    options={"idempotency_key": f"{key}-customer" if key else None},
                )
            customer_id = customer.id
        with _calling_stripe("start saving a method"):
            checkout = self.client.v1.checkout.sessions.create(
                params={
                    "mode": "setup",
                    "customer": customer_id,
                    "allowed_payment_method_types": ["card"],
                    "success_url": request.return_url,
                    "cancel_url": request.cancel_url,
                    "setup_intent_data": {"metadata": {"purpose": "auto_topup"}},
                },
                options={"idempotency_key": key},
            )
        if not checkout.url:
            raise ProviderUnavailable("Stripe did not return a page to save the card; try again shortly.")
        return PaymentStart(reference=checkout.id, redirect_url=checkout.url)

    def fetch_saved_method(self, session: Session, reference: str) -> SavedMethodState:
        with _calling_stripe("retrieve setup session"):
            checkout = self.client.v1.checkout.sessions.retrieve(
                reference, params={"expand": ["setup_intent.payment_method"]}
            ).to_dict()
        intent = _expanded(checkout.get("setup_intent")) or {}
        if checkout.get("status") == "complete" and intent.get("status") == "succeeded":
            method = _expanded(intent.get("payment_method")) or {
                "id": _object_id(intent.get("payment_method"))
            }
            return SavedMethodState(
                reference=reference,
                status=SetupStatus.SAVED,
                token=str(method.get("id") or ""),
                provider_customer=_object_id(checkout.get("customer")),
                label=card_label(method),
            )
        if checkout.get("status") == "expired":
            return SavedMethodState(reference=reference, status=SetupStatus.FAILED)
        return SavedMethodState(reference=reference, status=SetupStatus.PENDING)

    def charge_saved_method(self, session: Session, charge: OffSessionCharge) -> PaymentState:
        """A PaymentIntent confirmed at once, off-session. A decline (CardError, including
        "authentication required": the customer is not there to pass 3-D Secure) is a failed
        payment; any other error leaves the outcome unknown, and the caller retries with the
        same idempotency key, which Stripe answers with the first result."""
        with _calling_stripe("charge a saved method"):
            try:
                intent = self.client.v1.payment_intents.create(
                    params={
                        "amount": charge.amount_minor,
                        "currency": charge.currency.lower(),
                        "customer": charge.provider_customer,
                        "payment_method": charge.token,
                        "off_session": True,
                        "confirm": True,
                        "description": charge.description[:DESCRIPTION_LENGTH_MAX],
                        "metadata": {"order": charge.order_public_id},
                    },
                    options={"idempotency_key": charge.idempotency_key},
                )
            except stripe.CardError as error:
                body = _expanded(error.json_body) or {}
                details = _expanded(body.get("error")) or {}
                intent_id = _object_id(details.get("payment_intent"))
                log.info(
                    "stripe_off_session_declined",
                    code=error.code,
                    decline_code=details.get("decline_code"),
                    payment_intent=intent_id,
                )
                return PaymentState(
                    reference=intent_id,
                    outcome=PaymentOutcome.FAILED,
                    amount_minor=charge.amount_minor,
                    currency=charge.currency,
                    failure_code="payment_declined",
                )
        return payment_intent_state(intent.to_dict())
