"""Announcements: an admin publishes, edits and ends them; the portal shows the running ones
in the reader's language; bad input is refused with nothing changed; only admins manage them."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import func, select

from airtime.accounts.models import Customer
from airtime.announcements import service as announcements
from airtime.announcements.models import Announcement
from airtime.care.models import AuditEntry
from airtime.clock import utcnow
from airtime.db.session import unit_of_work
from tests import factories, staff_helpers
from tests.e2e.test_web import csrf, register

FORMAT = "%Y-%m-%dT%H:%M"


def _admin(client, session_factory, settings, role="admin"):
    with unit_of_work(session_factory) as session:
        staff = staff_helpers.staff_user(session, email=f"{role}@example.com", role=role)
    staff_helpers.open_staff_session(client, session_factory, settings, staff.id)


def _form(client, **overrides):
    now = utcnow()
    values = {
        "level": "promo",
        "title_en": "Double data weekend",
        "body_en": "Top up 10 and get 10 GB.",
        "title_zh": "双倍流量周末",
        "body_zh": "充值10即送10GB。",
        "starts_at": (now - timedelta(hours=1)).strftime(FORMAT),
        "ends_at": (now + timedelta(days=2)).strftime(FORMAT),
        "csrf_token": csrf(client, "/admin/announcements"),
    }
    values.update(overrides)
    return values


def _snapshot(session_factory):
    with unit_of_work(session_factory) as session:
        return [
            (row.id, row.level, row.title_en, row.body_zh, row.starts_at, row.ends_at, row.updated_at)
            for row in session.scalars(select(Announcement).order_by(Announcement.id))
        ]


def test_published_announcement_shows_on_the_portal_in_each_language_until_ended(
    client, session_factory, settings
):
    _admin(client, session_factory, settings)
    published = client.post("/admin/announcements", data=_form(client), follow_redirects=False)
    assert published.status_code == 303
    home = client.get("/", headers={"Accept-Language": "en"})
    assert "Double data weekend" in home.text and "双倍流量周末" not in home.text
    chinese = client.get("/", headers={"Accept-Language": "zh-CN"})
    assert "双倍流量周末" in chinese.text and "充值10即送10GB。" in chinese.text
    register(client, "reader@example.com")
    assert "Double data weekend" in client.get("/lines").text
    with unit_of_work(session_factory) as session:
        reader = session.scalar(select(Customer).where(Customer.email == "reader@example.com"))
        line = factories.line(session, settings, customer_id=reader.id)
    assert "Double data weekend" in client.get(f"/lines/{line.id}").text
    with unit_of_work(session_factory) as session:
        announcement_id = session.scalar(select(Announcement.id))
    edited = client.post(
        f"/admin/announcements/{announcement_id}",
        data=_form(client, level="price_change", title_en="New prices from May"),
        follow_redirects=False,
    )
    assert edited.status_code == 303
    assert "New prices from May" in client.get("/").text
    ended = client.post(
        f"/admin/announcements/{announcement_id}/end",
        data={"csrf_token": csrf(client, "/admin/announcements")},
        follow_redirects=False,
    )
    assert ended.status_code == 303
    assert "New prices from May" not in client.get("/").text
    assert "ended" in client.get("/admin/announcements").text
    # Each change is in the audit log, by whom, with the announcement before and after.
    with unit_of_work(session_factory) as session:
        entries = session.scalars(
            select(AuditEntry).where(AuditEntry.subject_type == "announcement").order_by(AuditEntry.id)
        ).all()
    assert [(e.action, e.staff_email, e.subject_id) for e in entries] == [
        ("publish_announcement", "admin@example.com", str(announcement_id)),
        ("edit_announcement", "admin@example.com", str(announcement_id)),
        ("end_announcement", "admin@example.com", str(announcement_id)),
    ]
    assert entries[1].before["level"] == "promo" and entries[1].after["level"] == "price_change"
    assert entries[1].after["title_en"] == "New prices from May"
    assert entries[2].before["ends_at"] > entries[2].after["ends_at"]


def test_a_scheduled_announcement_shows_only_inside_its_window(client, session_factory, settings):
    _admin(client, session_factory, settings)
    starts = utcnow() + timedelta(days=1)
    form = _form(
        client, starts_at=starts.strftime(FORMAT), ends_at=(starts + timedelta(days=1)).strftime(FORMAT)
    )
    client.post("/admin/announcements", data=form)
    assert "Double data weekend" not in client.get("/").text
    with (
        time_machine.travel(starts + timedelta(hours=1), tick=False),
        unit_of_work(session_factory) as session,
    ):
        assert [row.title_en for row in announcements.showing(session)] == ["Double data weekend"]
    with (
        time_machine.travel(starts + timedelta(days=2), tick=False),
        unit_of_work(session_factory) as session,
    ):
        assert announcements.showing(session) == []


@pytest.mark.parametrize(
    "overrides",
    [
        {"title_zh": ""},
        {"body_en": "   "},
        {"title_en": "x" * 121},
        {"level": "shout"},
        {"starts_at": "tomorrow"},
        {"ends_at": ""},
        {"ends_at": "2020-01-01T00:00"},
        {"ends_at": "2099-01-01T00:00"},
    ],
)
def test_bad_input_is_refused_and_nothing_changes(client, session_factory, settings, overrides):
    _admin(client, session_factory, settings)
    client.post("/admin/announcements", data=_form(client))
    before = _snapshot(session_factory)
    refused = client.post("/admin/announcements", data=_form(client, **overrides))
    assert refused.status_code == 422 and 'class="error"' in refused.text
    assert _snapshot(session_factory) == before
    edit_refused = client.post(f"/admin/announcements/{before[0][0]}", data=_form(client, **overrides))
    assert edit_refused.status_code == 422
    assert _snapshot(session_factory) == before


@pytest.mark.parametrize("role", ["care", "supervisor", "outlet"])
def test_only_admins_manage_announcements(client, session_factory, settings, role):
    _admin(client, session_factory, settings, role)
    assert client.get("/admin/announcements").status_code == 403
    token = csrf(client, "/")
    refused = client.post("/admin/announcements", data={"csrf_token": token, "title_en": "x"})
    assert refused.status_code == 403
    with unit_of_work(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(Announcement)) == 0


def test_unknown_announcement_is_not_found(client, session_factory, settings):
    _admin(client, session_factory, settings)
    assert client.get("/admin/announcements/999").status_code == 404
    assert (
        client.post(
            "/admin/announcements/999/end", data={"csrf_token": csrf(client, "/admin/announcements")}
        ).status_code
        == 404
    )
