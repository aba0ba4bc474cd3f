"""Settings read from the environment (prefix ``AIRTIME_``) or a ``.env`` file."""

from __future__ import annotations

import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path("var")


class Settings(BaseSettings):
    """Everything an operator configures; one instance per process."""

    model_config = SettingsConfigDict(env_prefix="AIRTIME_", env_file=".env", extra="ignore")

    database_url: str = Field(default=f"sqlite:///{DEFAULT_DATA_DIR / 'airtime.db'}")
    database_pool_size: int = Field(default=10, ge=1, le=200)
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
    sms_provider: Literal["outbox"] = "outbox"
    outbox_dir: Path = DEFAULT_DATA_DIR / "outbox"
    notification_send_attempts_max: int = Field(default=5, ge=1, le=50)

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
    voucher_failures_max: int = Field(default=5, ge=1, le=100)
    voucher_failure_window_hours: int = Field(default=24, ge=1, le=24 * 30)
    voucher_lock_hours: int = Field(default=24, ge=1, le=24 * 30)
    voucher_expiry_interval_seconds: int = Field(default=3600, ge=60)
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
