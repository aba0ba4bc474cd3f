"""Money as integer minor units plus an ISO 4217 currency; parsing and formatting for people.

The one rounding rule: when a rate is applied to an amount (bonus percentages, commissions,
fees), the exact result is computed with integers and rounded **half to even** to the
currency's minor unit (see :func:`apply_rate`). Half-to-even is unbiased over many
transactions, so neither the operator nor the subscriber gains systematically from
rounding, and it is what accounting systems and IEEE 754 use by default. Splitting an
amount into parts (:func:`split`) never rounds: the parts always add up to the whole.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation

from babel.numbers import format_currency, get_currency_precision, get_currency_symbol, list_currencies

from airtime.errors import ValidationFailed

_KNOWN_CURRENCIES = frozenset(list_currencies())
# Keep amounts well inside a signed 64-bit column, whatever the currency.
AMOUNT_MINOR_MAX = 10**15
_AMOUNT_PATTERN = re.compile(r"^\d+(?:\.\d+)?$")
# Commas or spaces are accepted only as thousands separators ("1,020.00"), so "20,5" typed with
# a decimal comma is refused instead of being read as 205.
_GROUPED_AMOUNT_PATTERN = re.compile(r"^\d{1,3}(?:[, ]\d{3})+(?:\.\d+)?$")
_BABEL_LOCALES = {"en": "en", "zh_Hans": "zh_Hans_CN"}


def validate_currency(code: str) -> str:
    """Return the upper-case ISO 4217 code, or refuse an unknown one."""
    normalised = code.strip().upper()
    if len(normalised) != 3 or normalised not in _KNOWN_CURRENCIES:
        raise ValidationFailed("Unknown currency code: %(code)s", code=code[:10])
    return normalised


def minor_unit_exponent(currency: str) -> int:
    """Number of decimal places of the currency's minor unit (2 for USD, 0 for JPY)."""
    return int(get_currency_precision(validate_currency(currency)))


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount: ``amount_minor`` in the currency's minor unit (cents, fen, ...)."""

    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.amount_minor, int) or isinstance(self.amount_minor, bool):
            raise TypeError("amount_minor must be an int")
        if abs(self.amount_minor) > AMOUNT_MINOR_MAX:
            raise ValidationFailed("Amount is too large")
        object.__setattr__(self, "currency", validate_currency(self.currency))

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValidationFailed("Cannot combine %(a)s with %(b)s", a=self.currency, b=other.currency)

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def to_decimal(self) -> Decimal:
        """The amount in major units, exactly."""
        return Decimal(self.amount_minor).scaleb(-minor_unit_exponent(self.currency))

    def format(self, language: str = "en") -> str:
        """Format for people: ``$20.00`` in English, ``¥20.00`` for yuan in Chinese."""
        return format_money(self.amount_minor, self.currency, language)

    def __str__(self) -> str:
        return self.format()


def parse_money(text: str, currency: str) -> Money:
    """Parse what a person typed ("20", "20.5", "$1,020.00") into exact minor units.

    More decimal places than the currency has are refused rather than rounded, so a
    typed amount is never silently changed.
    """
    currency = validate_currency(currency)
    cleaned = text.strip()
    symbol = get_currency_symbol(currency, locale="en")
    for prefix in (symbol, currency, "$", "¥", "€", "£"):
        if cleaned.upper().startswith(prefix.upper()):
            cleaned = cleaned[len(prefix) :].strip()
            break
    if _GROUPED_AMOUNT_PATTERN.match(cleaned):
        cleaned = cleaned.replace(",", "").replace(" ", "")
    if not _AMOUNT_PATTERN.match(cleaned):
        raise ValidationFailed("Not an amount: %(text)s", text=text[:40])
    try:
        value = Decimal(cleaned)
    except InvalidOperation as exc:  # pragma: no cover - the pattern already rules this out
        raise ValidationFailed("Not an amount: %(text)s", text=text[:40]) from exc
    exponent = minor_unit_exponent(currency)
    # Scale in a context wide enough for every typed digit: the default 28-digit context
    # would round "1.000…0001" to 1.00 before the decimal-places check could see it.
    scaled = value.scaleb(exponent, context=Context(prec=len(cleaned) + 1))
    if scaled != scaled.to_integral_value():
        raise ValidationFailed(
            "%(currency)s amounts have at most %(places)s decimal places", currency=currency, places=exponent
        )
    return Money(int(scaled), currency)


# Formatting through babel costs about 40 µs and every receipt and API answer does it a few
# times, mostly for the same amounts: remember the latest few thousand.
@functools.lru_cache(maxsize=4096)
def format_money(amount_minor: int, currency: str, language: str = "en") -> str:
    """Format minor units for people in the given language, e.g. ``$20.00``, ``¥20.00``."""
    exponent = minor_unit_exponent(currency)
    value = Decimal(amount_minor).scaleb(-exponent)
    return str(format_currency(value, currency, locale=_BABEL_LOCALES.get(language, "en")))


def apply_rate(amount_minor: int, rate_basis_points: int) -> int:
    """``amount × rate`` where the rate is in basis points (1% = 100), rounded half to even."""
    exact = Decimal(amount_minor) * Decimal(rate_basis_points) / Decimal(10_000)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def split(amount_minor: int, weights: list[int]) -> list[int]:
    """Split an amount by integer weights; the parts always sum to the amount exactly.

    Remainders go one minor unit at a time to the parts with the largest fractional share
    (largest remainder method), ties to the earlier part.
    """
    if not weights or any(weight < 0 for weight in weights) or sum(weights) == 0:
        raise ValidationFailed("Weights must be non-negative and not all zero")
    if amount_minor < 0:
        # Mirror the positive split, so splitting a refund reverses each part exactly.
        return [-part for part in split(-amount_minor, weights)]
    total = sum(weights)
    shares = [amount_minor * weight // total for weight in weights]
    remainders = [(amount_minor * weight % total, -index) for index, weight in enumerate(weights)]
    for _, negative_index in sorted(remainders, reverse=True)[: amount_minor - sum(shares)]:
        shares[-negative_index] += 1
    return shares
