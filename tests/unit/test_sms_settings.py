"""Choosing an SMS provider without its settings stops the process at start-up."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from airtime.config import Settings

SMS_VARIABLES = [
    "AIRTIME_SMS_PROVIDER",
    "AIRTIME_TWILIO_ACCOUNT_SID",
    "AIRTIME_TWILIO_AUTH_TOKEN",
    "AIRTIME_TWILIO_FROM",
    "AIRTIME_TWILIO_API_BASE_URL",
    "AIRTIME_SMS_HTTP_URL",
    "AIRTIME_SMS_HTTP_TOKEN",
    "AIRTIME_SMS_HTTP_SIGNING_SECRET",
    "AIRTIME_SMS_HTTP_FROM",
]


@pytest.fixture(autouse=True)
def _no_sms_environment(monkeypatch):
    for name in SMS_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)


def test_outbox_needs_nothing():
    assert _settings().sms_provider == "outbox"


def test_twilio_without_credentials_is_refused_with_the_missing_names():
    with pytest.raises(ValidationError) as refusal:
        _settings(sms_provider="twilio", twilio_from="+15017122661")
    message = str(refusal.value)
    assert (
        "AIRTIME_SMS_PROVIDER=twilio needs AIRTIME_TWILIO_ACCOUNT_SID, AIRTIME_TWILIO_AUTH_TOKEN" in message
    )
    assert "AIRTIME_TWILIO_FROM" not in message


def test_http_without_url_is_refused():
    with pytest.raises(ValidationError, match="AIRTIME_SMS_PROVIDER=http needs AIRTIME_SMS_HTTP_URL"):
        _settings(sms_provider="http", sms_http_from="Airtime")


def test_provider_settings_are_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("AIRTIME_SMS_PROVIDER", "twilio")
    monkeypatch.setenv("AIRTIME_TWILIO_ACCOUNT_SID", "AC" + "0" * 32)
    monkeypatch.setenv("AIRTIME_TWILIO_AUTH_TOKEN", "token")
    monkeypatch.setenv("AIRTIME_TWILIO_FROM", "MG" + "0" * 32)
    settings = _settings()
    assert settings.sms_provider == "twilio" and settings.twilio_from.startswith("MG")
    assert settings.twilio_api_base_url == ""


@pytest.mark.parametrize("name", ["twilio_api_base_url", "sms_http_url"])
def test_base_urls_must_be_http(name):
    complete = {
        "sms_provider": "http",
        "sms_http_url": "https://gateway.example/v1/messages",
        "sms_http_from": "Airtime",
    }
    with pytest.raises(ValidationError, match=f"AIRTIME_{name.upper()} must start with http"):
        _settings(**{**complete, name: "gateway.example/v1/messages"})


def test_unknown_provider_is_refused():
    with pytest.raises(ValidationError):
        _settings(sms_provider="carrier-pigeon")
