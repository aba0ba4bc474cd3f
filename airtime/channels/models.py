"""Tables of the phone channels: live sessions (USSD and IVR) and each number's language."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from airtime.db.base import Base, UTCDateTime


class PhoneSession(Base):
    """One USSD session or IVR call, keyed by the gateway's id, with when it was last heard.

    A session unheard for longer than its timeout has expired: a callback for it starts over.
    ``data`` holds what a later step needs (the bundles shown, a PIN waiting for the caller's
    confirmation, counters); a PIN is removed as soon as it is confirmed or re-entered.
    """

    __tablename__ = "phone_sessions"
    __table_args__ = (Index("ix_phone_sessions_last_seen_at", "last_seen_at"),)

    # "ussd:<sessionId>" or "ivr:<CallSid>": the two gateways' ids cannot collide.
    key: Mapped[str] = mapped_column(String(140), primary_key=True)
    channel: Mapped[str] = mapped_column(String(10))
    msisdn: Mapped[str] = mapped_column(String(32))
    # USSD: the part of the gateway's ``text`` that came before this session (re)started.
    text_offset: Mapped[str] = mapped_column(String(400), default="")
    steps: Mapped[int] = mapped_column(Integer, default=0)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PhoneLanguage(Base):
    """The language a caller chose on a phone channel, remembered per number."""

    __tablename__ = "phone_languages"

    msisdn: Mapped[str] = mapped_column(String(32), primary_key=True)
    language: Mapped[str] = mapped_column(String(10))
    chosen_at: Mapped[datetime] = mapped_column(UTCDateTime)
