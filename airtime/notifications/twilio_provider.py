"""SMS through Twilio's Messages API, with Twilio's own Python SDK."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from airtime.config import Settings
from airtime.notifications.models import Notification
from airtime.notifications.providers import DeliveryFailed

# Twilio error codes that no retry can fix: 21211 invalid 'To' number, 21610 the recipient
# replied STOP, 21614 'To' is not a mobile number.
TWILIO_PERMANENT_ERROR_CODES = frozenset({21211, 21610, 21614})
MESSAGING_SERVICE_SID_PREFIX = "MG"


class RebasedTwilioHttpClient(TwilioHttpClient):  # type: ignore[misc]  # the SDK has no type hints
    """Sends every request the SDK makes to ``base_url`` instead of ``https://api.twilio.com``.

    A custom ``http_client`` is the SDK's documented way to change its requests (proxies,
    timeouts); the SDK's ``edge`` and ``region`` options only pick another ``*.twilio.com``
    host, so they cannot reach a relay or a local stand-in.
    """

    def __init__(self, base_url: str, *, timeout_seconds: float) -> None:
        super().__init__(timeout=timeout_seconds)
        self.base = urlsplit(base_url.rstrip("/"))

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(url)
        rebased = parts._replace(
            scheme=self.base.scheme, netloc=self.base.netloc, path=self.base.path + parts.path
        )
        return super().request(method, urlunsplit(rebased), *args, **kwargs)


class TwilioSmsProvider:
    """Hands each SMS to Twilio and returns its message SID (``SM…``)."""

    name = "twilio"

    def __init__(self, settings: Settings) -> None:
        http_client = (
            RebasedTwilioHttpClient(
                settings.twilio_api_base_url, timeout_seconds=settings.twilio_timeout_seconds
            )
            if settings.twilio_api_base_url
            else TwilioHttpClient(timeout=settings.twilio_timeout_seconds)
        )
        self.client = Client(settings.twilio_account_sid, settings.twilio_auth_token, http_client=http_client)
        # A Messaging Service lets Twilio choose the sending number from its pool.
        if settings.twilio_from.startswith(MESSAGING_SERVICE_SID_PREFIX):
            self.sender: dict[str, str] = {"messaging_service_sid": settings.twilio_from}
        else:
            self.sender = {"from_": settings.twilio_from}

    def send(self, notification: Notification) -> str:
        try:
            message = self.client.messages.create(
                to=notification.recipient, body=notification.body_text, **self.sender
            )
        except TwilioRestException as exc:
            raise DeliveryFailed(
                f"Twilio answered HTTP {exc.status}, error {exc.code}: {exc.msg}",
                permanent=exc.code in TWILIO_PERMANENT_ERROR_CODES,
            ) from exc
        except TwilioServiceException as exc:
            raise DeliveryFailed(
                f"Twilio answered HTTP {exc.status}, error {exc.code}: {exc.detail or exc.title}",
                permanent=exc.code in TWILIO_PERMANENT_ERROR_CODES,
            ) from exc
        return str(message.sid)
