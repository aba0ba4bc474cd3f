"""Publish, edit and end announcements; read the ones showing now. Services flush, never commit.

Every change is written to the audit log with who made it and the announcement before and
after: an announcement speaks for the operator to every subscriber (prices, promotions)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from airtime.announcements.models import Announcement, AnnouncementLevel
from airtime.care import audit
from airtime.care.audit import Actor
from airtime.clock import utcnow
from airtime.errors import NotFound, ValidationFailed

TITLE_LENGTH_MAX = 120
BODY_LENGTH_MAX = 2000
SHOWN_MAX = 5
LISTED_MAX = 100
DURATION_DAYS_MAX = 366


@dataclass(frozen=True)
class AnnouncementDraft:
    """What an admin typed; checked as a whole before anything is written."""

    level: str
    title_en: str
    body_en: str
    title_zh: str
    body_zh: str
    starts_at: datetime | None
    ends_at: datetime | None


def _checked(draft: AnnouncementDraft) -> AnnouncementDraft:
    if draft.level not in AnnouncementLevel.ALL:
        raise ValidationFailed("Choose a level: info, promotion or price change.", field="level")
    texts = {
        "title_en": (draft.title_en.strip(), TITLE_LENGTH_MAX),
        "body_en": (draft.body_en.strip(), BODY_LENGTH_MAX),
        "title_zh": (draft.title_zh.strip(), TITLE_LENGTH_MAX),
        "body_zh": (draft.body_zh.strip(), BODY_LENGTH_MAX),
    }
    for field, (value, length_max) in texts.items():
        if not value:
            raise ValidationFailed("Write the title and the text in English and in Chinese.", field=field)
        if len(value) > length_max:
            raise ValidationFailed("Keep it under %(count)s characters.", count=length_max, field=field)
    if draft.starts_at is None or draft.ends_at is None:
        raise ValidationFailed("Give a start and an end time.", field="starts_at")
    if draft.ends_at <= draft.starts_at:
        raise ValidationFailed("The end must come after the start.", field="ends_at")
    if draft.ends_at - draft.starts_at > timedelta(days=DURATION_DAYS_MAX):
        raise ValidationFailed(
            "An announcement runs at most %(days)s days.", days=DURATION_DAYS_MAX, field="ends_at"
        )
    return AnnouncementDraft(
        level=draft.level,
        title_en=texts["title_en"][0],
        body_en=texts["body_en"][0],
        title_zh=texts["title_zh"][0],
        body_zh=texts["body_zh"][0],
        starts_at=draft.starts_at,
        ends_at=draft.ends_at,
    )


def _state(announcement: Announcement) -> dict[str, object]:
    return {
        "level": announcement.level,
        "title_en": announcement.title_en,
        "body_en": announcement.body_en,
        "title_zh": announcement.title_zh,
        "body_zh": announcement.body_zh,
        "starts_at": announcement.starts_at,
        "ends_at": announcement.ends_at,
    }


def _audit(
    session: Session, actor: Actor, action: str, announcement: Announcement, before: dict[str, object]
) -> None:
    audit.record(
        session,
        actor=actor,
        action=action,
        subject_type="announcement",
        subject_id=announcement.id,
        before=before,
        after=_state(announcement),
    )


def publish(session: Session, *, draft: AnnouncementDraft, actor: Actor) -> Announcement:
    """Create an announcement; it shows from its start time."""
    checked = _checked(draft)
    now = utcnow()
    announcement = Announcement(
        level=checked.level,
        title_en=checked.title_en,
        body_en=checked.body_en,
        title_zh=checked.title_zh,
        body_zh=checked.body_zh,
        starts_at=checked.starts_at,
        ends_at=checked.ends_at,
        created_by=actor.email,
        created_at=now,
        updated_by=actor.email,
        updated_at=now,
    )
    session.add(announcement)
    session.flush()
    _audit(session, actor, "publish_announcement", announcement, {})
    return announcement


def get(session: Session, announcement_id: int) -> Announcement:
    announcement = session.get(Announcement, announcement_id)
    if announcement is None:
        raise NotFound("There is no announcement %(id)s.", id=announcement_id)
    return announcement


def edit(session: Session, *, announcement_id: int, draft: AnnouncementDraft, actor: Actor) -> Announcement:
    """Replace the texts, level and times (all checked before any is changed)."""
    checked = _checked(draft)
    announcement = get(session, announcement_id)
    before = _state(announcement)
    announcement.level = checked.level
    announcement.title_en = checked.title_en
    announcement.body_en = checked.body_en
    announcement.title_zh = checked.title_zh
    announcement.body_zh = checked.body_zh
    assert checked.starts_at is not None and checked.ends_at is not None
    announcement.starts_at = checked.starts_at
    announcement.ends_at = checked.ends_at
    announcement.updated_by = actor.email
    announcement.updated_at = utcnow()
    session.flush()
    _audit(session, actor, "edit_announcement", announcement, before)
    return announcement


def end(session: Session, *, announcement_id: int, actor: Actor) -> Announcement:
    """Stop showing it now (an ended or future one keeps its record; nothing is deleted)."""
    announcement = get(session, announcement_id)
    now = utcnow()
    if announcement.ends_at > now:
        before = _state(announcement)
        announcement.ends_at = max(now, announcement.starts_at)
        announcement.updated_by = actor.email
        announcement.updated_at = now
        session.flush()
        _audit(session, actor, "end_announcement", announcement, before)
    return announcement


def showing(session: Session, *, now: datetime | None = None) -> list[Announcement]:
    """The announcements showing now, price changes first, then the newest."""
    moment = now or utcnow()
    rows = session.scalars(
        select(Announcement)
        .where(Announcement.ends_at > moment, Announcement.starts_at <= moment)
        .order_by(Announcement.starts_at.desc(), Announcement.id.desc())
        .limit(SHOWN_MAX)
    ).all()
    return sorted(rows, key=lambda row: row.level != AnnouncementLevel.PRICE_CHANGE)


def recent(session: Session) -> list[Announcement]:
    """For the admin page: the latest announcements, showing or not."""
    return list(session.scalars(select(Announcement).order_by(Announcement.id.desc()).limit(LISTED_MAX)))
