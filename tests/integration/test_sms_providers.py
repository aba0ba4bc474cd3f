"""Twilio and a generic HTTP gateway as SMS providers, over real HTTP to local fakes.

Each test drives the real client code (Twilio's SDK, our httpx calls) against a server on
127.0.0.1 that speaks the provider's documented shapes, then looks at what it received.
Tests that go through the outbox run on both databases.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import parse_qs

import pytest
import time_machine

from airtime.clock import utcnow
from airtime.config import Settings
from airtime.notifications.models import Notification, NotificationStatus
from airtime.notifications.providers import DeliveryFailed, HttpSmsProvider, providers_from_settings
from airtime.notifications.sender import send_due
from airtime.notifications.service import enqueue
from airtime.notifications.twilio_provider import TwilioSmsProvider
from tests.fakes import Response
from tests.fakes.sms_gateway import SIGNING_SECRET, TOKEN, FakeSmsGateway
from tests.fakes.twilio_api import ACCOUNT_SID, AUTH_TOKEN, INVALID_NUMBER, FakeTwilio

RECIPIENT = "+447911123456"
TWILIO_NUMBER = "+15017122661"
MESSAGING_SERVICE_SID = "MG" + "fedcba9876543210" * 2
CONTEXT = {"operator_name": "Airtime Mobile", "link": "http://testserver/login"}


@pytest.fixture
def plain_settings(tmp_path) -> Settings:
    """Settings for tests that call a provider directly, with no database to run on."""
    return Settings(_env_file=None, secret_key="x", outbox_dir=tmp_path / "outbox", environment="test")


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    fake = FakeTwilio()
    yield fake
    fake.close()


@pytest.fixture
def fake_gateway() -> Iterator[FakeSmsGateway]:
    fake = FakeSmsGateway()
    yield fake
    fake.close()


def _with(settings: Settings, **changes: object) -> Settings:
    """The suite's settings changed, validated again as at start-up."""
    return Settings(**{**settings.model_dump(), **changes})


def _twilio_settings(settings: Settings, base_url: str, **changes: object) -> Settings:
    values: dict[str, object] = {
        "sms_provider": "twilio",
        "twilio_account_sid": ACCOUNT_SID,
        "twilio_auth_token": AUTH_TOKEN,
        "twilio_from": TWILIO_NUMBER,
        "twilio_api_base_url": base_url,
        "twilio_timeout_seconds": 5,
    }
    return _with(settings, **{**values, **changes})


def _gateway_settings(settings: Settings, url: str, **changes: object) -> Settings:
    values: dict[str, object] = {
        "sms_provider": "http",
        "sms_http_url": url,
        "sms_http_token": TOKEN,
        "sms_http_signing_secret": SIGNING_SECRET,
        "sms_http_from": "AirtimeMob",
        "sms_http_timeout_seconds": 5,
    }
    return _with(settings, **{**values, **changes})


def _sms(notification_id: int = 41, recipient: str = RECIPIENT) -> Notification:
    """A message as the sender hands it to a provider, without a database."""
    return Notification(id=notification_id, channel="sms", recipient=recipient, body_text="Your code is 1234")


def _enqueue_sms(uow, recipient: str = RECIPIENT) -> int:
    with uow() as session:
        notification_id = enqueue(
            session, channel="sms", recipient=recipient, template="welcome", language="en", context=CONTEXT
        )
        assert notification_id is not None
        return notification_id


def _row(uow, notification_id: int) -> Notification:
    with uow() as session:
        row = session.get(Notification, notification_id)
        assert row is not None
        session.expunge(row)
        return row


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- Twilio ------------------------------------------------------------------------------


def test_twilio_delivers_an_outbox_sms_and_it_is_marked_sent(uow, session_factory, settings, fake_twilio):
    notification_id = _enqueue_sms(uow)
    providers = providers_from_settings(_twilio_settings(settings, fake_twilio.url))
    assert isinstance(providers["sms"], TwilioSmsProvider)

    assert send_due(session_factory, providers, attempts_max=3) == 1

    [request] = fake_twilio.message_requests()
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    credentials = base64.b64decode(request.headers["authorization"].removeprefix("Basic ")).decode()
    assert credentials == f"{ACCOUNT_SID}:{AUTH_TOKEN}"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    form = parse_qs(request.body.decode())
    assert form["To"] == [RECIPIENT]
    assert form["From"] == [TWILIO_NUMBER]
    assert "MessagingServiceSid" not in form
    [message] = fake_twilio.messages
    assert "Airtime Mobile" in form["Body"][0] and form["Body"] == [message["body"]]
    row = _row(uow, notification_id)
    assert row.status == NotificationStatus.SENT
    assert row.provider == "twilio"
    assert row.last_error == message["sid"] and message["sid"].startswith("SM")
    # Sent once: nothing is due any more.
    assert send_due(session_factory, providers, attempts_max=3) == 0
    assert len(fake_twilio.message_requests()) == 1


