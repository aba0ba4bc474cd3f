"""A staff member's TOTP secret, encrypted at rest, and the last time step used."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from airtime.db.base import Base, BigId, UTCDateTime


class StaffTotp(Base):
    """One row per staff member who started enrolment; usable once ``confirmed_at`` is set."""

    __tablename__ = "staff_totp"

    staff_user_id: Mapped[int] = mapped_column(BigId, ForeignKey("staff_users.id"), primary_key=True)
    # Fernet token of the base32 secret, keyed from AIRTIME_SECRET_KEY: a leaked database
    # alone does not give the codes away.
    secret_encrypted: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The 30-second step of the last accepted code: a code (or an older one) is never
    # accepted twice.
    last_used_step: Mapped[int] = mapped_column(BigInteger, default=0)
