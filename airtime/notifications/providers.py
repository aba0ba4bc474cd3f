"""Where messages go: a readable outbox folder (default), a real SMTP server, Twilio, or an
SMS gateway that takes JSON over HTTP."""

from __future__ import annotations

import hashlib
import hmac
import json
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Protocol

import httpx

from airtime import __version__
from airtime.config import Settings
from airtime.notifications.models import Notification

SIGNATURE_HEADER = "X-Airtime-Signature"
# Gateway answers that say the request itself is wrong: sending it again cannot help.
HTTP_PERMANENT_STATUSES = frozenset({400, 422})
GATEWAY_ERROR_TEXT_CHARS_MAX = 200


class Provider(Protocol):
    name: str

    def send(self, notification: Notification) -> str:
        """Deliver one message; return the provider's message id. Raise on failure."""


class DeliveryFailed(Exception):
    """A provider refused a message or answered with an error.

    ``permanent`` says that sending the same message again cannot succeed (an invalid
    number, a recipient who opted out): the sender marks such a message failed at once
    instead of retrying it up to its attempt limit.
    """

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def _email_message(notification: Notification, sender: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = notification.recipient
    message["Subject"] = notification.subject
    message["Message-ID"] = make_msgid(domain="airtime.local")
    message.set_content(notification.body_text)
    if notification.body_html:
        message.add_alternative(notification.body_html, subtype="html")
    return message


class OutboxEmailProvider:
    """Writes each email as an ``.eml`` file a person can open; the demo's default."""

    name = "outbox"

    def __init__(self, directory: Path, sender: str) -> None:
        self.directory = directory / "email"
        self.sender = sender

    def send(self, notification: Notification) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        message = _email_message(notification, self.sender)
        path = self.directory / f"{notification.id:08d}.eml"
        path.write_bytes(bytes(message))
        return str(path)


class OutboxSmsProvider:
    name = "outbox"

    def __init__(self, directory: Path) -> None:
        self.directory = directory / "sms"

    def send(self, notification: Notification) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{notification.id:08d}.txt"
        path.write_text(f"To: {notification.recipient}\n\n{notification.body_text}", encoding="utf-8")
        return str(path)


class SmtpEmailProvider:
    """Sends through an SMTP server, with STARTTLS or implicit TLS and optional login."""

    name = "smtp"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def send(self, notification: Notification) -> str:
        settings = self.settings
        message = _email_message(notification, settings.email_from)
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if settings.smtp_ssl:
            client = smtplib.SMTP_SSL(
                settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds, context=context
            )
        else:
            client = smtplib.SMTP(
                settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_seconds
            )
        with client:
            if settings.smtp_starttls and not settings.smtp_ssl:
                client.starttls(context=context)
            if settings.smtp_username:
                client.login(settings.smtp_username, settings.smtp_password)
            client.send_message(message)
        return str(message["Message-ID"])


def sign_body(secret: str, body: bytes) -> str:
    """The ``X-Airtime-Signature`` value: hex HMAC-SHA256 of the exact body bytes sent."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class HttpSmsProvider:
    """POSTs each SMS as JSON to a gateway; any 2xx answer means the gateway took it.

    The notification id goes along as ``reference`` so that a gateway can drop a message
    it already took, when a send is retried after an answer that was lost.
    """

    name = "http"

    def __init__(self, settings: Settings) -> None:
        self.url = settings.sms_http_url
        self.sender = settings.sms_http_from
        self.signing_secret = settings.sms_http_signing_secret
        headers = {"Content-Type": "application/json", "User-Agent": f"airtime/{__version__}"}
        if settings.sms_http_token:
            headers["Authorization"] = f"Bearer {settings.sms_http_token}"
        self.http = httpx.Client(headers=headers, timeout=settings.sms_http_timeout_seconds)

    def send(self, notification: Notification) -> str:
        reference = str(notification.id)
        body = json.dumps(
            {
                "to": notification.recipient,
                "from": self.sender,
                "text": notification.body_text,
                "reference": reference,
            }
        ).encode()
        headers = {SIGNATURE_HEADER: sign_body(self.signing_secret, body)} if self.signing_secret else {}
        # Timeouts and refused connections raise httpx errors, which the sender retries.
        response = self.http.post(self.url, content=body, headers=headers)
        if not response.is_success:
            raise DeliveryFailed(
                f"SMS gateway answered HTTP {response.status_code}: "
                f"{response.text[:GATEWAY_ERROR_TEXT_CHARS_MAX]}",
                permanent=response.status_code in HTTP_PERMANENT_STATUSES,
            )
        try:
            answer = response.json()
        except ValueError:
            return reference
        message_id = answer.get("id") if isinstance(answer, dict) else None
        return str(message_id) if message_id not in (None, "") else reference


def providers_from_settings(settings: Settings) -> dict[str, Provider]:
    """The provider per channel that the settings choose."""
    email: Provider
    if settings.email_provider == "smtp":
        email = SmtpEmailProvider(settings)
    else:
        email = OutboxEmailProvider(settings.outbox_dir, settings.email_from)
    sms: Provider
    if settings.sms_provider == "twilio":
        # Imported here so that processes not sending through Twilio skip loading its SDK.
        from airtime.notifications.twilio_provider import TwilioSmsProvider

        sms = TwilioSmsProvider(settings)
    elif settings.sms_provider == "http":
        sms = HttpSmsProvider(settings)
    else:
        sms = OutboxSmsProvider(settings.outbox_dir)
    return {"email": email, "sms": sms}
