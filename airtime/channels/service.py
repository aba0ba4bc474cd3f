"""What the USSD and IVR channels share: sessions, the caller's line and language, PINs.

The channels never post money themselves: a PIN goes through ``vouchers.redeem`` (which ends
in the one crediting step, ``topups.credit``) and a bundle through
``topups.buy_bundle_from_balance``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from airtime.accounts import service as accounts
from airtime.accounts.models import Customer, Line
from airtime.channels.models import PhoneLanguage, PhoneSession
from airtime.clock import utcnow
from airtime.config import Settings
from airtime.db.dialect import insert_ignoring_conflicts
from airtime.errors import AppError
from airtime.i18n import LANGUAGES
from airtime.topups import service as topups
from airtime.topups.models import LineAllowance
from airtime.vouchers import service as vouchers

GATEWAY_ID_LENGTH_MAX = 100


class SessionStatus:
    NEW = "new"  # first time we hear of this session
    LIVE = "live"  # heard of within its timeout
    EXPIRED = "expired"  # heard of, but too long ago: it starts over


@dataclass(frozen=True, slots=True)
class OpenedSession:
    row: PhoneSession
    status: str


def digest(text: str, length: int = 32) -> str:
    """A short stable stand-in for a gateway's id inside idempotency keys (bounded length)."""
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def open_session(
    session: Session, *, channel: str, gateway_id: str, msisdn: str, timeout_seconds: int
) -> OpenedSession:
    """The session row for a gateway's session id, locked for this request; an expired one
    is reset (its data, including any PIN waiting for confirmation, is dropped)."""
    now = utcnow()
    key = f"{channel}:{gateway_id[:GATEWAY_ID_LENGTH_MAX]}"
    # RETURNING says whether this request made the row (rowcount is not reliable for
    # INSERT ... ON CONFLICT DO NOTHING across drivers).
    inserted = (
        session.execute(
            insert_ignoring_conflicts(session, PhoneSession.__table__)
            .values(
                key=key,
                channel=channel,
                msisdn=msisdn[:32],
                text_offset="",
                steps=0,
                data={},
                started_at=now,
                last_seen_at=now,
            )
            .returning(PhoneSession.__table__.c.key)
        ).first()
        is not None
    )
    # A gateway that retries a step sends the same session id: the row lock queues the retry
    # behind the first attempt, which then has already done (and recorded) the work.
    row = session.scalar(
        select(PhoneSession)
        .where(PhoneSession.key == key)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert row is not None
    status = SessionStatus.NEW if inserted else SessionStatus.LIVE
    if status == SessionStatus.LIVE and row.last_seen_at < now - timedelta(seconds=timeout_seconds):
        status = SessionStatus.EXPIRED
        row.data = {}
        row.steps = 0
        row.started_at = now
    row.steps += 1
    row.last_seen_at = now
    return OpenedSession(row=row, status=status)


def caller_line(session: Session, *, msisdn: str, settings: Settings) -> Line | None:
    """The caller's own line, if the calling number is one of ours and still in service."""
    if not msisdn:
        return None
    try:
        return topups.find_topupable_line(session, msisdn=msisdn, settings=settings)
    except AppError:
        return None


def read_line(session: Session, line: Line) -> accounts.LineView:
    view = accounts.line_view(session, line_id=line.id)
    assert view is not None
    return view


def language_for(session: Session, *, msisdn: str, line: Line | None, settings: Settings) -> str:
    """The number's chosen language, else its owner's, else the operator's default."""
    chosen = session.get(PhoneLanguage, msisdn[:32]) if msisdn else None
    if chosen is not None and chosen.language in LANGUAGES:
        return chosen.language
    if line is not None and line.customer_id is not None:
        owner = session.get(Customer, line.customer_id)
        if owner is not None and owner.language in LANGUAGES:
            return owner.language
    return settings.default_language


def remember_language(session: Session, *, msisdn: str, language: str) -> None:
    """Remember the language chosen on a phone channel for this number (not the account's:
    a shared or family line may be called from a phone whose owner reads another language)."""
    assert language in LANGUAGES
    now = utcnow()
    session.execute(
        insert_ignoring_conflicts(session, PhoneLanguage.__table__).values(
            msisdn=msisdn[:32], language=language, chosen_at=now
        )
    )
    row = session.get(PhoneLanguage, msisdn[:32])
    assert row is not None
    row.language = language
    row.chosen_at = now
    session.flush()


def attempt_address(msisdn: str) -> str:
    """What a phone-channel redemption is counted against besides the credited line.

    ``vouchers.redeem`` counts wrong PINs per line, customer and address. A gateway's IP
    address is shared by every caller, so counting against it would lock the whole channel
    out after five wrong PINs from anybody; the calling number is the address a phone
    request really comes from, so it is counted instead (the key is ``ip:tel:+44...``).
    That also stops a caller from guessing PINs by switching the number to top up.
    """
    return f"tel:{msisdn[:32]}"


def redeem_pin(
    session: Session,
    *,
    settings: Settings,
    pin: str,
    line: Line,
    caller_msisdn: str,
    channel: str,
    idempotency_key: str,
    language: str,
) -> vouchers.Redemption:
    """Redeem a PIN from a phone channel, sharing the voucher lockout with every channel."""
    return vouchers.redeem(
        session,
        settings=settings,
        pin=pin,
        line=line,
        channel=channel,
        ip_address=attempt_address(caller_msisdn),
        idempotency_scope=channel,
        idempotency_key=idempotency_key,
        language=language,
    )


def already_bought(session: Session, *, line: Line, idempotency_key: str) -> bool:
    """Whether ``topups.buy_bundle_from_balance`` already ran with this key for this line
    (its grant is keyed by the purchase's transfer id)."""
    source = f"bundle:{line.id}:{idempotency_key}"
    return session.scalar(select(LineAllowance.id).where(LineAllowance.source == source)) is not None
