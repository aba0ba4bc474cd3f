"""Commission along a chain of agents: the funding legs always sum to the amount exactly."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airtime.agents.service import split_commission
from airtime.errors import ValidationFailed


@given(
    amount_minor=st.integers(min_value=1, max_value=10**12),
    rates=st.lists(st.integers(min_value=0, max_value=9_999), min_size=1, max_size=5),
)
def test_legs_sum_to_the_amount_and_nobody_pays_a_child(amount_minor, rates):
    from airtime.money import apply_rate

    commissions = [apply_rate(amount_minor, rate) for rate in rates]
    if commissions[0] >= amount_minor:
        with pytest.raises(ValidationFailed):
            split_commission(amount_minor, commissions)
        return
    split = split_commission(amount_minor, commissions)
    # Seller's float −debit, operator expense −total, each parent +share, the line +amount.
    assert -split.float_debit_minor - split.expense_minor + sum(split.parent_shares_minor) + amount_minor == 0
    assert all(share >= 0 for share in split.parent_shares_minor)
    assert split.float_debit_minor == amount_minor - commissions[0]
    assert split.expense_minor == min(max(commissions), amount_minor)
    assert 0 <= split.expense_minor <= amount_minor


def test_parent_earns_the_difference():
    split = split_commission(1000, [30, 50, 70])
    assert (split.float_debit_minor, split.parent_shares_minor, split.expense_minor) == (970, (20, 20), 70)


def test_parent_configured_below_its_child_earns_nothing_and_pays_nothing():
    split = split_commission(1000, [50, 30])
    assert (split.parent_shares_minor, split.expense_minor) == ((0,), 50)
