"""A fake SMS gateway for the generic HTTP provider: ``POST /v1/messages`` with JSON
``{"to", "from", "text", "reference"}``, a bearer token, and an ``X-Airtime-Signature``
header that it checks with the shared secret. Answers 202 ``{"id": "gw-…"}``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from tests.fakes import FakeServer, Request, Response

MESSAGES_PATH = "/v1/messages"
TOKEN = "fake-gateway-token"
SIGNING_SECRET = "fake-gateway-signing-secret"


class FakeSmsGateway:
    def __init__(self, *, token: str = TOKEN, signing_secret: str = SIGNING_SECRET) -> None:
        self.token = token
        self.signing_secret = signing_secret
        self.messages: list[dict[str, Any]] = []
        # Answer the next requests with this instead (an outage, a refusal, an answer with no id).
        self.next_response: Response | None = None
        self.server = FakeServer(self.handle)
        self.url = self.server.url + MESSAGES_PATH

    def close(self) -> None:
        self.server.close()

    def handle(self, request: Request) -> Response:
        if request.method != "POST" or request.path != MESSAGES_PATH:
            return Response(404, {"error": "not_found"})
        if self.next_response is not None:
            return self.next_response
        if self.token and request.headers.get("authorization") != f"Bearer {self.token}":
            return Response(401, {"error": "unauthorized"})
        if self.signing_secret:
            expected = (
                "sha256=" + hmac.new(self.signing_secret.encode(), request.body, hashlib.sha256).hexdigest()
            )
            if not hmac.compare_digest(request.headers.get("x-airtime-signature", ""), expected):
                return Response(401, {"error": "bad_signature"})
        message = request.json()
        if not isinstance(message, dict) or set(message) != {"to", "from", "text", "reference"}:
            return Response(400, {"error": "invalid_request"})
        message_id = "gw-" + secrets.token_hex(8)
        self.messages.append({**message, "id": message_id})
        return Response(202, {"id": message_id, "status": "accepted"})
