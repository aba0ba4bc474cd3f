"""PayPal: Orders v2 over HTTP; the customer approves on PayPal's page, we capture.

The payment reference of an order is the PayPal order id. An order the customer approved
is captured by whichever comes first: the CHECKOUT.ORDER.APPROVED webhook, the customer
coming back (``fetch_payment``) or reconciliation; the capture carries a PayPal-Request-Id
derived from the order, so PayPal captures it once however many of them try.

Webhooks are verified by PayPal itself (``/v1/notifications/verify-webhook-signature``)
with the transmission headers, our webhook id and the event exactly as received. The
transmission time is the event's time for us, so an old delivery replayed is refused.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy.orm import Session

from airtime.clock import utcnow
from airtime.config import Settings
from airtime.errors import AppError, Conflict
from airtime.money import Money, parse_money
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
    SavingNotOffered,
    WebhookRefused,
)

log = structlog.get_logger(__name__)

PAYPAL_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# A token is renewed this long before PayPal says it expires, so none expires mid-request.
TOKEN_RENEW_MARGIN_SECONDS = 120
DESCRIPTION_LENGTH_MAX = 127  # PayPal's limit for purchase_units[].description
TRANSMISSION_HEADERS = {
    "auth_algo": "paypal-auth-algo",
    "cert_url": "paypal-cert-url",
    "transmission_id": "paypal-transmission-id",
    "transmission_sig": "paypal-transmission-sig",
    "transmission_time": "paypal-transmission-time",
}
# Capture states (purchase_units[].payments.captures[].status) and what they mean for us.
CAPTURE_STATUS_TO_OUTCOME = {
    "COMPLETED": PaymentOutcome.SUCCEEDED,
    "PARTIALLY_REFUNDED": PaymentOutcome.SUCCEEDED,
    "REFUNDED": PaymentOutcome.REFUNDED,
    "PENDING": PaymentOutcome.PENDING,
    "DECLINED": PaymentOutcome.FAILED,
    "FAILED": PaymentOutcome.FAILED,
}
# Capture refusals that mean the payer's funding failed (not our request or PayPal's outage).
CAPTURE_DECLINED_ISSUES = frozenset({"INSTRUMENT_DECLINED", "TRANSACTION_REFUSED", "PAYER_CANNOT_PAY"})


def decimal_value(amount_minor: int, currency: str) -> str:
    """PayPal's amount string ("10.00", "1000" for yen) from exact minor units."""
    return str(Money(amount_minor, currency).to_decimal())


def amount_minor_of(amount: Mapping[str, Any]) -> tuple[int, str]:
    """Minor units and currency of a PayPal ``{"currency_code", "value"}`` amount."""
    currency = str(amount.get("currency_code") or "")
    return parse_money(str(amount.get("value") or "0"), currency).amount_minor, currency


def _issues(body: Mapping[str, Any]) -> set[str]:
    """The ``details[].issue`` codes of a PayPal error body."""
    details = body.get("details") or []
    return {str(detail.get("issue")) for detail in details if isinstance(detail, dict)}


def _link(resource: Mapping[str, Any], *rels: str) -> str:
    for rel in rels:
        for link in resource.get("links") or []:
            if isinstance(link, dict) and link.get("rel") == rel and link.get("href"):
                return str(link["href"])
    return ""


def _first_purchase_unit(order: Mapping[str, Any]) -> dict[str, Any]:
    units = order.get("purchase_units") or [{}]
    unit = units[0]
    return unit if isinstance(unit, dict) else {}


def order_state(order: Mapping[str, Any]) -> PaymentState:
    """What a PayPal order (as returned by GET or capture) says about the payment."""
    reference = str(order["id"])
    unit = _first_purchase_unit(order)
    payments = unit.get("payments") or {}
    captures = payments.get("captures") or []
    capture = captures[0] if captures else None
    amount_minor, currency = amount_minor_of((capture or unit).get("amount") or {})
    refunded_minor = sum(
        amount_minor_of(refund.get("amount") or {})[0]
        for refund in payments.get("refunds") or []
        if refund.get("status") == "COMPLETED"
    )
    status = order.get("status")
    if status == "COMPLETED" and capture is not None:
        outcome = CAPTURE_STATUS_TO_OUTCOME.get(str(capture.get("status")), PaymentOutcome.PENDING)
        if outcome == PaymentOutcome.SUCCEEDED and amount_minor and refunded_minor >= amount_minor:
            outcome = PaymentOutcome.REFUNDED
        return PaymentState(
            reference=reference,
            outcome=outcome,
            amount_minor=amount_minor,
            currency=currency,
            method="paypal",
            failure_code="payment_declined" if outcome == PaymentOutcome.FAILED else "",
            refunded_minor=refunded_minor,
        )
    if status == "VOIDED":
        return PaymentState(
            reference=reference,
            outcome=PaymentOutcome.FAILED,
            amount_minor=amount_minor,
            currency=currency,
            failure_code="payment_cancelled",
        )
    return PaymentState(
        reference=reference, outcome=PaymentOutcome.PENDING, amount_minor=amount_minor, currency=currency
    )


