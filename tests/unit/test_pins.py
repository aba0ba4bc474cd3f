"""Voucher PINs: made from the CSPRNG, uniform over every 16-digit string."""

from __future__ import annotations

from collections import Counter

from airtime.vouchers import pins as pins_module
from airtime.vouchers.pins import PIN_LENGTH, new_pins


def test_new_pins_are_as_many_16_digit_strings_as_asked():
    for count in (0, 1, 7, 1000):
        made = new_pins(count)
        assert len(made) == count
        assert all(len(pin) == PIN_LENGTH and pin.isdigit() for pin in made)
    assert len(set(new_pins(10_000))) == 10_000  # 53 bits: a repeat here would mean a broken source


def test_new_pins_are_uniform_in_every_digit():
    """Each position, the first included (a candidate above 10**16 not redrawn would make it
    0 or 1 too often), holds each digit a tenth of the time: chi-squared over 20,000 PINs,
    9 degrees of freedom, refused above 40 (a chance of about 1 in 200,000 for a fair source)."""
    made = new_pins(20_000)
    for position in range(PIN_LENGTH):
        counts = Counter(pin[position] for pin in made)
        expected = len(made) / 10
        chi_squared = sum((counts[digit] - expected) ** 2 / expected for digit in "0123456789")
        assert chi_squared < 40, (position, counts)


def test_new_pins_draw_again_for_candidates_out_of_range(monkeypatch):
    """A candidate of 10**16 or more is dropped, not folded into range."""
    above, below = (10**PIN_LENGTH).to_bytes(7, "big"), (1234).to_bytes(7, "big")
    reads = iter([above * 50 + below * 50, below * 100])
    monkeypatch.setattr(pins_module.secrets, "token_bytes", lambda size: next(reads)[:size])
    assert new_pins(2) == ["0000000000001234"] * 2
