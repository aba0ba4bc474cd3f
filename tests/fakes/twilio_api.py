"""A fake Twilio REST API: the Messages resource that the Twilio SMS provider uses.

Documented shape (API version 2010-04-01):

    POST /2010-04-01/Accounts/{AccountSid}/Messages.json
        HTTP basic auth with the Account SID and the Auth Token;
        form-encoded To, Body, and From or MessagingServiceSid.
    201 → the Message resource as JSON: "sid": "SM…", "status": "queued" (or "accepted"
          when a Messaging Service picks the sender).
    Errors → {"code", "message", "more_info", "status"}: 401 code 20003 (bad credentials),
          404 code 20404, 400 code 21211 (invalid 'To'), 21602 (no Body), 21603 (no From).

``path_prefix`` serves the same API under a prefix, as a relay in front of Twilio would.
"""

from __future__ import annotations

import base64
import re
import secrets
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs

from tests.fakes import FakeServer, Request, Response

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "fake-twilio-auth-token"
# Twilio's test-credential magic number for "invalid 'To'"; this fake refuses it the same way.
INVALID_NUMBER = "+15005550001"
_MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<account_sid>AC[0-9a-f]{32})/Messages\.json$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")


def _error(status: int, code: int, message: str) -> Response:
    return Response(
        status,
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
    )


class FakeTwilio:
    def __init__(self, *, path_prefix: str = "") -> None:
        self.path_prefix = path_prefix
        self.messages: list[dict[str, Any]] = []
        # Answer the next requests with this status instead (an outage: 500, 503).
        self.failing_status: int | None = None
        self.server = FakeServer(self.handle)
        self.url = self.server.url + path_prefix

    def close(self) -> None:
        self.server.close()

    def message_requests(self) -> list[Request]:
        return [r for r in self.server.requests if r.path.endswith("/Messages.json")]

    def handle(self, request: Request) -> Response:
        if self.failing_status is not None:
            return _error(self.failing_status, 20500, "An internal server error has occurred")
        expected = base64.b64encode(f"{ACCOUNT_SID}:{AUTH_TOKEN}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return _error(401, 20003, "Authenticate")
        match = _MESSAGES_PATH.match(request.path.removeprefix(self.path_prefix))
        if (
            request.method != "POST"
            or not request.path.startswith(self.path_prefix)
            or match is None
            or match["account_sid"] != ACCOUNT_SID
        ):
            return _error(404, 20404, f"The requested resource {request.path} was not found")
        return self._create_message(parse_qs(request.body.decode(), keep_blank_values=True))

    def _create_message(self, form: dict[str, list[str]]) -> Response:
        to = form.get("To", [""])[0]
        body = form.get("Body", [""])[0]
        sender = form.get("From", [""])[0]
        messaging_service_sid = form.get("MessagingServiceSid", [""])[0]
        if not _E164.match(to) or to == INVALID_NUMBER:
            return _error(400, 21211, f"Invalid 'To' Phone Number: {to}")
        if not body:
            return _error(400, 21602, "Message body is required.")
        if not sender and not messaging_service_sid:
            return _error(400, 21603, "A 'From' or 'MessagingServiceSid' parameter is required.")
        sid = "SM" + secrets.token_hex(16)
        now = format_datetime(datetime.now(UTC), usegmt=True)
        message = {
            "account_sid": ACCOUNT_SID,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender or None,
            "messaging_service_sid": messaging_service_sid or None,
            "num_media": "0",
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "queued" if sender else "accepted",
            "subresource_uris": {"media": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}/Media.json"},
            "to": to,
            "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json",
        }
        self.messages.append(message)
        return Response(201, message)
