"""The announcements table: a notice in English and Chinese, shown while its time window is open."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from airtime.db.base import Base, BigId, UTCDateTime


class AnnouncementLevel:
    INFO = "info"
    PROMO = "promo"
    PRICE_CHANGE = "price_change"
    ALL = (INFO, PROMO, PRICE_CHANGE)


class Announcement(Base):
    """One notice; shown on the portal from ``starts_at`` until ``ends_at`` (exclusive)."""

    __tablename__ = "announcements"
    __table_args__ = (Index("ix_announcements_ends_at_starts_at", "ends_at", "starts_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    level: Mapped[str] = mapped_column(String(20))
    title_en: Mapped[str] = mapped_column(String(120))
    body_en: Mapped[str] = mapped_column(Text)
    title_zh: Mapped[str] = mapped_column(String(120))
    body_zh: Mapped[str] = mapped_column(Text)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String(254))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(String(254))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    def title(self, language: str) -> str:
        return self.title_zh if language == "zh_Hans" else self.title_en

    def body(self, language: str) -> str:
        return self.body_zh if language == "zh_Hans" else self.body_en
