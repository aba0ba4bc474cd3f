"""Sending the outbox after commit: claim due rows, deliver, record the result."""

from __future__ import annotations

import threading
from datetime import timedelta

import structlog
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from airtime.clock import utcnow
from airtime.db.dialect import is_postgresql
from airtime.db.session import unit_of_work
from airtime.notifications.models import Notification, NotificationStatus
from airtime.notifications.providers import Provider
from airtime.notifications.service import wake_senders

log = structlog.get_logger(__name__)

CLAIM_BATCH_SIZE = 50
# A row claimed this long ago by a sender that never reported back is tried again.
CLAIM_TIMEOUT = timedelta(minutes=10)
RETRY_DELAY_BASE = timedelta(minutes=1)


def _claim(session: Session, limit: int) -> list[Notification]:
    now = utcnow()
    query = (
        select(Notification)
        .where(
            or_(
                (Notification.status == NotificationStatus.PENDING) & (Notification.next_attempt_at <= now),
                (Notification.status == NotificationStatus.SENDING)
                & (Notification.claimed_at < now - CLAIM_TIMEOUT),
            )
        )
        .order_by(Notification.id)
        .limit(limit)
    )
    if is_postgresql(session):
        # Several app processes may send at once; each takes rows the others have not locked.
        query = query.with_for_update(skip_locked=True)
    rows = list(session.scalars(query))
    for row in rows:
        row.status = NotificationStatus.SENDING
        row.claimed_at = now
        row.attempts += 1
    return rows


def send_due(
    factory: sessionmaker[Session], providers: dict[str, Provider], *, attempts_max: int, limit: int = 500
) -> int:
    """Send what is due, in claimed batches; returns how many were sent."""
    sent = 0
    remaining = limit
    while remaining > 0:
        with unit_of_work(factory) as session:
            claimed = _claim(session, min(CLAIM_BATCH_SIZE, remaining))
        if not claimed:
            break
        remaining -= len(claimed)
        for notification in claimed:
            provider = providers[notification.channel]
            try:
                provider_reference = provider.send(notification)
            except Exception as exc:  # noqa: BLE001 - any provider failure is retried, never raised
                _record_failure(factory, notification, exc, attempts_max)
                continue
            with unit_of_work(factory) as session:
                session.execute(
                    update(Notification)
                    .where(Notification.id == notification.id)
                    .values(
                        status=NotificationStatus.SENT,
                        sent_at=utcnow(),
                        provider=provider.name,
                        last_error=provider_reference[:500],
                    )
                )
            sent += 1
    return sent


def _record_failure(
    factory: sessionmaker[Session], notification: Notification, exc: Exception, attempts_max: int
) -> None:
    # A failure no retry can fix (an invalid number, an opted-out recipient) ends at once.
    final = notification.attempts >= attempts_max or getattr(exc, "permanent", False)
    log.warning("notification_failed", id=notification.id, attempts=notification.attempts, error=str(exc))
    with unit_of_work(factory) as session:
        session.execute(
            update(Notification)
            .where(Notification.id == notification.id)
            .values(
                status=NotificationStatus.FAILED if final else NotificationStatus.PENDING,
                next_attempt_at=utcnow() + RETRY_DELAY_BASE * 2 ** (notification.attempts - 1),
                last_error=f"{type(exc).__name__}: {exc}"[:500],
            )
        )


class SenderThread:
    """Sends the outbox in the background of a server process: woken after each commit
    that wrote messages, and every few seconds for rows written by other processes."""

    def __init__(
        self,
        factory: sessionmaker[Session],
        providers: dict[str, Provider],
        *,
        attempts_max: int,
        poll_seconds: float = 5.0,
    ) -> None:
        self.factory = factory
        self.providers = providers
        self.attempts_max = attempts_max
        self.poll_seconds = poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notification-sender", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        wake_senders.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            wake_senders.wait(self.poll_seconds)
            wake_senders.clear()
            try:
                send_due(self.factory, self.providers, attempts_max=self.attempts_max)
            except Exception:
                log.exception("notification_sender_error")
