"""Phone numbers: everything is stored as E.164 (+4477...), checked with ``phonenumbers``."""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers

from airtime.errors import ValidationFailed

_ICCID_PATTERN = re.compile(r"^89\d{16,20}$")
_NUMBER_TEXT_LENGTH_MAX = 40
# Numbers recently read, per process: parsing one with ``phonenumbers`` costs ~40 µs (its
# patterns outgrow the ``re`` module's cache), and the busy requests all start with a number.
_NUMBERS_CACHED = 16_384


def normalize_msisdn(text: str, *, default_region: str) -> str:
    """Return the number in E.164, or refuse it with a message a person understands.

    Numbers typed without a ``+country`` prefix are read as numbers of ``default_region``.
    """
    cleaned = (text or "").strip()
    if not cleaned:
        raise ValidationFailed("Enter a phone number.", field="msisdn")
    if len(cleaned) > _NUMBER_TEXT_LENGTH_MAX:
        raise ValidationFailed("That phone number is too long.", field="msisdn")
    if cleaned.startswith("00"):
        cleaned = "+" + cleaned[2:]
    return _e164(cleaned, None if cleaned.startswith("+") else default_region)


@lru_cache(maxsize=_NUMBERS_CACHED)
def _e164(cleaned: str, region: str | None) -> str:
    """A number text (trimmed, ``00`` read as ``+``) in E.164; refusals are not cached."""
    try:
        parsed = phonenumbers.parse(cleaned, region)
    except phonenumbers.NumberParseException as exc:
        raise ValidationFailed(
            "%(value)s is not a phone number. Use the international format, e.g. +44 7911 123456.",
            value=cleaned,
            field="msisdn",
        ) from exc
    if not phonenumbers.is_valid_number(parsed):
        raise ValidationFailed(
            "%(value)s is not a valid phone number. Check the country code and the digits.",
            value=cleaned,
            field="msisdn",
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def format_msisdn(msisdn: str) -> str:
    """The number as people read it: ``+44 7700 900123``."""
    try:
        return phonenumbers.format_number(
            phonenumbers.parse(msisdn, None), phonenumbers.PhoneNumberFormat.INTERNATIONAL
        )
    except phonenumbers.NumberParseException:
        return msisdn


def mask_msisdn(msisdn: str) -> str:
    """Enough of the number to confirm it is the right one, not enough to harvest it."""
    if len(msisdn) <= 6:
        return "•" * len(msisdn)
    return msisdn[:4] + "•" * (len(msisdn) - 7) + msisdn[-3:]


def validate_iccid(text: str) -> str:
    """An ICCID: 18 to 22 digits starting with 89 (telecom), with a valid Luhn check digit."""
    digits = re.sub(r"[\s-]", "", text or "")
    if not _ICCID_PATTERN.match(digits) or not _luhn_valid(digits):
        raise ValidationFailed(
            "%(value)s is not a valid SIM number (ICCID).", value=(text or "")[:40], field="iccid"
        )
    return digits


def _luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def luhn_complete(prefix: str) -> str:
    """Append the Luhn check digit to a digit string (used to make demo and test ICCIDs)."""
    for check in "0123456789":
        if _luhn_valid(prefix + check):
            return prefix + check
    raise AssertionError("unreachable: one check digit always fits")
