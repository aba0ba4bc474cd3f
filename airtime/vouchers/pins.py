"""Voucher PINs: random digits from the operating system's CSPRNG, stored only as a keyed
hash. A leaked database reveals no PIN: without the server secret, the hashes cannot even be
checked against guesses (a plain SHA-256 of 16 digits could be)."""

from __future__ import annotations

import hmac
import re
import secrets

from airtime.config import Settings

PIN_LENGTH = 16
PIN_LENGTH_ACCEPTED = range(14, 17)
_SEPARATORS = re.compile(r"[\s\-.]")


def pin_key(settings: Settings) -> bytes:
    """The key for PIN hashes, derived from the server secret for this one purpose."""
    return hmac.digest(settings.effective_secret_key().encode(), b"airtime voucher pin v1", "sha256")


def new_pin() -> str:
    """Sixteen uniformly random digits (about 53 bits)."""
    return f"{secrets.randbelow(10**PIN_LENGTH):0{PIN_LENGTH}d}"


def hash_pin(key: bytes, pin: str) -> str:
    return hmac.digest(key, pin.encode(), "sha256").hex()


def normalize_pin(text: str) -> str | None:
    """The digits of a typed PIN (spaces and dashes allowed), or None if it cannot be a PIN."""
    digits = _SEPARATORS.sub("", text or "")
    if not digits.isascii() or not digits.isdigit() or len(digits) not in PIN_LENGTH_ACCEPTED:
        return None
    return digits


def format_pin(pin: str) -> str:
    """Groups of four, as printed on a card."""
    return " ".join(pin[index : index + 4] for index in range(0, len(pin), 4))


def format_serial(serial: int) -> str:
    return f"{serial:012d}"
