"""TOTP two-factor for staff (RFC 6238, 30-second steps, 6 digits, pyotp).

- The secret is stored encrypted (Fernet, with a key derived from AIRTIME_SECRET_KEY), so
  a copy of the database alone does not give the codes away.
- Enrolment: a fresh secret is shown once (QR code and text); it counts only once a code
  made from it is confirmed. Showing the enrolment page again makes a new secret.
- A code is accepted at most once: the step it belongs to must be later than the last step
  used, checked and recorded by one conditional UPDATE (two racing requests: one wins).
- A wrong code counts as a failed log-in in the same counters as wrong passwords.
"""

from __future__ import annotations

import hmac
import io

import pyotp
import segno
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import update
from sqlalchemy.orm import Session

from airtime.accounts import ratelimit
from airtime.accounts.models import StaffUser
from airtime.clock import utcnow
from airtime.config import Settings
from airtime.errors import AuthenticationFailed, Conflict, RateLimited
from airtime.security import sealing_key
from airtime.staff.models import StaffTotp

# Roles that must use a second factor; outlet and agent staff may (their tills and APIs
# are limited to their own float), and are asked for a code once they have enrolled.
TOTP_REQUIRED_ROLES = ("care", "supervisor", "admin")
STEP_SECONDS = 30
# A code from the step before or after now is accepted too (clocks drift a little).
VALID_WINDOW_STEPS = 1
CODE_LENGTH_MAX = 10


class CodeRefused(AuthenticationFailed):
    """A wrong, reused or expired code; counted like a wrong password."""

    code = "totp_refused"
    title = "Code refused"
    persist_changes = True


def required_for(role: str) -> bool:
    return role in TOTP_REQUIRED_ROLES


def _fernet(settings: Settings) -> Fernet:
    """A key of its own for TOTP secrets, derived from the server secret."""
    return sealing_key(settings.effective_secret_key(), b"airtime.staff-totp.v1")


def _secret(row: StaffTotp, settings: Settings) -> str:
    try:
        return _fernet(settings).decrypt(row.secret_encrypted.encode()).decode()
    except InvalidToken as error:
        raise Conflict(
            "This two-factor enrolment cannot be read (the server secret changed); ask an admin to reset it."
        ) from error


def is_enrolled(session: Session, *, staff_user_id: int) -> bool:
    row = session.get(StaffTotp, staff_user_id)
    return row is not None and row.confirmed_at is not None


def start_enrolment(session: Session, *, staff: StaffUser, settings: Settings) -> str:
    """A new secret for a staff member not yet enrolled (replacing an unconfirmed one);
    returns it in base32, to be shown once."""
    secret = pyotp.random_base32()
    encrypted = _fernet(settings).encrypt(secret.encode()).decode()
    row = session.get(StaffTotp, staff.id, with_for_update=True, populate_existing=True)
    if row is not None and row.confirmed_at is not None:
        raise Conflict("Two-factor is already set up for this account.")
    if row is None:
        session.add(
            StaffTotp(
                staff_user_id=staff.id, secret_encrypted=encrypted, created_at=utcnow(), last_used_step=0
            )
        )
    else:
        row.secret_encrypted = encrypted
        row.created_at = utcnow()
    session.flush()
    return secret


def provisioning_uri(secret: str, *, email: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer)


def qr_svg(uri: str) -> str:
    """The otpauth URI as an inline SVG QR code (no image is stored or served)."""
    buffer = io.BytesIO()
    segno.make(uri, error="m").save(buffer, kind="svg", scale=4, xmldecl=False, svgns=True, border=2)
    return buffer.getvalue().decode()


def _keys(email: str, ip_address: str) -> tuple[str, str]:
    # The same counters as wrong staff passwords (see accounts.service.authenticate_staff).
    return f"staff-login:email:{email.strip().lower()[:200]}", f"staff-login:ip:{ip_address}"


def _refuse_if_locked_out(session: Session, email: str, ip_address: str, settings: Settings) -> None:
    email_key, ip_key = _keys(email, ip_address)
    window = settings.login_window_minutes
    email_failures, until = ratelimit.failures(session, email_key, window_minutes=window)
    ip_failures, _ = ratelimit.failures(session, ip_key, window_minutes=window)
    if email_failures >= settings.login_failures_max or ip_failures >= settings.login_ip_failures_max:
        raise RateLimited(
            "Too many failed log-ins. Try again after %(until)s UTC.",
            until=f"{until:%Y-%m-%d %H:%M}",
            retry_after=until.isoformat(),
        )


def _refuse(session: Session, email: str, ip_address: str, settings: Settings) -> None:
    for key in _keys(email, ip_address):
        ratelimit.record_failure(session, key, window_minutes=settings.login_window_minutes)
    raise CodeRefused("That code is not right, or was already used. Wait for the next one and try again.")


def _matching_step(secret: str, code: str) -> int | None:
    """The time step whose code this is (now, or one step either side), or None."""
    digits = "".join(character for character in code if character.isdigit())[:CODE_LENGTH_MAX]
    if len(digits) != 6:
        return None
    totp = pyotp.TOTP(secret)
    now_step = int(utcnow().timestamp()) // STEP_SECONDS
    for step in range(now_step - VALID_WINDOW_STEPS, now_step + VALID_WINDOW_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), digits):
            return step
    return None


def verify(
    session: Session,
    *,
    staff: StaffUser,
    code: str,
    ip_address: str,
    settings: Settings,
    confirming: bool = False,
) -> None:
    """Accept ``code`` once (and, when ``confirming``, finish enrolment), or refuse and count it."""
    _refuse_if_locked_out(session, staff.email, ip_address, settings)
    row = session.get(StaffTotp, staff.id)
    if row is None or (row.confirmed_at is None) != confirming:
        _refuse(session, staff.email, ip_address, settings)
        return
    step = _matching_step(_secret(row, settings), code)
    if step is None:
        _refuse(session, staff.email, ip_address, settings)
        return
    values: dict[str, object] = {"last_used_step": step}
    if confirming:
        values["confirmed_at"] = utcnow()
    accepted = session.execute(
        update(StaffTotp)
        .where(StaffTotp.staff_user_id == staff.id, StaffTotp.last_used_step < step)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if accepted.rowcount != 1:  # type: ignore[attr-defined]
        _refuse(session, staff.email, ip_address, settings)


def reset(session: Session, *, staff_user_id: int) -> bool:
    """Forget a staff member's second factor (an admin's action, audited by the caller):
    they enrol again at their next log-in."""
    row = session.get(StaffTotp, staff_user_id)
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True