def test_twilio_sends_a_messaging_service_sid_instead_of_a_from_number(plain_settings, fake_twilio):
    provider = TwilioSmsProvider(
        _twilio_settings(plain_settings, fake_twilio.url, twilio_from=MESSAGING_SERVICE_SID)
    )

    sid = provider.send(_sms())

    [request] = fake_twilio.message_requests()
    form = parse_qs(request.body.decode())
    assert form["MessagingServiceSid"] == [MESSAGING_SERVICE_SID]
    assert "From" not in form
    assert sid == fake_twilio.messages[0]["sid"]


def test_twilio_base_url_may_carry_a_path_prefix(plain_settings):
    relay = FakeTwilio(path_prefix="/relay/twilio")
    try:
        provider = TwilioSmsProvider(_twilio_settings(plain_settings, relay.url + "/"))
        assert provider.send(_sms()).startswith("SM")
    finally:
        relay.close()
    [request] = relay.server.requests
    assert request.path == f"/relay/twilio/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"


def test_twilio_invalid_number_is_a_permanent_failure(plain_settings, fake_twilio):
    provider = TwilioSmsProvider(_twilio_settings(plain_settings, fake_twilio.url))

    with pytest.raises(DeliveryFailed) as failure:
        provider.send(_sms(recipient=INVALID_NUMBER))

    assert failure.value.permanent is True
    assert "HTTP 400" in str(failure.value) and "21211" in str(failure.value)
    assert fake_twilio.messages == []


def test_twilio_wrong_credentials_fail_but_not_permanently(plain_settings, fake_twilio):
    provider = TwilioSmsProvider(
        _twilio_settings(plain_settings, fake_twilio.url, twilio_auth_token="not-the-token")
    )

    with pytest.raises(DeliveryFailed) as failure:
        provider.send(_sms())

    # Credentials can be fixed by the operator; the message itself is fine.
    assert failure.value.permanent is False
    assert "HTTP 401" in str(failure.value) and "20003" in str(failure.value)
    assert fake_twilio.messages == []


def test_twilio_outage_leaves_the_sms_for_a_retry_that_delivers_it(
    uow, session_factory, settings, fake_twilio
):
    notification_id = _enqueue_sms(uow)
    providers = providers_from_settings(_twilio_settings(settings, fake_twilio.url))
    fake_twilio.failing_status = 503

    assert send_due(session_factory, providers, attempts_max=3) == 0

    row = _row(uow, notification_id)
    assert row.status == NotificationStatus.PENDING and row.attempts == 1
    assert "HTTP 503" in row.last_error and row.sent_at is None
    assert fake_twilio.messages == []
    # Not due again before the backoff has passed, even once Twilio is back.
    fake_twilio.failing_status = None
    assert send_due(session_factory, providers, attempts_max=3) == 0
    with time_machine.travel(utcnow() + timedelta(minutes=5), tick=False):
        assert send_due(session_factory, providers, attempts_max=3) == 1
    row = _row(uow, notification_id)
    assert row.status == NotificationStatus.SENT and row.attempts == 2
    assert row.last_error == fake_twilio.messages[0]["sid"]


def test_twilio_invalid_number_through_the_outbox_is_recorded_not_sent(
    uow, session_factory, settings, fake_twilio
):
    notification_id = _enqueue_sms(uow, recipient=INVALID_NUMBER)
    providers = providers_from_settings(_twilio_settings(settings, fake_twilio.url))

    assert send_due(session_factory, providers, attempts_max=5) == 0

    # Permanent: failed after the first attempt, not retried four more times.
    row = _row(uow, notification_id)
    assert row.status == NotificationStatus.FAILED and row.attempts == 1
    assert row.last_error.startswith("DeliveryFailed: Twilio answered HTTP 400, error 21211")


# --- Generic HTTP gateway ----------------------------------------------------------------


