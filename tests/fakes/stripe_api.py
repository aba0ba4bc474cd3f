"""A fake Stripe API: Checkout Sessions, PaymentIntents, charges and refunds, in memory.

Speaks what the official SDK sends and reads (form-encoded requests with ``a[b][0]=c``
keys, Bearer secret keys, Idempotency-Key replay, JSON objects and ``{"error": {...}}``
bodies), for the endpoints the Stripe provider uses:

    POST /v1/checkout/sessions            GET /v1/checkout/sessions?payment_intent=...
    GET  /v1/checkout/sessions/{id}       (expand[]=payment_intent[.latest_charge])
    POST /v1/refunds
    POST /v1/customers                    (for saved payment methods)
    POST /v1/checkout/sessions mode=setup GET /v1/checkout/sessions/{id}?expand[]=setup_intent.payment_method
    POST /v1/payment_intents              (customer + payment_method, off_session, confirm)
    GET  /v1/payment_intents/{id}         (expand[]=latest_charge)

Test helpers stand in for the customer and Stripe's side: ``pay``, ``expire`` and
``event`` (an event body as Stripe would deliver it; tests sign it with the SDK), and
``save_card`` (the customer enters a card on a setup-mode page). Saved cards answer
off-session charges as Stripe's test cards do: 4242 pays, 0341 is declined.
"""

from __future__ import annotations

import copy
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qs

from tests.fakes import FakeServer, Request, Response

SECRET_KEY = "sk_test_fake_0123456789"
WEBHOOK_SECRET = "whsec_fake_0123456789abcdef"
API_VERSION = "2026-01-01"
_KEY_PART = re.compile(r"([^\[\]]+)|\[([^\]]*)\]")


