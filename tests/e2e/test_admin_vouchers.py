"""Staff voucher pages: least privilege per role; the PINs download once."""

from __future__ import annotations

import csv
import io
import re

import pytest

from airtime.accounts import service as accounts
from airtime.db.session import unit_of_work
from tests import staff_helpers
from tests.e2e.test_web import csrf
from tests.snapshot import fingerprint

PASSWORD = "staff password"


def _staff(session_factory, email, role, outlet_id=None):
    with unit_of_work(session_factory) as session:
        accounts.create_staff(session, email=email, password=PASSWORD, role=role, outlet_id=outlet_id)


def _login(client, email):
    """Password and TOTP enrolment through the forms (staff_helpers.log_in)."""
    staff_helpers.log_in(client, email)


def _form_token(client):
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get("/admin/vouchers").text).group(1)


def test_admin_generates_a_batch_downloads_pins_once_and_releases_it(client, session_factory, settings):
    _staff(session_factory, "admin@example.com", "admin")
    _login(client, "admin@example.com")
    token = _form_token(client)
    download = client.post(
        "/admin/vouchers/generate",
        data={
            "value": "10.00",
            "currency": "GBP",
            "quantity": "3",
            "expires_on": "2099-01-01",
            "csrf_token": token,
        },
    )
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert len(rows) == 3 and all(len(row["pin"].replace(" ", "")) == 16 for row in rows)
    released = client.post(
        "/admin/vouchers/action",
        data={
            "operation": "release",
            "first": rows[0]["serial"],
            "last": rows[-1]["serial"],
            "csrf_token": token,
        },
    )
    assert "release: 3" in released.text
    page = client.get(f"/admin/vouchers?serial={rows[0]['serial']}")
    assert "activated" in page.text and rows[0]["pin"] not in page.text


@pytest.mark.parametrize("role", ["care", "supervisor"])
def test_care_and_supervisors_look_up_but_cannot_generate_or_release(client, session_factory, settings, role):
    _staff(session_factory, f"{role}@example.com", role)
    _login(client, f"{role}@example.com")
    token = _form_token(client)
    before = fingerprint(session_factory)
    generate = client.post(
        "/admin/vouchers/generate",
        data={"value": "10.00", "quantity": "3", "expires_on": "2099-01-01", "csrf_token": token},
    )
    assert generate.status_code == 403
    release = client.post(
        "/admin/vouchers/action", data={"operation": "release", "first": "10000001", "csrf_token": token}
    )
    assert release.status_code == 403
    assert fingerprint(session_factory) == before
    assert client.get("/admin/vouchers?serial=10000001").status_code == 404  # looked up: not found


def test_outlet_staff_and_customers_are_kept_out(client, session_factory, settings):
    from tests import factories, voucher_helpers

    with unit_of_work(session_factory) as session:
        shop = voucher_helpers.outlet(session, float_minor=0)
        factories.customer(session, settings, email="ana@example.com")
    _staff(session_factory, "till@example.com", "outlet", outlet_id=shop.id)
    assert client.get("/admin/vouchers", follow_redirects=False).headers["location"] == "/admin/login"
    refused = client.post(
        "/admin/login",
        data={"email": "till@example.com", "password": PASSWORD, "csrf_token": csrf(client, "/admin/login")},
    )
    assert refused.status_code == 401
    assert (
        client.post(
            "/admin/login",
            data={
                "email": "ana@example.com",
                "password": factories.PASSWORD,
                "csrf_token": csrf(client, "/admin/login"),
            },
        ).status_code
        == 401
    )


def test_blocking_needs_a_reason(client, session_factory, settings):
    _staff(session_factory, "admin@example.com", "admin")
    _login(client, "admin@example.com")
    refused = client.post(
        "/admin/vouchers/action",
        data={"operation": "block", "first": "10000001", "reason": "", "csrf_token": _form_token(client)},
    )
    assert refused.status_code == 422 and "reason" in refused.text
