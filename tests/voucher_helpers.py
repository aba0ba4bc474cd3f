"""Shared steps for voucher tests."""

from __future__ import annotations

import csv
from datetime import timedelta
from pathlib import Path

from airtime.clock import today
from airtime.db.session import unit_of_work
from airtime.vouchers import service as vouchers


def outlet(session, *, code="SHOP-1", float_minor=100_000):
    created = vouchers.create_outlet(session, code=code, name="Corner Shop", currency="GBP")
    if float_minor:
        vouchers.fund_outlet(session, outlet=created, amount_minor=float_minor, reference=f"deposit-{code}")
    return created


def batch(
    session_factory,
    settings,
    tmp_path: Path,
    *,
    quantity=5,
    face_value_minor=1000,
    outlet_code=None,
    validity_days=None,
    name="batch.csv",
):
    generated = vouchers.generate_batch(
        session_factory,
        settings=settings,
        currency="GBP",
        face_value_minor=face_value_minor,
        quantity=quantity,
        expires_on=today() + timedelta(days=30),
        export_path=tmp_path / name,
        created_by="test",
        outlet_code=outlet_code,
        validity_days=validity_days,
    )
    with (tmp_path / name).open() as export:
        rows = list(csv.DictReader(export))
    return generated, rows


def released_pins(session_factory, settings, tmp_path, **batch_args):
    """A batch released to an outlet: its PINs can be redeemed."""
    with unit_of_work(session_factory) as session:
        shop = outlet(session)
    generated, rows = batch(session_factory, settings, tmp_path, outlet_code=shop.code, **batch_args)
    with unit_of_work(session_factory) as session:
        vouchers.activate_range(
            session, serial_first=generated.serial_first, serial_last=generated.serial_last, actor="test"
        )
    return generated, rows