def transmission_time(text: str) -> datetime:
    """The ``paypal-transmission-time`` header (ISO 8601) as an aware UTC datetime."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as error:
        raise WebhookRefused("The PayPal transmission time is not a date and time.") from error
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


@dataclass
class PayPalProvider:
    http: httpx.Client
    client_id: str
    client_secret: str
    webhook_id: str
    tolerance_seconds: int = 300
    name: str = "paypal"
    # Keeping a PayPal account for later charges needs the vault (v3 payment tokens) and
    # PayPal's approval of the merchant for it; not built yet, so auto top-up is not offered.
    saves_methods: bool = False
    _token: str = field(default="", repr=False)
    _token_renew_at: float = 0.0  # time.monotonic() seconds
    # Webhooks run in worker threads: one token fetch at a time.
    _token_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> PayPalProvider:
        return cls(
            http=httpx.Client(base_url=settings.paypal_api_base.rstrip("/"), timeout=PAYPAL_TIMEOUT),
            client_id=settings.paypal_client_id,
            client_secret=settings.paypal_client_secret,
            webhook_id=settings.paypal_webhook_id,
            tolerance_seconds=settings.webhook_tolerance_seconds,
        )

    # --- HTTP ----------------------------------------------------------------------------

    def _access_token(self) -> str:
        """An OAuth2 client-credentials token, cached until shortly before it expires."""
        with self._token_lock:
            if self._token and time.monotonic() < self._token_renew_at:
                return self._token
            try:
                response = self.http.post(
                    "/v1/oauth2/token",
                    data={"grant_type": "client_credentials"},
                    auth=(self.client_id, self.client_secret),
                    headers={"Accept": "application/json"},
                )
            except httpx.HTTPError as error:
                log.warning("paypal_unreachable", action="token", error=type(error).__name__)
                raise ProviderUnavailable("PayPal could not be reached; try again shortly.") from error
            if response.status_code != 200:
                log.error("paypal_token_refused", status=response.status_code, body=response.text[:300])
                raise ProviderUnavailable("PayPal refused our credentials; try again shortly.")
            try:
                body = response.json()
                self._token = str(body["access_token"])
                expires_in_seconds = int(body.get("expires_in") or 0)
            except (ValueError, KeyError, TypeError, AttributeError) as error:
                raise ProviderUnavailable("PayPal could not be reached; try again shortly.") from error
            self._token_renew_at = time.monotonic() + max(0, expires_in_seconds - TOKEN_RENEW_MARGIN_SECONDS)
            return self._token

    def _forget_token(self, token: str) -> None:
        with self._token_lock:
            if self._token == token:
                self._token = ""

    def _call(
        self,
        method: str,
        path: str,
        *,
        action: str,
        json_body: Any = None,
        content: bytes | None = None,
        request_id: str = "",
    ) -> tuple[int, dict[str, Any]]:
        """One API call: status and JSON body; a 5xx, a timeout or bad credentials raise."""
        headers = {"Content-Type": "application/json", "Prefer": "return=representation"}
        if request_id:
            headers["PayPal-Request-Id"] = request_id
        for attempt in range(2):
            token = self._access_token()
            try:
                response = self.http.request(
                    method,
                    path,
                    json=json_body,
                    content=content,
                    headers={**headers, "Authorization": f"Bearer {token}"},
                )
            except httpx.HTTPError as error:
                log.warning("paypal_unreachable", action=action, error=type(error).__name__)
                raise ProviderUnavailable("PayPal could not be reached; try again shortly.") from error
            if response.status_code == 401 and attempt == 0:
                self._forget_token(token)  # revoked or expired early: one retry with a fresh token
                continue
            break
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {}
        if response.status_code >= 500 or response.status_code == 401 or not isinstance(body, dict):
            log.warning(
                "paypal_call_failed",
                action=action,
                status=response.status_code,
                debug_id=body.get("debug_id") if isinstance(body, dict) else None,
            )
            raise ProviderUnavailable("PayPal could not be reached; try again shortly.")
        return response.status_code, body

    def _refused(self, action: str, status: int, body: Mapping[str, Any]) -> AppError:
        log.warning(
            "paypal_request_refused",
            action=action,
            status=status,
            name=body.get("name"),
            issues=sorted(_issues(body)),
            debug_id=body.get("debug_id"),
        )
        return ProviderUnavailable("PayPal did not accept the request; try again later.")

    def _get_order(self, order_id: str) -> dict[str, Any]:
        status, order = self._call("GET", f"/v2/checkout/orders/{order_id}", action="look up the payment")
        if status != 200:
            raise self._refused("look up the payment", status, order)
        return order

    def _settle(self, order_id: str) -> PaymentState:
        """The order's state now, capturing it first if the customer has approved it.

        The capture's PayPal-Request-Id is derived from the order, so a webhook, the
        customer's return and reconciliation racing each other capture it once."""
        order = self._get_order(order_id)
        if order.get("status") != "APPROVED":
            return order_state(order)
        status, captured = self._call(
            "POST",
            f"/v2/checkout/orders/{order_id}/capture",
            action="take the payment",
            request_id=f"capture-{order_id}",
        )
        if status in (200, 201):
            return order_state(captured)
        issues = _issues(captured)
        if "ORDER_ALREADY_CAPTURED" in issues:
            return order_state(self._get_order(order_id))
        if issues & CAPTURE_DECLINED_ISSUES:
            log.info("paypal_capture_declined", order=order_id, issues=sorted(issues))
            return replace(order_state(order), outcome=PaymentOutcome.FAILED, failure_code="payment_declined")
        raise self._refused("take the payment", status, captured)

    # --- the provider protocol -----------------------------------------------------------

    def start_payment(self, session: Session, request: PaymentRequest) -> PaymentStart:
        body = {
            "intent": "CAPTURE",
            "purchase_units": [
                {
                    "reference_id": request.order_public_id,
                    "custom_id": request.order_public_id,
                    "description": request.description[:DESCRIPTION_LENGTH_MAX],
                    "amount": {
                        "currency_code": request.currency,
                        "value": decimal_value(request.amount_minor, request.currency),
                    },
                }
            ],
            "payment_source": {
                "paypal": {
                    "experience_context": {
                        "return_url": request.return_url,
                        "cancel_url": request.cancel_url,
                        "user_action": "PAY_NOW",
                        "shipping_preference": "NO_SHIPPING",
                    }
                }
            },
        }
        status, order = self._call(
            "POST",
            "/v2/checkout/orders",
            action="start the payment",
            json_body=body,
            request_id=request.idempotency_key,
        )
        if status not in (200, 201):
            raise self._refused("start the payment", status, order)
        redirect_url = _link(order, "payer-action", "approve")
        if not order.get("id") or not redirect_url:
            raise ProviderUnavailable("PayPal did not return a payment page; try again shortly.")
        return PaymentStart(reference=str(order["id"]), redirect_url=redirect_url)

    def fetch_payment(self, session: Session, reference: str) -> PaymentState:
        return self._settle(reference)

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> ProviderEvent | None:
        transmission = {
            name: headers.get(header, "").strip() for name, header in TRANSMISSION_HEADERS.items()
        }
        missing = sorted(TRANSMISSION_HEADERS[name] for name, value in transmission.items() if not value)
        if missing:
            raise WebhookRefused("PayPal signature headers missing: %(headers)s.", headers=", ".join(missing))
        occurred_at = transmission_time(transmission["transmission_time"])
        # Refused before asking PayPal: a replayed old delivery costs no API call.
        if occurred_at < utcnow() - timedelta(seconds=self.tolerance_seconds):
            raise WebhookRefused(
                "PayPal event sent more than %(seconds)s seconds ago.", seconds=self.tolerance_seconds
            )
        try:
            event = json.loads(body)
        except ValueError as error:
            raise WebhookRefused("The body is not a PayPal event.") from error
        if not isinstance(event, dict) or not event.get("id") or not isinstance(event.get("resource"), dict):
            raise WebhookRefused("The body is not a PayPal event.")
        self._verify(body, transmission)
        event_type = str(event.get("event_type") or "")
        resource: dict[str, Any] = event["resource"]
        state = self._event_state(event_type, resource)
        if state is None:
            return None
        return ProviderEvent(
            event_id=str(event["id"]),
            event_type=event_type,
            reference=state.reference,
            outcome=state.outcome,
            occurred_at=occurred_at,
            amount_minor=state.amount_minor,
            currency=state.currency,
            method=state.method,
            failure_code=state.failure_code,
            refunded_minor=state.refunded_minor,
            payload={
                "id": event.get("id"),
                "event_type": event_type,
                "create_time": event.get("create_time"),
                "resource_type": event.get("resource_type"),
                "resource_id": resource.get("id"),
                "resource_status": resource.get("status"),
            },
        )

    def _verify(self, body: bytes, transmission: Mapping[str, str]) -> None:
        """PayPal checks the signature; the event goes back byte for byte as received, since
        re-encoding the JSON would change what was signed."""
        if not self.webhook_id:
            raise WebhookRefused("No PayPal webhook id is configured, so PayPal webhooks cannot be checked.")
        fields = json.dumps({**transmission, "webhook_id": self.webhook_id})
        content = fields[:-1].encode() + b',"webhook_event":' + body.strip() + b"}"
        status, answer = self._call(
            "POST", "/v1/notifications/verify-webhook-signature", action="check the webhook", content=content
        )
        if status != 200 or answer.get("verification_status") != "SUCCESS":
            log.warning(
                "paypal_webhook_not_verified",
                status=status,
                verification_status=answer.get("verification_status"),
                transmission_id=transmission["transmission_id"],
            )
            raise WebhookRefused("PayPal did not confirm this webhook's signature.")

    def _event_state(self, event_type: str, resource: Mapping[str, Any]) -> PaymentState | None:
        """What an event means for the order; None for events we do not act on."""
        if event_type == "CHECKOUT.ORDER.APPROVED":
            return self._settle(str(resource["id"]))
        if event_type in ("PAYMENT.CAPTURE.COMPLETED", "PAYMENT.CAPTURE.DENIED"):
            order_id = _related_order_id(resource)
            if not order_id:
                return None
            amount_minor, currency = amount_minor_of(resource.get("amount") or {})
            denied = event_type == "PAYMENT.CAPTURE.DENIED"
            return PaymentState(
                reference=order_id,
                outcome=PaymentOutcome.FAILED if denied else PaymentOutcome.SUCCEEDED,
                amount_minor=amount_minor,
                currency=currency,
                method="paypal",
                failure_code="payment_declined" if denied else "",
            )
        if event_type == "PAYMENT.CAPTURE.REFUNDED":
            return self._refund_state(resource)
        return None

    def _refund_state(self, refund: Mapping[str, Any]) -> PaymentState | None:
        """A refund names its capture (link "up"); the capture names its order."""
        capture_id = _link(refund, "up").rstrip("/").rsplit("/", 1)[-1]
        if not capture_id:
            return None
        status, capture = self._call(
            "GET", f"/v2/payments/captures/{capture_id}", action="look up the refund"
        )
        if status != 200:
            raise self._refused("look up the refund", status, capture)
        order_id = _related_order_id(capture)
        if not order_id:
            return None
        amount_minor, currency = amount_minor_of(capture.get("amount") or {})
        total = (refund.get("seller_payable_breakdown") or {}).get("total_refunded_amount")
        if total:
            refunded_minor = amount_minor_of(total)[0]
        else:  # older payloads lack the running total: read it from the order
            refunded_minor = order_state(self._get_order(order_id)).refunded_minor
        return PaymentState(
            reference=order_id,
            outcome=PaymentOutcome.REFUNDED,
            amount_minor=amount_minor,
            currency=currency,
            refunded_minor=refunded_minor,
        )

    def refund(self, session: Session, reference: str, amount_minor: int, idempotency_key: str) -> None:
        """Refund ``amount_minor`` of the order's capture now (PayPal adds it to earlier refunds)."""
        unit = _first_purchase_unit(self._get_order(reference))
        captures = (unit.get("payments") or {}).get("captures") or []
        capture = next(
            (item for item in captures if item.get("status") in ("COMPLETED", "PARTIALLY_REFUNDED")), None
        )
        if capture is None:
            raise Conflict("This PayPal payment was not captured, so there is nothing to refund.")
        currency = str((capture.get("amount") or {}).get("currency_code") or "")
        status, body = self._call(
            "POST",
            f"/v2/payments/captures/{capture['id']}/refund",
            action="refund the payment",
            json_body={"amount": {"currency_code": currency, "value": decimal_value(amount_minor, currency)}},
            request_id=idempotency_key,
        )
        if status in (200, 201):
            return
        if 400 <= status < 500:
            raise Conflict(
                "PayPal refused the refund: %(reason)s", reason=str(body.get("message") or body.get("name"))
            )
        raise self._refused("refund the payment", status, body)

    def start_saving_method(self, session: Session, request: SaveMethodRequest) -> PaymentStart:
        raise SavingNotOffered("Saving a payment method is not offered with PayPal; choose another method.")

    def fetch_saved_method(self, session: Session, reference: str) -> SavedMethodState:
        raise SavingNotOffered("Saving a payment method is not offered with PayPal; choose another method.")

    def charge_saved_method(self, session: Session, charge: OffSessionCharge) -> PaymentState:
        raise SavingNotOffered("Saving a payment method is not offered with PayPal; choose another method.")


def _related_order_id(capture: Mapping[str, Any]) -> str:
    related = (capture.get("supplementary_data") or {}).get("related_ids") or {}
    return str(related.get("order_id") or "")
