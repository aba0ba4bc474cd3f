"""The number-keeping calendar: an iCalendar feed of a customer's line deadlines, behind a
secret link that calendar apps poll.

The link carries the customer id and an HMAC of it under the app's secret key, salted with
the time the password last changed: nothing is stored, a made-up link fails, and changing
the password gives a new link and kills the old one (the revocation a leaked link needs).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlsplit

from icalendar import Alarm, Calendar, Event
from sqlalchemy.orm import Session

from airtime.accounts.models import Customer
from airtime.accounts.phone import format_msisdn
from airtime.i18n import translations
from airtime.lifecycle.numbers import (
    DeadlineKind,
    NumberView,
    customer_numbers,
    deadline_text,
    keep_alive_text,
)

ALARM_DAYS_BEFORE = 3
# Calendar apps that honour it poll twice a day; deadlines move by whole days.
REFRESH_INTERVAL = timedelta(hours=12)
_TOKEN_PATTERN = re.compile(r"(\d{1,18})-([A-Za-z0-9_-]{43})")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _signature(customer: Customer, secret_key: str) -> str:
    changed_microseconds = (customer.password_changed_at - _EPOCH) // timedelta(microseconds=1)
    message = f"airtime.calendar:{customer.id}:{changed_microseconds}".encode()
    digest = hmac.new(secret_key.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def calendar_token(customer: Customer, *, secret_key: str) -> str:
    """The secret part of the customer's feed link."""
    return f"{customer.id}-{_signature(customer, secret_key)}"


def customer_for_token(session: Session, *, token: str, secret_key: str) -> Customer | None:
    """The customer whose feed this token opens, or None for a wrong, made-up or revoked one."""
    match = _TOKEN_PATTERN.fullmatch(token)
    if match is None:
        return None
    customer = session.get(Customer, int(match.group(1)))
    if customer is None:
        return None
    if not hmac.compare_digest(match.group(2), _signature(customer, secret_key)):
        return None
    return customer


def _number_label(number: NumberView) -> str:
    shown = format_msisdn(number.msisdn)
    return f"{shown} ({number.nickname})" if number.nickname else shown


def _summary(kind: str, number: NumberView, language: str) -> str:
    _ = translations(language).gettext
    values = {"number": _number_label(number)}
    if kind == DeadlineKind.VALIDITY_END:
        return _("%(number)s: last valid day, top up to keep it") % values
    if kind == DeadlineKind.SUSPENSION:
        return _("%(number)s is suspended today unless you top up") % values
    return _("%(number)s is lost today unless you top up") % values


def feed(session: Session, *, customer: Customer, base_url: str, operator_name: str, now: datetime) -> bytes:
    """The customer's feed: one all-day event per deadline still ahead, each with an alarm
    a few days before. UIDs name the line and the kind of deadline, so a top-up that moves a
    date updates the event in the subscriber's calendar instead of adding another."""
    language = customer.language
    _ = translations(language).gettext
    host = urlsplit(base_url).hostname or "airtime"
    calendar = Calendar()
    calendar.add("prodid", "-//Airtime//Number keeping//EN")
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("x-wr-calname", f"{_('My numbers')} · {operator_name}")
    calendar.add("refresh-interval", REFRESH_INTERVAL, parameters={"VALUE": "DURATION"})
    calendar.add("x-published-ttl", REFRESH_INTERVAL)
    today: date = now.date()
    for number in customer_numbers(session, customer_id=customer.id, today=today):
        topup_url = f"{base_url.rstrip('/')}/topup?line={number.line_id}"
        for deadline in number.deadlines:
            summary = _summary(deadline.kind, number, language)
            lines = [deadline_text(deadline.kind, deadline.on, language)]
            if number.keep_alive:
                lines.append(keep_alive_text(number.keep_alive, language))
            lines.append(_("Top up: %(url)s") % {"url": topup_url})
            event = Event()
            event.add("uid", f"line-{number.line_id}-{deadline.kind}@{host}")
            event.add("dtstamp", now)
            event.add("dtstart", deadline.on)
            event.add("dtend", deadline.on + timedelta(days=1))
            event.add("summary", summary)
            event.add("description", "\n".join(lines))
            event.add("url", topup_url)
            event.add("transp", "TRANSPARENT")
            alarm = Alarm()
            alarm.add("action", "DISPLAY")
            alarm.add("description", summary)
            alarm.add("trigger", timedelta(days=-ALARM_DAYS_BEFORE))
            event.add_component(alarm)
            calendar.add_component(event)
    body: bytes = calendar.to_ical()
    return body
