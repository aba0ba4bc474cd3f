"""Recharge vouchers: batches of PINs, outlets that sell them, redemption."""