def decode_form(pairs: dict[str, list[str]]) -> dict[str, Any]:
    """Stripe's form encoding back to nested values: ``a[b][0]=c`` → ``{"a": {"b": ["c"]}}``."""
    root: dict[str, Any] = {}
    for key, values in pairs.items():
        parts = [plain or bracketed for plain, bracketed in _KEY_PART.findall(key)]
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = values[-1]

    def listify(value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        converted = {key: listify(item) for key, item in value.items()}
        if converted and all(key.isdigit() for key in converted):
            return [converted[key] for key in sorted(converted, key=int)]
        return converted

    return listify(root)


def _new_id(prefix: str) -> str:
    return f"{prefix}_test_{secrets.token_hex(12)}"


def _error(status: int, message: str, *, code: str = "", kind: str = "invalid_request_error") -> Response:
    return Response(status, {"error": {"type": kind, "code": code or None, "message": message}})


class FakeStripe:
    def __init__(self) -> None:
        self.sessions: dict[str, dict[str, Any]] = {}
        self.payment_intents: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.customers: dict[str, dict[str, Any]] = {}
        self.setup_intents: dict[str, dict[str, Any]] = {}
        self.payment_methods: dict[str, dict[str, Any]] = {}
        self._idempotent: dict[str, tuple[str, Any, Response]] = {}
        self.server = FakeServer(self.handle)
        self.url = self.server.url

    def close(self) -> None:
        self.server.close()

    # --- HTTP ----------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {SECRET_KEY}":
            return _error(401, "Invalid API Key provided.")
        params = decode_form(request.query)
        if request.method == "POST":
            params = decode_form(parse_qs(request.body.decode(), keep_blank_values=True))
            key = request.headers.get("idempotency-key")
            if key:
                seen = self._idempotent.get(key)
                if seen is not None:
                    if seen[:2] != (request.path, params):
                        return _error(
                            400,
                            "Keys for idempotent requests can only be used with the same parameters.",
                            kind="idempotency_error",
                        )
                    return seen[2]
                response = self._route(request, params)
                self._idempotent[key] = (request.path, params, response)
                return response
        return self._route(request, params)

    def _route(self, request: Request, params: dict[str, Any]) -> Response:
        path = request.path
        if request.method == "POST" and path == "/v1/checkout/sessions":
            if params.get("mode") == "setup":
                return self._create_setup_session(params)
            return self._create_session(params)
        if request.method == "POST" and path == "/v1/customers":
            customer = {
                "id": _new_id("cus"),
                "object": "customer",
                "email": params.get("email"),
                "created": int(time.time()),
                "livemode": False,
            }
            self.customers[customer["id"]] = customer
            return Response(200, customer)
        if request.method == "POST" and path == "/v1/payment_intents":
            return self._create_payment_intent(params)
        match = re.fullmatch(r"/v1/payment_intents/([^/]+)", path)
        if request.method == "GET" and match:
            intent = self.payment_intents.get(match[1])
            if intent is None:
                return _error(404, f"No such payment_intent: '{match[1]}'", code="resource_missing")
            shown = copy.deepcopy(intent)
            if "latest_charge" in (params.get("expand") or []) and shown.get("latest_charge"):
                shown["latest_charge"] = copy.deepcopy(self.charges[shown["latest_charge"]])
            return Response(200, shown)
        if request.method == "GET" and path == "/v1/checkout/sessions":
            found = [
                self._expanded(session, params.get("expand") or [])
                for session in self.sessions.values()
                if session["payment_intent"] == params.get("payment_intent")
            ]
            return Response(
                200,
                {
                    "object": "list",
                    "url": "/v1/checkout/sessions",
                    "has_more": False,
                    "data": found[: int(params.get("limit", 10))],
                },
            )
        match = re.fullmatch(r"/v1/checkout/sessions/([^/]+)", path)
        if request.method == "GET" and match:
            session = self.sessions.get(match[1])
            if session is None:
                return _error(404, f"No such checkout.session: '{match[1]}'", code="resource_missing")
            return Response(200, self._expanded(session, params.get("expand") or []))
        if request.method == "POST" and path == "/v1/refunds":
            return self._create_refund(params)
        return _error(404, f"Unrecognized request URL ({request.method}: {path}).")

    def _create_session(self, params: dict[str, Any]) -> Response:
        items = params.get("line_items") or []
        if params.get("mode") != "payment" or len(items) != 1 or "price_data" not in items[0]:
            return _error(400, "This fake takes one price_data line item in payment mode.")
        for required in ("success_url", "cancel_url"):
            if not params.get(required):
                return _error(400, f"Missing required param: {required}.", code="parameter_missing")
        price = items[0]["price_data"]
        amount = int(price["unit_amount"]) * int(items[0].get("quantity", 1))
        session_id = _new_id("cs")
        now = int(time.time())
        session = {
            "id": session_id,
            "object": "checkout.session",
            "amount_subtotal": amount,
            "amount_total": amount,
            "cancel_url": params["cancel_url"],
            "client_reference_id": params.get("client_reference_id"),
            "created": now,
            "currency": price["currency"],
            "customer_email": params.get("customer_email"),
            "expires_at": now + 24 * 3600,
            "livemode": False,
            "metadata": params.get("metadata") or {},
            "mode": "payment",
            "payment_intent": None,
            "payment_method_types": ["card"],
            "payment_status": "unpaid",
            "status": "open",
            "success_url": params["success_url"],
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
            "_params": params,
            "_payment_intent_data": params.get("payment_intent_data") or {},
            "_product": price.get("product_data") or {},
        }
        self.sessions[session_id] = session
        return Response(200, self._public(session))

    def _create_setup_session(self, params: dict[str, Any]) -> Response:
        for required in ("success_url", "cancel_url", "customer"):
            if not params.get(required):
                return _error(400, f"Missing required param: {required}.", code="parameter_missing")
        if params["customer"] not in self.customers:
            return _error(400, f"No such customer: '{params['customer']}'", code="resource_missing")
        if not params.get("currency") and not params.get("allowed_payment_method_types"):
            return _error(400, "currency is required in setup mode.", code="parameter_missing")
        session_id = _new_id("cs")
        now = int(time.time())
        session = {
            "id": session_id,
            "object": "checkout.session",
            "cancel_url": params["cancel_url"],
            "created": now,
            "currency": params.get("currency"),
            "customer": params["customer"],
            "expires_at": now + 24 * 3600,
            "livemode": False,
            "metadata": params.get("metadata") or {},
            "mode": "setup",
            "payment_intent": None,
            "payment_status": "no_payment_required",
            "setup_intent": None,
            "status": "open",
            "success_url": params["success_url"],
            "url": f"https://checkout.stripe.com/c/setup/{session_id}",
        }
        self.sessions[session_id] = session
        return Response(200, self._public(session))

    def _create_payment_intent(self, params: dict[str, Any]) -> Response:
        method = self.payment_methods.get(params.get("payment_method", ""))
        if method is None:
            return _error(400, "No such PaymentMethod.", code="resource_missing")
        if method["customer"] != params.get("customer"):
            return _error(
                400, "The PaymentMethod does not belong to this customer.", code="payment_method_invalid"
            )
        if params.get("confirm") != "true" or params.get("off_session") != "true":
            return _error(400, "This fake takes confirm=true and off_session=true only.")
        intent_id, charge_id = _new_id("pi"), _new_id("ch")
        declined = method["card"]["last4"] == "0341"
        amount = int(params["amount"])
        intent = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "currency": params["currency"],
            "customer": params["customer"],
            "description": params.get("description"),
            "latest_charge": charge_id,
            "metadata": params.get("metadata") or {},
            "payment_method": method["id"],
            "payment_method_types": ["card"],
            "status": "requires_payment_method" if declined else "succeeded",
        }
        self.payment_intents[intent_id] = intent
        self.charges[charge_id] = {
            "id": charge_id,
            "object": "charge",
            "amount": amount,
            "amount_refunded": 0,
            "currency": params["currency"],
            "metadata": intent["metadata"],
            "paid": not declined,
            "payment_intent": intent_id,
            "payment_method_details": {"type": "card"},
            "refunded": False,
            "status": "failed" if declined else "succeeded",
        }
        if declined:
            return Response(
                402,
                {
                    "error": {
                        "type": "card_error",
                        "code": "card_declined",
                        "decline_code": "generic_decline",
                        "message": "Your card was declined.",
                        "charge": charge_id,
                        "payment_intent": copy.deepcopy(intent),
                    }
                },
            )
        return Response(200, copy.deepcopy(intent))

    def _create_refund(self, params: dict[str, Any]) -> Response:
        intent = self.payment_intents.get(params.get("payment_intent", ""))
        if intent is None:
            return _error(404, "No such payment_intent.", code="resource_missing")
        charge = self.charges[intent["latest_charge"]]
        remaining = charge["amount"] - charge["amount_refunded"]
        amount = int(params.get("amount", remaining))
        if remaining == 0:
            return _error(
                400, f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded"
            )
        if amount > remaining:
            return _error(
                400, "Refund amount is greater than unrefunded amount on charge.", code="amount_too_large"
            )
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        refund = {
            "id": _new_id("re"),
            "object": "refund",
            "amount": amount,
            "charge": charge["id"],
            "currency": charge["currency"],
            "metadata": params.get("metadata") or {},
            "payment_intent": intent["id"],
            "status": "succeeded",
            "created": int(time.time()),
        }
        self.refunds[refund["id"]] = refund
        return Response(200, refund)

    def _public(self, session: dict[str, Any]) -> dict[str, Any]:
        return {key: value for key, value in copy.deepcopy(session).items() if not key.startswith("_")}

    def _expanded(self, session: dict[str, Any], expand: list[str]) -> dict[str, Any]:
        shown = self._public(session)
        if shown.get("setup_intent") and any(path.startswith("setup_intent") for path in expand):
            setup = copy.deepcopy(self.setup_intents[shown["setup_intent"]])
            if "setup_intent.payment_method" in expand:
                setup["payment_method"] = copy.deepcopy(self.payment_methods[setup["payment_method"]])
            shown["setup_intent"] = setup
        if shown["payment_intent"] and any(path.startswith("payment_intent") for path in expand):
            intent = copy.deepcopy(self.payment_intents[shown["payment_intent"]])
            if "payment_intent.latest_charge" in expand:
                intent["latest_charge"] = copy.deepcopy(self.charges[intent["latest_charge"]])
            shown["payment_intent"] = intent
        return shown

    # --- what the customer and Stripe do ---------------------------------------------------

    def pay(self, session_id: str, *, payment_status: str = "paid", method: str = "card") -> dict[str, Any]:
        """The customer pays on the hosted page; returns the session as Stripe now shows it."""
        session = self.sessions[session_id]
        intent_id, charge_id = _new_id("pi"), _new_id("ch")
        metadata = session["_payment_intent_data"].get("metadata") or {}
        self.payment_intents[intent_id] = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": session["amount_total"],
            "currency": session["currency"],
            "latest_charge": charge_id,
            "metadata": metadata,
            "payment_method_types": [method],
            "status": "succeeded" if payment_status == "paid" else "processing",
        }
        self.charges[charge_id] = {
            "id": charge_id,
            "object": "charge",
            "amount": session["amount_total"],
            "amount_refunded": 0,
            "currency": session["currency"],
            "metadata": metadata,
            "paid": payment_status == "paid",
            "payment_intent": intent_id,
            "payment_method_details": {"type": method},
            "refunded": False,
            "status": "succeeded" if payment_status == "paid" else "pending",
        }
        session.update(
            status="complete",
            payment_status=payment_status,
            payment_intent=intent_id,
            payment_method_types=[method],
        )
        return self._public(session)

    def save_card(self, session_id: str, *, last4: str = "4242", brand: str = "visa") -> dict[str, Any]:
        """The customer enters a card on a setup-mode page; it is kept on the session's customer."""
        session = self.sessions[session_id]
        method_id, setup_id = _new_id("pm"), _new_id("seti")
        self.payment_methods[method_id] = {
            "id": method_id,
            "object": "payment_method",
            "type": "card",
            "card": {"brand": brand, "last4": last4, "exp_month": 12, "exp_year": 2030},
            "customer": session["customer"],
        }
        self.setup_intents[setup_id] = {
            "id": setup_id,
            "object": "setup_intent",
            "customer": session["customer"],
            "payment_method": method_id,
            "status": "succeeded",
            "usage": "off_session",
        }
        session.update(status="complete", setup_intent=setup_id)
        return self._public(session)

    def expire(self, session_id: str) -> dict[str, Any]:
        self.sessions[session_id].update(status="expired")
        return self._public(self.sessions[session_id])

    def charge_of(self, session_id: str) -> dict[str, Any]:
        intent = self.payment_intents[self.sessions[session_id]["payment_intent"]]
        return copy.deepcopy(self.charges[intent["latest_charge"]])

    def event(self, event_type: str, data_object: dict[str, Any], *, event_id: str = "") -> dict[str, Any]:
        """An event as Stripe delivers it to a webhook endpoint."""
        return {
            "id": event_id or _new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": {"object": data_object},
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
