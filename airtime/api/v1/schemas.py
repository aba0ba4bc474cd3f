"""Request and response bodies of API v1."""

from __future__ import annotations

from datetime import date, datetime

from pydantic import BaseModel, ConfigDict, Field


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterIn(Strict):
    email: str = Field(max_length=254, examples=["ana@example.com"])
    password: str = Field(max_length=128)
    language: str = Field(default="en", max_length=20, examples=["en", "zh_Hans"])


class TokenIn(Strict):
    email: str = Field(max_length=254)
    password: str = Field(max_length=128)


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_at: datetime


class CustomerOut(BaseModel):
    id: int
    email: str
    language: str
    created_at: datetime


class CustomerPatch(Strict):
    language: str = Field(max_length=20)


class PasswordChangeIn(Strict):
    current_password: str = Field(max_length=128)
    new_password: str = Field(max_length=128)


class PasswordResetRequestIn(Strict):
    email: str = Field(max_length=254)


class PasswordResetIn(Strict):
    password: str = Field(max_length=128)


class MoneyOut(BaseModel):
    amount_minor: int
    currency: str
    formatted: str


class LineOut(BaseModel):
    id: int
    msisdn: str
    iccid: str | None
    nickname: str
    state: str
    validity_date: date | None
    plan_code: str
    balance: MoneyOut
    bonus: MoneyOut


class HistoryItemOut(BaseModel):
    entry_id: int
    at: datetime
    kind: str
    description: str
    balance: str
    amount: MoneyOut


class HistoryPage(BaseModel):
    items: list[HistoryItemOut]
    next_before: int | None = Field(description="Pass as `before` to get the next (older) page.")
