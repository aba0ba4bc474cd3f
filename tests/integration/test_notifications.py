"""The outbox: written in the caller's transaction, sent after commit, once per dedup key."""

from __future__ import annotations

import email
import socket
from datetime import timedelta

import pytest
import time_machine
from aiosmtpd.controller import Controller
from sqlalchemy import select

from airtime.clock import utcnow
from airtime.config import Settings
from airtime.notifications.models import Notification, NotificationStatus
from airtime.notifications.providers import providers_from_settings
from airtime.notifications.sender import send_due
from airtime.notifications.service import enqueue

CONTEXT = {"operator_name": "Airtime Mobile", "link": "http://testserver/login"}


def _enqueue(session, **overrides):
    values = {
        "channel": "email",
        "recipient": "ana@example.com",
        "template": "welcome",
        "language": "en",
        "context": CONTEXT,
    }
    values.update(overrides)
    return enqueue(session, **values)


def test_nothing_is_written_when_the_transaction_rolls_back(uow):
    with pytest.raises(RuntimeError), uow() as session:
        _enqueue(session)
        raise RuntimeError("the business step failed")
    with uow() as session:
        assert session.scalars(select(Notification)).all() == []


def test_dedup_key_writes_a_message_once(uow):
    with uow() as session:
        assert _enqueue(session, dedup_key="welcome:1") is not None
    with uow() as session:
        assert _enqueue(session, dedup_key="welcome:1") is None
        assert len(session.scalars(select(Notification)).all()) == 1


def test_outbox_provider_writes_readable_files(uow, session_factory, settings):
    with uow() as session:
        _enqueue(session)
        _enqueue(session, channel="sms", recipient="+447911123456", language="zh_Hans")
    sent = send_due(session_factory, providers_from_settings(settings), attempts_max=3)
    assert sent == 2
    eml = next((settings.outbox_dir / "email").glob("*.eml"))
    message = email.message_from_bytes(eml.read_bytes())
    assert message["To"] == "ana@example.com"
    assert "Welcome to Airtime Mobile" in message["Subject"]
    sms = next((settings.outbox_dir / "sms").glob("*.txt")).read_text(encoding="utf-8")
    assert sms.startswith("To: +447911123456")
    with uow() as session:
        assert {row.status for row in session.scalars(select(Notification))} == {NotificationStatus.SENT}
    # Sent messages are not sent again.
    assert send_due(session_factory, providers_from_settings(settings), attempts_max=3) == 0


class _Collector:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_smtp_provider_delivers_to_a_real_smtp_server(uow, session_factory, settings):
    collector = _Collector()
    port = _free_port()
    controller = Controller(collector, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        smtp_settings = Settings(
            **{
                **settings.model_dump(),
                "email_provider": "smtp",
                "smtp_host": "127.0.0.1",
                "smtp_port": port,
                "smtp_starttls": False,
            }
        )
        with uow() as session:
            _enqueue(
                session,
                template="password_reset",
                language="zh_Hans",
                context={**CONTEXT, "minutes": 60, "link": "http://testserver/reset-password/abc"},
            )
        assert send_due(session_factory, providers_from_settings(smtp_settings), attempts_max=3) == 1
    finally:
        controller.stop()
    [received] = collector.messages
    assert received["To"] == "ana@example.com"
    body = received.get_payload(decode=True).decode()
    assert "http://testserver/reset-password/abc" in body


def test_a_failing_provider_is_retried_with_backoff_then_given_up(uow, session_factory, settings):
    port = _free_port()  # nothing listens there
    smtp_settings = Settings(
        **{
            **settings.model_dump(),
            "email_provider": "smtp",
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_starttls": False,
            "smtp_timeout_seconds": 2,
        }
    )
    providers = providers_from_settings(smtp_settings)
    with uow() as session:
        _enqueue(session)
    assert send_due(session_factory, providers, attempts_max=2) == 0
    with uow() as session:
        row = session.scalars(select(Notification)).one()
        assert row.status == NotificationStatus.PENDING and row.attempts == 1 and row.last_error
    # Not due again until the backoff has passed.
    assert send_due(session_factory, providers, attempts_max=2) == 0
    with uow() as session:
        assert session.scalars(select(Notification)).one().attempts == 1
    with time_machine.travel(utcnow() + timedelta(minutes=5), tick=False):
        assert send_due(session_factory, providers, attempts_max=2) == 0
    with uow() as session:
        row = session.scalars(select(Notification)).one()
        assert row.status == NotificationStatus.FAILED and row.attempts == 2