def test_http_gateway_delivers_an_outbox_sms_as_signed_json(uow, session_factory, settings, fake_gateway):
    notification_id = _enqueue_sms(uow)
    providers = providers_from_settings(_gateway_settings(settings, fake_gateway.url))
    assert isinstance(providers["sms"], HttpSmsProvider)

    assert send_due(session_factory, providers, attempts_max=3) == 1

    [request] = fake_gateway.server.requests
    assert request.method == "POST" and request.path == "/v1/messages"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    body = json.loads(request.body)
    assert set(body) == {"to", "from", "text", "reference"}
    assert body["to"] == RECIPIENT
    assert body["from"] == "AirtimeMob"
    assert body["reference"] == str(notification_id)
    assert "Airtime Mobile" in body["text"]
    expected = "sha256=" + hmac.new(SIGNING_SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-airtime-signature"] == expected
    row = _row(uow, notification_id)
    assert row.status == NotificationStatus.SENT and row.provider == "http"
    assert row.last_error == fake_gateway.messages[0]["id"]


def test_http_gateway_refuses_a_signature_made_with_another_secret(plain_settings, fake_gateway):
    provider = HttpSmsProvider(
        _gateway_settings(plain_settings, fake_gateway.url, sms_http_signing_secret="some-other-secret")
    )

    with pytest.raises(DeliveryFailed, match="HTTP 401"):
        provider.send(_sms())

    assert fake_gateway.messages == []


def test_http_gateway_without_token_or_secret_sends_neither_header(plain_settings):
    gateway = FakeSmsGateway(token="", signing_secret="")
    try:
        provider = HttpSmsProvider(
            _gateway_settings(plain_settings, gateway.url, sms_http_token="", sms_http_signing_secret="")
        )
        assert provider.send(_sms()) == gateway.messages[0]["id"]
    finally:
        gateway.close()
    [request] = gateway.server.requests
    assert "authorization" not in request.headers
    assert "x-airtime-signature" not in request.headers


@pytest.mark.parametrize("answer", [Response(200, {"status": "ok"}), Response(204), Response(201, [1, 2])])
def test_http_gateway_answer_without_an_id_falls_back_to_the_reference(plain_settings, fake_gateway, answer):
    fake_gateway.next_response = answer
    provider = HttpSmsProvider(_gateway_settings(plain_settings, fake_gateway.url))

    assert provider.send(_sms(notification_id=77)) == "77"


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(400, True), (422, True), (401, False), (429, False), (500, False), (503, False)],
)
def test_http_gateway_error_answers_raise(plain_settings, fake_gateway, status, permanent):
    fake_gateway.next_response = Response(status, {"error": "refused"})
    provider = HttpSmsProvider(_gateway_settings(plain_settings, fake_gateway.url))

    with pytest.raises(DeliveryFailed, match=f"HTTP {status}") as failure:
        provider.send(_sms())

    assert failure.value.permanent is permanent


def test_http_gateway_redirect_is_not_followed_and_fails(plain_settings, fake_gateway):
    fake_gateway.next_response = Response(307, headers={"Location": "http://example.invalid/"})
    provider = HttpSmsProvider(_gateway_settings(plain_settings, fake_gateway.url))

    with pytest.raises(DeliveryFailed, match="HTTP 307"):
        provider.send(_sms())


def test_http_gateway_down_leaves_the_sms_for_retry(uow, session_factory, settings):
    notification_id = _enqueue_sms(uow)
    url = f"http://127.0.0.1:{_free_port()}/v1/messages"  # nothing listens there
    providers = providers_from_settings(_gateway_settings(settings, url, sms_http_timeout_seconds=2))

    assert send_due(session_factory, providers, attempts_max=3) == 0

    row = _row(uow, notification_id)
    assert row.status == NotificationStatus.PENDING and row.attempts == 1
    assert row.last_error.startswith("ConnectError") and row.sent_at is None
    assert row.next_attempt_at > utcnow()


def test_http_gateway_error_answer_through_the_outbox_is_retried(
    uow, session_factory, settings, fake_gateway
):
    notification_id = _enqueue_sms(uow)
    providers = providers_from_settings(_gateway_settings(settings, fake_gateway.url))
    fake_gateway.next_response = Response(502, {"error": "upstream"})

    assert send_due(session_factory, providers, attempts_max=3) == 0
    row = _row(uow, notification_id)
    assert row.status == NotificationStatus.PENDING and "HTTP 502" in row.last_error

    fake_gateway.next_response = None
    with time_machine.travel(utcnow() + timedelta(minutes=5), tick=False):
        assert send_due(session_factory, providers, attempts_max=3) == 1
    assert _row(uow, notification_id).status == NotificationStatus.SENT
    assert [message["reference"] for message in fake_gateway.messages] == [str(notification_id)]
