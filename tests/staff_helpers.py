"""Staff users and sessions for tests: made directly, or logged in through the real forms."""

from __future__ import annotations

import re
from datetime import timedelta

from itsdangerous import Signer
from sqlalchemy.orm import Session, sessionmaker

from airtime.accounts import service as accounts
from airtime.accounts.models import StaffUser
from airtime.accounts.passwords import hash_password
from airtime.clock import utcnow
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.web.context import STAFF_COOKIE

PASSWORD = "staff password"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def staff_user(
    session: Session,
    *,
    email: str,
    role: str,
    outlet_id: int | None = None,
    password: str = PASSWORD,
) -> StaffUser:
    """A staff row of any role (also roles ``create_staff`` does not make itself, like agents')."""
    staff = StaffUser(
        email=email,
        password_hash=hash_password(password),
        role=role,
        outlet_id=outlet_id,
        created_at=utcnow(),
    )
    session.add(staff)
    session.flush()
    return staff


def sign(settings: Settings, name: str, value: str) -> str:
    return Signer(settings.effective_secret_key(), salt=f"airtime.{name}").sign(value).decode()


def open_staff_session(client, factory: sessionmaker[Session], settings: Settings, staff_id: int) -> str:
    """Put a staff session straight into the client's cookies (skips the log-in forms)."""
    with unit_of_work(factory) as session:
        token = accounts.open_session(
            session, kind="staff", lifetime=timedelta(hours=1), staff_user_id=staff_id
        )
    client.cookies.set(STAFF_COOKIE, sign(settings, STAFF_COOKIE, token))
    return token


def csrf_token(client, path: str = "/login") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    match = CSRF.search(page.text)
    assert match is not None
    return match.group(1)


SECRET = re.compile(r"data-totp-secret>([A-Z2-7 ]+)<")


def code_for(secret: str, *, steps_ahead: int = 0) -> str:
    """The TOTP code of ``secret`` now (or a step later: a code is accepted only once)."""
    import time

    import pyotp

    return pyotp.TOTP(secret.replace(" ", "")).at(time.time() + 30 * steps_ahead)


def log_in(
    client, email: str, *, door: str = "/admin/login", password: str = PASSWORD, secret: str = ""
) -> str:
    """Log in through the real forms: password, then enrolment (first time) or the code.
    Returns the TOTP secret for the next log-in (pass it back as ``secret``)."""
    answer = client.post(
        door,
        data={"email": email, "password": password, "csrf_token": csrf_token(client, door)},
        follow_redirects=False,
    )
    assert answer.status_code == 303, answer.text[:500]
    step = answer.headers["location"]
    if step == "/staff/two-factor/enrol":
        page = client.get(step)
        match = SECRET.search(page.text)
        assert match is not None, page.text[:500]
        secret = match.group(1)
        code = code_for(secret)
    elif step == "/staff/two-factor":
        code = code_for(secret, steps_ahead=1)
    else:
        return secret
    done = client.post(
        step, data={"code": code, "csrf_token": csrf_token(client, "/login")}, follow_redirects=False
    )
    assert done.status_code == 303, done.text[:500]
    return secret.replace(" ", "")
