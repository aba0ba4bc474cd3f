"""Settings read from the environment (prefix ``AIRTIME_``) or a ``.env`` file."""

from __future__ import annotations

import ipaddress
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path("var")


class Settings(BaseSettings):
    """Everything an operator configures; one instance per process."""

    model_config = SettingsConfigDict(env_prefix="AIRTIME_", env_file=".env", extra="ignore")

    database_url: str = Field(default=f"sqlite:///{DEFAULT_DATA_DIR / 'airtime.db'}")
    database_pool_size: int = Field(default=10, ge=1, le=200)
    fast_path: bool = Field(
        default=True,
        description="On PostgreSQL, start API top-ups, approve sandbox payments, take Stripe's "
        "paid webhooks and redeem voucher PINs over asyncpg (airtime/fastpath.py); off sends them "
        "through the ORM path.",
    )
    secret_key: str = Field(default="", description="Signs cookies and keys hashes; set it in production.")
    base_url: str = "http://127.0.0.1:8000"
    environment: Literal["development", "production", "test"] = "development"

    operator_name: str = "Airtime Mobile"
    default_region: str = Field(
        default="GB", description="Region used for numbers typed without +country code."
    )
    default_currency: str = "USD"
    default_language: Literal["en", "zh_Hans"] = "en"

    email_provider: Literal["outbox", "smtp"] = "outbox"
    email_from: str = "Airtime <no-reply@airtime.example>"
    smtp_host: str = "localhost"
    smtp_port: int = 587
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = True
    smtp_ssl: bool = False
    smtp_timeout_seconds: float = 10.0
    sms_provider: Literal["outbox", "twilio", "http"] = "outbox"
    twilio_account_sid: str = ""
    twilio_auth_token: str = ""
    # A phone number or sender id, or a Messaging Service SID (``MG…``) to let Twilio pick.
    twilio_from: str = ""
    # Empty means Twilio's own API; set it only to send through a stand-in or a relay.
    twilio_api_base_url: str = ""
    twilio_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    sms_http_url: str = ""
    sms_http_token: str = ""
    sms_http_signing_secret: str = ""
    sms_http_from: str = ""
    sms_http_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    outbox_dir: Path = DEFAULT_DATA_DIR / "outbox"
    notification_send_attempts_max: int = Field(default=5, ge=1, le=50)
    # Number keeping: reminders go out this many days before each deadline (once each).
    reminder_days_before_expiry: list[int] = Field(default=[14, 7, 1])
    reminder_days_before_suspension: list[int] = Field(default=[7, 1])
    reminder_days_before_termination: list[int] = Field(default=[7, 1])
    lifecycle_sweep_interval_seconds: float = Field(default=300.0, ge=1)

    customer_session_hours: int = Field(default=24 * 14, ge=1)
    password_reset_minutes: int = Field(default=60, ge=5, le=24 * 60)
    api_token_days: int = Field(default=30, ge=1, le=365)
    login_failures_max: int = Field(default=5, ge=1, le=100)
    login_window_minutes: int = Field(default=15, ge=1, le=24 * 60)
    login_ip_failures_max: int = Field(default=50, ge=1, le=10_000)
    secure_cookies: bool = False
    payment_sandbox_enabled: bool = True
    # Events signed or sent longer ago than this are refused as replays.
    webhook_tolerance_seconds: int = Field(default=300, ge=30)
    reconcile_after_seconds: int = Field(default=120, ge=0)
    reconcile_interval_seconds: int = Field(default=60, ge=5)
    topup_payment_expiry_minutes: int = Field(default=24 * 60, ge=5)
    # How often the server looks for due auto top-up rules (once across all processes).
    autotopup_interval_seconds: float = Field(default=600.0, ge=5)
    voucher_failures_max: int = Field(default=5, ge=1, le=100)
    voucher_failure_window_hours: int = Field(default=24, ge=1, le=24 * 30)
    voucher_lock_hours: int = Field(default=24, ge=1, le=24 * 30)
    voucher_expiry_interval_seconds: int = Field(default=3600, ge=60)
    # Care: a manual balance adjustment larger than this (minor units, either sign) waits
    # for a second person (a different supervisor or admin) before it posts.
    care_adjustment_approval_above_minor: int = Field(default=2000, ge=0)
    # Phone channels. A USSD callback must carry the shared secret (query ``secret`` or header
    # ``X-USSD-Secret``) when one is set, and come from an allowed address (IP or CIDR) when a
    # list is set; with neither set every callback is refused.
    ussd_shared_secret: str = ""
    ussd_allowed_ips: list[str] = Field(default=[])
    ussd_service_code: str = "*123#"
    ussd_session_timeout_seconds: int = Field(default=180, ge=10, le=3600)
    # IVR requests are checked against ``twilio_auth_token`` (X-Twilio-Signature).
    ivr_session_timeout_seconds: int = Field(default=900, ge=60, le=4 * 3600)
    ivr_wrong_pins_per_call_max: int = Field(default=3, ge=1, le=10)
    ivr_no_input_retries_max: int = Field(default=3, ge=1, le=10)
    stripe_secret_key: str = ""
    stripe_webhook_secret: str = ""
    stripe_api_base: str = ""
    paypal_client_id: str = ""
    paypal_client_secret: str = ""
    paypal_webhook_id: str = ""
    paypal_api_base: str = "https://api-m.sandbox.paypal.com"
    password_hash_time_cost: int = Field(default=3, ge=1, le=20)
    password_hash_memory_kib: int = Field(default=65536, ge=1024, le=1024 * 1024)

    @field_validator("database_url")
    @classmethod
    def _normalise_database_url(cls, value: str) -> str:
        """Accept plain ``postgresql://`` URLs and use the psycopg 3 driver for them."""
        for prefix in ("postgresql://", "postgres://"):
            if value.startswith(prefix):
                return "postgresql+psycopg://" + value[len(prefix) :]
        return value

    @field_validator(
        "reminder_days_before_expiry", "reminder_days_before_suspension", "reminder_days_before_termination"
    )
    @classmethod
    def _check_reminder_days(cls, value: list[int]) -> list[int]:
        if any(not 1 <= days <= 365 for days in value):
            raise ValueError("reminder days are whole days from 1 to 365")
        return sorted(set(value), reverse=True)

    @field_validator("ussd_allowed_ips")
    @classmethod
    def _check_allowed_ips(cls, value: list[str]) -> list[str]:
        """Refuse a mistyped address at start-up rather than lock the gateway out later."""
        for network in value:
            ipaddress.ip_network(network.strip(), strict=False)
        return [network.strip() for network in value]

    @model_validator(mode="after")
    def _check_sms_provider_settings(self) -> Settings:
        """Refuse to start with an SMS provider chosen but not configured, rather than fail
        each message later in the background."""
        required = {
            "outbox": (),
            "twilio": ("twilio_account_sid", "twilio_auth_token", "twilio_from"),
            "http": ("sms_http_url", "sms_http_from"),
        }[self.sms_provider]
        missing = [f"AIRTIME_{name.upper()}" for name in required if not getattr(self, name)]
        if missing:
            raise ValueError(f"AIRTIME_SMS_PROVIDER={self.sms_provider} needs {', '.join(missing)} to be set")
        for name in ("twilio_api_base_url", "sms_http_url"):
            value = getattr(self, name)
            if value and not value.startswith(("http://", "https://")):
                raise ValueError(f"AIRTIME_{name.upper()} must start with http:// or https://")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def effective_secret_key(self) -> str:
        """The configured secret, or one kept in the data directory for development."""
        if self.secret_key:
            return self.secret_key
        if self.environment == "production":
            raise RuntimeError("AIRTIME_SECRET_KEY must be set in production")
        path = DEFAULT_DATA_DIR / "secret_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
        return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()
