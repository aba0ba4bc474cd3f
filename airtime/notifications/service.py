"""Writing emails and SMS to the outbox, in the caller's transaction."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from airtime.clock import utcnow
from airtime.db.dialect import insert_ignoring_conflicts
from airtime.db.session import after_commit
from airtime.notifications.models import Notification, NotificationStatus
from airtime.templating import language_context, make_environment

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
_environment = make_environment(TEMPLATE_DIR, autoescape=False)
_notifications = cast(Table, Notification.__table__)
SMS_LENGTH_MAX = 480

# Set after a commit that wrote notifications; sender threads in this process wake on it.
wake_senders = threading.Event()


def render(template: str, language: str, context: dict[str, Any]) -> tuple[str, str]:
    """Render a message template to (subject, body); the first line is ``Subject: ...``."""
    text = _environment.get_template(f"{template}.txt").render(**context, **language_context(language))
    first_line, _, body = text.partition("\n")
    if first_line.startswith("Subject:"):
        return first_line.removeprefix("Subject:").strip(), body.strip() + "\n"
    return "", text.strip() + "\n"


def outbox_row(
    *,
    channel: str,
    recipient: str,
    template: str,
    language: str,
    context: dict[str, Any],
    customer_id: int | None,
    dedup_key: str | None,
    now: datetime,
) -> dict[str, Any]:
    """The outbox row of one message, rendered now (see :func:`enqueue`)."""
    if channel not in {"email", "sms"}:
        raise ValueError(f"unknown channel {channel}")
    subject, body = render(template, language, context)
    if channel == "sms":
        body = body[:SMS_LENGTH_MAX]
    return {
        "channel": channel,
        "recipient": recipient,
        "subject": subject,
        "body_text": body,
        "body_html": None,
        "template": template,
        "language": language,
        "customer_id": customer_id,
        "dedup_key": dedup_key,
        "status": NotificationStatus.PENDING,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
        "provider": "",
        "last_error": "",
    }


def enqueue(
    session: Session,
    *,
    channel: str,
    recipient: str,
    template: str,
    language: str,
    context: dict[str, Any],
    customer_id: int | None = None,
    dedup_key: str | None = None,
) -> int | None:
    """Write one message to the outbox; with a ``dedup_key`` it is written at most once ever.

    Returns the new row's id, or None when the dedup key was already used.
    """
    values = outbox_row(
        channel=channel,
        recipient=recipient,
        template=template,
        language=language,
        context=context,
        customer_id=customer_id,
        dedup_key=dedup_key,
        now=utcnow(),
    )
    if dedup_key is None:
        notification_id = session.execute(
            _notifications.insert().values(values).returning(_notifications.c.id)
        ).scalar_one()
    else:
        notification_id = session.execute(
            insert_ignoring_conflicts(session, _notifications).values(values).returning(_notifications.c.id)
        ).scalar()
        if notification_id is None:
            return None
    after_commit(session, wake_senders.set)
    return int(notification_id)


def recent(session: Session, *, limit: int = 50, recipient: str | None = None) -> list[Notification]:
    """The newest outbox rows, for the demo outbox page and for care."""
    query = select(Notification).order_by(Notification.id.desc()).limit(min(limit, 500))
    if recipient:
        query = query.where(Notification.recipient == recipient)
    return list(session.scalars(query))
