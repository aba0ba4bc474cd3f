"""Money: parsing what people type, formatting for them, the one rounding rule, exact splits."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airtime.errors import ValidationFailed
from airtime.money import (
    AMOUNT_MINOR_MAX,
    Money,
    apply_rate,
    format_money,
    minor_unit_exponent,
    parse_money,
    split,
    validate_currency,
)

# ---------------------------------------------------------------------------------------------
# Parsing


@pytest.mark.parametrize(
    ("text", "currency", "amount_minor"),
    [
        ("20", "USD", 2000),
        ("20.5", "USD", 2050),
        ("20.50", "USD", 2050),
        ("0.01", "USD", 1),
        ("$1,020.00", "USD", 102000),
        ("1,234,567.89", "USD", 123456789),
        ("  20  ", "USD", 2000),
        ("$ 20", "USD", 2000),
        ("USD 20", "USD", 2000),
        ("usd20", "USD", 2000),
        ("1 020.00", "USD", 102000),
        ("€7.25", "EUR", 725),
        ("20", "JPY", 20),
        ("¥1,000", "JPY", 1000),
        ("20.0", "JPY", 20),
        ("¥20.00", "CNY", 2000),
        ("20.5", "usd", 2050),
    ],
)
def test_parse_money_reads_what_people_type(text: str, currency: str, amount_minor: int) -> None:
    money = parse_money(text, currency)
    assert money == Money(amount_minor, currency.upper())
    assert isinstance(money.amount_minor, int)


@pytest.mark.parametrize(
    ("text", "currency"),
    [
        ("20.505", "USD"),
        ("0.001", "USD"),
        ("20.5", "JPY"),
        ("1.5", "KRW"),
        ("1.1234", "KWD"),
        # Longer than the default 28-digit decimal context: must be refused, not rounded.
        ("1.000000000000000000000000000001", "USD"),
        ("99999999999999999999999999.999", "USD"),
    ],
)
def test_parse_money_refuses_more_decimals_than_the_currency_has(text: str, currency: str) -> None:
    with pytest.raises(ValidationFailed, match="decimal places"):
        parse_money(text, currency)


def test_kuwaiti_dinar_has_three_decimals_and_yen_none() -> None:
    assert minor_unit_exponent("JPY") == 0
    assert minor_unit_exponent("USD") == 2
    assert minor_unit_exponent("KWD") == 3
    assert parse_money("1.125", "KWD") == Money(1125, "KWD")


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "abc",
        "20abc",
        "twenty",
        "20.",
        ".5",
        "1e3",
        "NaN",
        "Infinity",
        "0x10",
        "20..5",
        "20.5.1",
        "$",
        "$$20",
        "20$",
        "+20",
        # A decimal comma is refused rather than read as a thousands separator (205 or 2050).
        "20,5",
        "20,50",
        "1,0200",
        "20 5",
        ",100",
    ],
)
def test_parse_money_refuses_garbage(text: str) -> None:
    with pytest.raises(ValidationFailed, match="Not an amount"):
        parse_money(text, "USD")


@pytest.mark.parametrize("text", ["-20", "-0.01", "$-20", "-$20", "USD -5"])
def test_parse_money_refuses_negative_amounts(text: str) -> None:
    with pytest.raises(ValidationFailed):
        parse_money(text, "USD")


def test_parse_money_refuses_amounts_too_large_for_the_ledger() -> None:
    with pytest.raises(ValidationFailed, match="too large"):
        parse_money("100000000000000", "USD")  # 10^16 cents
    assert parse_money("10000000000000", "USD").amount_minor == AMOUNT_MINOR_MAX


def test_parse_money_refuses_unknown_currency() -> None:
    with pytest.raises(ValidationFailed, match="Unknown currency"):
        parse_money("20", "ABC")


@given(
    amount_minor=st.integers(min_value=0, max_value=AMOUNT_MINOR_MAX),
    currency=st.sampled_from(["USD", "JPY", "CNY", "KWD", "EUR"]),
)
def test_plain_decimal_text_round_trips(amount_minor: int, currency: str) -> None:
    exponent = minor_unit_exponent(currency)
    text = str(Decimal(amount_minor).scaleb(-exponent).quantize(Decimal(1).scaleb(-exponent)))
    assert parse_money(text, currency) == Money(amount_minor, currency)


# ---------------------------------------------------------------------------------------------
# Formatting


@pytest.mark.parametrize(
    ("amount_minor", "currency", "language", "expected"),
    [
        (2000, "USD", "en", "$20.00"),
        (102000, "USD", "en", "$1,020.00"),
        (5, "USD", "en", "$0.05"),
        (-2000, "USD", "en", "-$20.00"),
        (2000, "CNY", "zh_Hans", "¥20.00"),
        (2000, "USD", "zh_Hans", "US$20.00"),
        (2000, "JPY", "en", "¥2,000"),
        (2000, "USD", "xx", "$20.00"),  # an unknown language falls back to English
    ],
)
def test_format_money(amount_minor: int, currency: str, language: str, expected: str) -> None:
    assert format_money(amount_minor, currency, language) == expected


def test_money_formats_itself() -> None:
    assert str(Money(2000, "USD")) == "$20.00"
    assert Money(2000, "CNY").format("zh_Hans") == "¥20.00"
    assert Money(2050, "USD").to_decimal() == Decimal("20.50")
    assert Money(20, "JPY").to_decimal() == Decimal(20)


# ---------------------------------------------------------------------------------------------
# The one rounding rule


@pytest.mark.parametrize(
    ("amount_minor", "rate_basis_points", "expected"),
    [
        # Exact halves go to the even neighbour, up or down.
        (1, 5000, 0),  # 0.5 -> 0
        (3, 5000, 2),  # 1.5 -> 2
        (5, 5000, 2),  # 2.5 -> 2
        (15, 5000, 8),  # 7.5 -> 8
        (25, 5000, 12),  # 12.5 -> 12
        (-5, 5000, -2),  # -2.5 -> -2
        (-15, 5000, -8),  # -7.5 -> -8
        (50, 100, 0),  # 1% of 50 = 0.5 -> 0
        (150, 100, 2),  # 1% of 150 = 1.5 -> 2
        (250, 100, 2),  # 1% of 250 = 2.5 -> 2
        # Not halves: ordinary nearest.
        (1000, 333, 33),  # 33.3
        (1000, 337, 34),  # 33.7
        (2000, 1000, 200),  # 10% bonus on $20.00
        (999, 1250, 125),  # 124.875
        (0, 1234, 0),
        (12345, 0, 0),
        (12345, 10_000, 12345),
    ],
)
def test_apply_rate_rounds_half_to_even(amount_minor: int, rate_basis_points: int, expected: int) -> None:
    assert apply_rate(amount_minor, rate_basis_points) == expected


@given(
    amount_minor=st.integers(min_value=-AMOUNT_MINOR_MAX, max_value=AMOUNT_MINOR_MAX),
    rate_basis_points=st.integers(min_value=0, max_value=100_000),
)
def test_apply_rate_is_the_nearest_integer_ties_to_even(amount_minor: int, rate_basis_points: int) -> None:
    exact = Fraction(amount_minor * rate_basis_points, 10_000)
    result = apply_rate(amount_minor, rate_basis_points)
    assert abs(result - exact) <= Fraction(1, 2)
    if abs(result - exact) == Fraction(1, 2):
        assert result % 2 == 0
    assert apply_rate(-amount_minor, rate_basis_points) == -result


# ---------------------------------------------------------------------------------------------
# Splitting


@pytest.mark.parametrize(
    ("amount_minor", "weights", "expected"),
    [
        (100, [1, 1, 1], [34, 33, 33]),
        (101, [1, 1, 1], [34, 34, 33]),
        (-100, [1, 1, 1], [-34, -33, -33]),
        (7, [0, 1, 2], [0, 2, 5]),
        (10, [1], [10]),
        (0, [3, 7], [0, 0]),
        (1, [1, 1], [1, 0]),  # a tie goes to the earlier part
    ],
)
def test_split_examples(amount_minor: int, weights: list[int], expected: list[int]) -> None:
    assert split(amount_minor, weights) == expected


@pytest.mark.parametrize("weights", [[], [0, 0], [1, -1], [-1]])
def test_split_refuses_bad_weights(weights: list[int]) -> None:
    with pytest.raises(ValidationFailed):
        split(100, weights)


@given(
    amount_minor=st.integers(min_value=-AMOUNT_MINOR_MAX, max_value=AMOUNT_MINOR_MAX),
    weights=st.lists(st.integers(min_value=0, max_value=10_000), min_size=1, max_size=12).filter(any),
)
def test_split_parts_sum_exactly_and_stay_within_one_unit_of_the_exact_share(
    amount_minor: int, weights: list[int]
) -> None:
    parts = split(amount_minor, weights)
    assert len(parts) == len(weights)
    assert sum(parts) == amount_minor
    total = sum(weights)
    for part, weight in zip(parts, weights, strict=True):
        assert abs(part - Fraction(amount_minor * weight, total)) < 1
        if weight == 0:
            assert part == 0
    # A refund split the same way reverses every part exactly.
    assert split(-amount_minor, weights) == [-part for part in parts]


# ---------------------------------------------------------------------------------------------
# Money values


def test_money_arithmetic_in_one_currency() -> None:
    assert Money(500, "USD") + Money(250, "USD") == Money(750, "USD")
    assert Money(500, "USD") - Money(750, "USD") == Money(-250, "USD")
    assert -Money(500, "USD") == Money(-500, "USD")


@pytest.mark.parametrize("operation", [lambda a, b: a + b, lambda a, b: a - b])
def test_money_arithmetic_refuses_mixed_currencies(operation) -> None:
    with pytest.raises(ValidationFailed, match="Cannot combine USD with EUR"):
        operation(Money(500, "USD"), Money(500, "EUR"))


def test_money_normalises_and_checks_its_currency() -> None:
    assert Money(1, " usd ").currency == "USD"
    for code in ("ABC", "US", "", "DOLLAR"):
        with pytest.raises(ValidationFailed):
            Money(1, code)
    assert validate_currency("cny") == "CNY"


@pytest.mark.parametrize("amount", [1.5, Decimal("1"), "1", True, None])
def test_money_amount_must_be_an_int(amount: object) -> None:
    with pytest.raises(TypeError):
        Money(amount, "USD")  # type: ignore[arg-type]


def test_money_amount_is_bounded() -> None:
    assert Money(AMOUNT_MINOR_MAX, "USD").amount_minor == AMOUNT_MINOR_MAX
    assert Money(-AMOUNT_MINOR_MAX, "USD").amount_minor == -AMOUNT_MINOR_MAX
    with pytest.raises(ValidationFailed):
        Money(AMOUNT_MINOR_MAX + 1, "USD")
    with pytest.raises(ValidationFailed):
        Money(-AMOUNT_MINOR_MAX - 1, "USD")


def test_money_is_immutable() -> None:
    money = Money(1, "USD")
    with pytest.raises(AttributeError):
        money.amount_minor = 2  # type: ignore[misc]
