"""Password hashing with argon2id and the password rule."""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from airtime.config import get_settings
from airtime.errors import ValidationFailed

PASSWORD_LENGTH_MIN = 8
PASSWORD_LENGTH_MAX = 128


@cache
def _hasher() -> PasswordHasher:
    """argon2id; the defaults are RFC 9106's low-memory profile (64 MiB, 3 passes).

    The cost is a setting so a test suite can use a cheap one; hashes carry their own
    parameters, so changing the cost never locks anyone out (they are rehashed at login).
    """
    settings = get_settings()
    return PasswordHasher(
        time_cost=settings.password_hash_time_cost, memory_cost=settings.password_hash_memory_kib
    )


@cache
def _dummy_hash() -> str:
    """Verified against when an email is unknown, so both paths cost the same time."""
    return _hasher().hash("not-a-real-password")


def check_password_rule(password: str) -> None:
    if len(password) < PASSWORD_LENGTH_MIN:
        raise ValidationFailed(
            "Choose a password of at least %(length)s characters.",
            length=PASSWORD_LENGTH_MIN,
            field="password",
        )
    if len(password) > PASSWORD_LENGTH_MAX:
        raise ValidationFailed(
            "Choose a password of at most %(length)s characters.",
            length=PASSWORD_LENGTH_MAX,
            field="password",
        )


def hash_password(password: str) -> str:
    check_password_rule(password)
    return _hasher().hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True if ``password`` matches; always spends the time of one verification."""
    try:
        return _hasher().verify(password_hash or _dummy_hash(), password[:PASSWORD_LENGTH_MAX]) and bool(
            password_hash
        )
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher().check_needs_rehash(password_hash)
