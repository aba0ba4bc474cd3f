"""Where messages go: a readable outbox folder (default) or a real SMTP server."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Protocol

from airtime.config import Settings
from airtime.notifications.models import Notification


class Provider(Protocol):
    name: str

    def send(self, notification: Notification) -> str:
        """Deliver one message; return the provider's message id. Raise on failure."""


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


def providers_from_settings(settings: Settings) -> dict[str, Provider]:
    """The provider per channel that the settings choose."""
    email: Provider
    if settings.email_provider == "smtp":
        email = SmtpEmailProvider(settings)
    else:
        email = OutboxEmailProvider(settings.outbox_dir, settings.email_from)
    return {"email": email, "sms": OutboxSmsProvider(settings.outbox_dir)}
