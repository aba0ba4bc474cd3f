"""A fake PayPal REST API: OAuth2 tokens, Orders v2, captures, refunds, webhook verification.

Documented shapes for the endpoints the PayPal provider uses:

    POST /v1/oauth2/token                          (Basic client id:secret, client_credentials)
    POST /v2/checkout/orders                       (PayPal-Request-Id replays the first answer)
    GET  /v2/checkout/orders/{id}
    POST /v2/checkout/orders/{id}/capture          (422 ORDER_NOT_APPROVED / ORDER_ALREADY_CAPTURED)
    GET  /v2/payments/captures/{id}
    POST /v2/payments/captures/{id}/refund
    POST /v1/notifications/verify-webhook-signature

Errors are PayPal's ``{"name", "message", "debug_id", "details": [{"issue"}]}``. Webhook
signatures: PayPal signs ``transmission_id|transmission_time|webhook_id|crc32(event)`` with
its certificate; this fake signs the same string with an HMAC key of its own (over the
event in one canonical JSON form), and ``verify-webhook-signature`` checks it.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import secrets
import zlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

from tests.fakes import FakeServer, Request, Response

CLIENT_ID = "fake-paypal-client-id"
CLIENT_SECRET = "fake-paypal-client-secret"
WEBHOOK_ID = "8PT597110X687430LKGECATA"
_SIGNING_KEY = b"fake paypal certificate"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _new_id() -> str:
    return secrets.token_hex(8).upper()


def _error(status: int, name: str, message: str, *issues: str) -> Response:
    return Response(
        status,
        {
            "name": name,
            "message": message,
            "debug_id": secrets.token_hex(6),
            "details": [{"issue": issue, "description": issue.replace("_", " ").lower()} for issue in issues],
        },
    )


def canonical(event: Any) -> bytes:
    return json.dumps(event, sort_keys=True, separators=(",", ":")).encode()


def _signature(transmission_id: str, transmission_time: str, webhook_id: str, event: Any) -> str:
    signed = f"{transmission_id}|{transmission_time}|{webhook_id}|{zlib.crc32(canonical(event))}"
    return base64.b64encode(hmac.new(_SIGNING_KEY, signed.encode(), hashlib.sha256).digest()).decode()


class FakePayPal:
    def __init__(self, *, token_lifetime_seconds: int = 32400) -> None:
        self.token_lifetime_seconds = token_lifetime_seconds
        self.tokens: set[str] = set()
        self.orders: dict[str, dict[str, Any]] = {}
        self.captures: dict[str, dict[str, Any]] = {}  # capture id → order id
        self._by_request_id: dict[tuple[str, str], Response] = {}
        # What the next capture does: "complete", "pending" or "decline" (422 INSTRUMENT_DECLINED).
        self.next_capture = "complete"
        self.server = FakeServer(self.handle)
        self.url = self.server.url

    def close(self) -> None:
        self.server.close()

    # --- HTTP ----------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.method == "POST" and request.path == "/v1/oauth2/token":
            return self._token(request)
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if bearer not in self.tokens:
            return Response(
                401, {"error": "invalid_token", "error_description": "Access Token not found in cache"}
            )
        request_id = request.headers.get("paypal-request-id", "")
        if request.method == "POST" and request_id:
            key = (request.path, request_id)
            if key in self._by_request_id:
                replay = self._by_request_id[key]
                return Response(200 if replay.status == 201 else replay.status, replay.body)
            response = self._route(request)
            if response.status < 500:
                self._by_request_id[key] = response
            return response
        return self._route(request)

    def _token(self, request: Request) -> Response:
        expected = base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()
        form = parse_qs(request.body.decode())
        if request.headers.get("authorization") != f"Basic {expected}":
            return Response(
                401, {"error": "invalid_client", "error_description": "Client Authentication failed"}
            )
        if form.get("grant_type") != ["client_credentials"]:
            return Response(
                400, {"error": "unsupported_grant_type", "error_description": "Grant Type is NULL"}
            )
        token = "A21AA" + secrets.token_urlsafe(24)
        self.tokens.add(token)
        return Response(
            200,
            {
                "scope": "https://uri.paypal.com/services/payments/payment",
                "access_token": token,
                "token_type": "Bearer",
                "app_id": "APP-80W284485P519543T",
                "expires_in": self.token_lifetime_seconds,
                "nonce": f"{_now()}{secrets.token_hex(8)}",
            },
        )

    def _route(self, request: Request) -> Response:
        path, method = request.path, request.method
        if method == "POST" and path == "/v2/checkout/orders":
            return self._create_order(request.json() or {})
        if match := re.fullmatch(r"/v2/checkout/orders/([A-Z0-9]+)", path):
            order = self.orders.get(match[1])
            if method != "GET" or order is None:
                return _error(
                    404, "RESOURCE_NOT_FOUND", "The specified resource does not exist.", "INVALID_RESOURCE_ID"
                )
            return Response(200, self.order(match[1]))
        if method == "POST" and (match := re.fullmatch(r"/v2/checkout/orders/([A-Z0-9]+)/capture", path)):
            return self._capture(match[1])
        if match := re.fullmatch(r"/v2/payments/captures/([A-Z0-9]+)", path):
            if method != "GET" or match[1] not in self.captures:
                return _error(
                    404, "RESOURCE_NOT_FOUND", "The specified resource does not exist.", "INVALID_RESOURCE_ID"
                )
            return Response(200, self.capture(match[1]))
        if method == "POST" and (match := re.fullmatch(r"/v2/payments/captures/([A-Z0-9]+)/refund", path)):
            return self._refund(match[1], request.json() or {})
        if method == "POST" and path == "/v1/notifications/verify-webhook-signature":
            return self._verify(request.json() or {})
        return _error(404, "RESOURCE_NOT_FOUND", "The specified resource does not exist.")

    def _create_order(self, body: dict[str, Any]) -> Response:
        units = body.get("purchase_units") or []
        if body.get("intent") != "CAPTURE" or len(units) != 1 or "amount" not in units[0]:
            return _error(400, "INVALID_REQUEST", "Request is not well-formed.", "MISSING_REQUIRED_PARAMETER")
        amount = units[0]["amount"]
        if (
            not re.fullmatch(r"\d+(\.\d{2})?", str(amount.get("value")))
            or len(amount.get("currency_code", "")) != 3
        ):
            return _error(
                422,
                "UNPROCESSABLE_ENTITY",
                "The requested action could not be performed.",
                "DECIMAL_PRECISION",
            )
        order_id = _new_id()
        experience = ((body.get("payment_source") or {}).get("paypal") or {}).get("experience_context")
        links = [{"href": f"{self.url}/v2/checkout/orders/{order_id}", "rel": "self", "method": "GET"}]
        if experience:
            status = "PAYER_ACTION_REQUIRED"
            links.append(
                {
                    "href": f"https://www.paypal.com/checkoutnow?token={order_id}",
                    "rel": "payer-action",
                    "method": "GET",
                }
            )
        else:
            status = "CREATED"
            links.append(
                {
                    "href": f"https://www.paypal.com/checkoutnow?token={order_id}",
                    "rel": "approve",
                    "method": "GET",
                }
            )
        self.orders[order_id] = {
            "id": order_id,
            "intent": "CAPTURE",
            "status": status,
            "purchase_units": [{"reference_id": "default", **copy.deepcopy(units[0])}],
            "create_time": _now(),
            "links": links,
            "_experience": experience or body.get("application_context") or {},
        }
        return Response(201, self.order(order_id))

    def _capture(self, order_id: str) -> Response:
        order = self.orders.get(order_id)
        if order is None:
            return _error(
                404, "RESOURCE_NOT_FOUND", "The specified resource does not exist.", "INVALID_RESOURCE_ID"
            )
        if order["status"] == "COMPLETED":
            return _error(
                422, "UNPROCESSABLE_ENTITY", "The order was already captured.", "ORDER_ALREADY_CAPTURED"
            )
        if order["status"] != "APPROVED":
            return _error(
                422, "UNPROCESSABLE_ENTITY", "The payer has not approved the order.", "ORDER_NOT_APPROVED"
            )
        if self.next_capture == "decline":
            return _error(
                422, "UNPROCESSABLE_ENTITY", "The instrument presented was declined.", "INSTRUMENT_DECLINED"
            )
        unit = order["purchase_units"][0]
        capture_id = _new_id()
        unit["payments"] = {
            "captures": [
                {
                    "id": capture_id,
                    "status": "PENDING" if self.next_capture == "pending" else "COMPLETED",
                    "amount": copy.deepcopy(unit["amount"]),
                    "final_capture": True,
                    "custom_id": unit.get("custom_id"),
                    "create_time": _now(),
                    "update_time": _now(),
                    "links": [
                        {
                            "href": f"{self.url}/v2/payments/captures/{capture_id}",
                            "rel": "self",
                            "method": "GET",
                        },
                        {"href": f"{self.url}/v2/checkout/orders/{order_id}", "rel": "up", "method": "GET"},
                    ],
                }
            ]
        }
        order["status"] = "COMPLETED"
        self.captures[capture_id] = order_id
        return Response(201, self.order(order_id))

    def _refund(self, capture_id: str, body: dict[str, Any]) -> Response:
        if capture_id not in self.captures:
            return _error(
                404, "RESOURCE_NOT_FOUND", "The specified resource does not exist.", "INVALID_RESOURCE_ID"
            )
        capture = self._capture_record(capture_id)
        payments = self.orders[self.captures[capture_id]]["purchase_units"][0]["payments"]
        refunds = payments.setdefault("refunds", [])
        captured = Decimal(capture["amount"]["value"])
        refunded = sum((Decimal(r["amount"]["value"]) for r in refunds), Decimal(0))
        amount = Decimal((body.get("amount") or {}).get("value") or captured - refunded)
        if refunded >= captured:
            return _error(
                422,
                "UNPROCESSABLE_ENTITY",
                "Capture has already been fully refunded.",
                "CAPTURE_FULLY_REFUNDED",
            )
        if amount > captured - refunded:
            return _error(
                422, "UNPROCESSABLE_ENTITY", "The refund amount is too large.", "REFUND_AMOUNT_EXCEEDED"
            )
        currency = capture["amount"]["currency_code"]
        refund_id = _new_id()
        refund = {
            "id": refund_id,
            "status": "COMPLETED",
            "amount": {"currency_code": currency, "value": f"{amount:.2f}"},
            "seller_payable_breakdown": {
                "total_refunded_amount": {"currency_code": currency, "value": f"{refunded + amount:.2f}"}
            },
            "create_time": _now(),
            "update_time": _now(),
            "links": [
                {"href": f"{self.url}/v2/payments/refunds/{refund_id}", "rel": "self", "method": "GET"},
                {"href": f"{self.url}/v2/payments/captures/{capture_id}", "rel": "up", "method": "GET"},
            ],
        }
        refunds.append(refund)
        capture["status"] = "REFUNDED" if refunded + amount >= captured else "PARTIALLY_REFUNDED"
        return Response(201, copy.deepcopy(refund))

    def _verify(self, body: dict[str, Any]) -> Response:
        required = (
            "auth_algo",
            "cert_url",
            "transmission_id",
            "transmission_sig",
            "transmission_time",
            "webhook_id",
        )
        missing = [name for name in (*required, "webhook_event") if not body.get(name)]
        if missing:
            return _error(
                400,
                "VALIDATION_ERROR",
                "Invalid request - see details.",
                *["MISSING_REQUIRED_PARAMETER"] * len(missing),
            )
        expected = _signature(
            body["transmission_id"], body["transmission_time"], body["webhook_id"], body["webhook_event"]
        )
        good = (
            body["webhook_id"] == WEBHOOK_ID
            and body["auth_algo"] == "SHA256withRSA"
            and body["cert_url"].startswith("https://api.paypal.com/")
            and hmac.compare_digest(expected, body["transmission_sig"])
        )
        return Response(200, {"verification_status": "SUCCESS" if good else "FAILURE"})

    # --- views of the state --------------------------------------------------------------

    def order(self, order_id: str) -> dict[str, Any]:
        return {
            key: value
            for key, value in copy.deepcopy(self.orders[order_id]).items()
            if not key.startswith("_")
        }

    def _capture_record(self, capture_id: str) -> dict[str, Any]:
        unit = self.orders[self.captures[capture_id]]["purchase_units"][0]
        return next(c for c in unit["payments"]["captures"] if c["id"] == capture_id)

    def capture(self, capture_id: str) -> dict[str, Any]:
        """A capture as GET /v2/payments/captures/{id} and capture webhooks show it."""
        shown = copy.deepcopy(self._capture_record(capture_id))
        shown["supplementary_data"] = {"related_ids": {"order_id": self.captures[capture_id]}}
        return shown

    def capture_id_of(self, order_id: str) -> str:
        return self.orders[order_id]["purchase_units"][0]["payments"]["captures"][0]["id"]

    # --- what the payer and PayPal do ------------------------------------------------------

    def approve(self, order_id: str) -> dict[str, Any]:
        """The payer approves on PayPal's page."""
        order = self.orders[order_id]
        order["status"] = "APPROVED"
        order["payer"] = {"payer_id": "QYR5Z8XDVJNXQ", "email_address": "payer@example.com"}
        return self.order(order_id)

    def void(self, order_id: str) -> None:
        self.orders[order_id]["status"] = "VOIDED"

    def settle_capture(self, capture_id: str, status: str) -> dict[str, Any]:
        """A pending capture clears ("COMPLETED") or is denied ("DECLINED")."""
        self._capture_record(capture_id)["status"] = status
        return self.capture(capture_id)

    def event(self, event_type: str, resource: dict[str, Any], *, event_id: str = "") -> dict[str, Any]:
        resource_type = {"CHECKOUT": "checkout-order", "PAYMENT.CAPTURE.REFUNDED": "refund"}
        kind = next((v for k, v in resource_type.items() if event_type.startswith(k)), "capture")
        return {
            "id": event_id or f"WH-{_new_id()}-{_new_id()}",
            "event_version": "1.0",
            "create_time": _now(),
            "resource_type": kind,
            "resource_version": "2.0",
            "event_type": event_type,
            "summary": event_type.replace(".", " ").lower(),
            "resource": resource,
            "links": [],
        }

    def signed_headers(
        self, event: dict[str, Any], *, transmission_time: str = "", webhook_id: str = WEBHOOK_ID
    ) -> dict[str, str]:
        """The transmission headers PayPal sends with a webhook delivery."""
        transmission_id = secrets.token_hex(16)
        transmission_time = transmission_time or _now()
        return {
            "paypal-transmission-id": transmission_id,
            "paypal-transmission-time": transmission_time,
            "paypal-transmission-sig": _signature(transmission_id, transmission_time, webhook_id, event),
            "paypal-cert-url": "https://api.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-fake",
            "paypal-auth-algo": "SHA256withRSA",
        }
