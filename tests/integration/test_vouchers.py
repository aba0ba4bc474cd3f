"""Vouchers on both databases: generation, release, redemption, lockout, expiry, e-PINs."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import func, select, text, update

from airtime.accounts.models import Line
from airtime.clock import today, utcnow
from airtime.errors import InsufficientFunds
from airtime.ledger.models import AccountKind
from airtime.ledger.service import balance_of, check_invariants, operator_account
from airtime.topups.models import OrderStatus
from airtime.vouchers import service as vouchers
from airtime.vouchers.models import RedemptionAttempt, Voucher, VoucherEvent, VoucherState
from airtime.vouchers.pins import hash_pin, pin_key
from tests import topup_helpers, voucher_helpers
from tests.snapshot import fingerprint


@pytest.fixture
def line(uow, settings):
    with uow() as session:
        return topup_helpers.line_with_catalogue(session, settings, validity_date=today() + timedelta(days=5))


def redeem(uow, settings, line, pin, **extra):
    with uow() as session:
        return vouchers.redeem(
            session, settings=settings, pin=pin, line=session.get(Line, line.id), channel="web", **extra
        )


def test_generation_writes_pins_once_and_stores_only_keyed_hashes(uow, session_factory, settings, tmp_path):
    started = utcnow()
    generated, rows = voucher_helpers.batch(session_factory, settings, tmp_path, quantity=25)
    assert generated.quantity == 25 and len(rows) == 25
    assert [int(row["serial"]) for row in rows] == list(
        range(generated.serial_first, generated.serial_last + 1)
    )
    pins = [row["pin"].replace(" ", "") for row in rows]
    assert all(len(pin) == 16 and pin.isdigit() for pin in pins) and len(set(pins)) == 25
    assert (tmp_path / "batch.html").exists()
    with uow() as session:
        stored = session.scalars(select(Voucher).order_by(Voucher.serial)).all()
        assert {voucher.state for voucher in stored} == {VoucherState.GENERATED}
        # Written in bulk, read back as any row (dates, times with their zone, no outlet yet).
        assert {
            (
                voucher.batch_id,
                voucher.currency,
                voucher.face_value_minor,
                voucher.expires_on,
                voucher.outlet_id,
            )
            for voucher in stored
        } == {(generated.batch_id, "GBP", 1000, today() + timedelta(days=30), None)}
        assert all(started <= voucher.state_changed_at <= utcnow() for voucher in stored)
        # ... stored exactly as the ORM stores them (SQLite keeps dates and times as text):
        # writing the same values again through SQLAlchemy changes nothing.
        raw = text("SELECT expires_on, state_changed_at FROM vouchers WHERE id = :id")
        first = stored[0]
        bulk = session.execute(raw, {"id": first.id}).one()
        session.execute(
            update(Voucher)
            .where(Voucher.id == first.id)
            .values(expires_on=first.expires_on, state_changed_at=first.state_changed_at)
        )
        assert session.execute(raw, {"id": first.id}).one() == bulk
        assert {voucher.state_before_block for voucher in stored} == {""}
        # A leaked table reveals no PIN: not in clear, not as an unkeyed hash.
        for voucher, pin in zip(stored, pins, strict=True):
            assert pin not in voucher.pin_hash
            assert voucher.pin_hash != hashlib.sha256(pin.encode()).hexdigest()
            assert voucher.pin_hash == hash_pin(pin_key(settings), pin)
            assert voucher.pin_hash != hash_pin(b"another server's secret", pin)
    with pytest.raises(Exception, match="already exists"):
        voucher_helpers.batch(session_factory, settings, tmp_path, quantity=1)


def test_a_pin_whose_hash_is_stored_already_is_drawn_again(
    uow, session_factory, settings, tmp_path, monkeypatch
):
    """A new PIN equal to a stored one (53 bits: astronomically rare) is not stored twice:
    the chunk still goes in whole, that one card with a PIN drawn again."""
    _, first = voucher_helpers.batch(session_factory, settings, tmp_path, quantity=2, name="first.csv")
    taken = first[0]["pin"].replace(" ", "")
    fresh = vouchers.new_pins(3)
    monkeypatch.setattr(vouchers, "new_pins", lambda count: [fresh[0], taken, fresh[1]][:count])
    monkeypatch.setattr(vouchers, "new_pin", lambda: fresh[2])
    generated, rows = voucher_helpers.batch(
        session_factory, settings, tmp_path, quantity=3, name="second.csv"
    )
    assert [row["pin"].replace(" ", "") for row in rows] == [fresh[0], fresh[2], fresh[1]]
    key = pin_key(settings)
    with uow() as session:
        stored = session.scalars(
            select(Voucher).where(Voucher.batch_id == generated.batch_id).order_by(Voucher.serial)
        ).all()
        assert [voucher.pin_hash for voucher in stored] == [
            hash_pin(key, pin) for pin in fresh[::2] + fresh[1:2]
        ]
        assert session.scalar(select(func.count()).select_from(Voucher)) == 5
        assert (
            session.scalar(
                select(func.count()).select_from(Voucher).where(Voucher.pin_hash == hash_pin(key, taken))
            )
            == 1
        )


def test_unsold_vouchers_are_worthless(uow, session_factory, settings, tmp_path, line):
    _, rows = voucher_helpers.batch(session_factory, settings, tmp_path)
    before = fingerprint(session_factory, ignore={"voucher_attempts", "voucher_locks", "rate_limit_counters"})
    with pytest.raises(vouchers.VoucherRefused, match="not valid"):
        redeem(uow, settings, line, rows[0]["pin"])
    assert (
        fingerprint(session_factory, ignore={"voucher_attempts", "voucher_locks", "rate_limit_counters"})
        == before
    )


def test_release_then_redeem_credits_through_the_one_crediting_step(
    uow, session_factory, settings, tmp_path, line
):
    generated, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path, validity_days=45)
    with uow() as session:
        shop = vouchers.outlet_by_code(session, "SHOP-1")
        assert balance_of(session, shop.float_account_id) == 100_000 - 5 * 1000
        liability = operator_account(session, kind=AccountKind.VOUCHER_LIABILITY, currency="GBP")
        assert balance_of(session, liability) == 5000
    redemption = redeem(uow, settings, line, rows[0]["pin"])
    assert redemption.order.status == OrderStatus.CREDITED and redemption.order.channel == "web"
    assert redemption.order.payment_provider == "voucher"
    with uow() as session:
        refreshed = session.get(Line, line.id)
        assert balance_of(session, refreshed.main_account_id) == 1000
        assert refreshed.validity_date == today() + timedelta(days=5 + 45)  # the batch's validity days
        assert balance_of(session, liability) == 4000
        voucher = session.scalar(select(Voucher).where(Voucher.serial == generated.serial_first))
        assert voucher.state == VoucherState.REDEEMED and voucher.redeemed_line_id == line.id
        assert check_invariants(session) == []
    before = fingerprint(session_factory, ignore={"voucher_attempts", "voucher_locks", "rate_limit_counters"})
    with pytest.raises(vouchers.VoucherRefused, match="already used on"):
        redeem(uow, settings, line, rows[0]["pin"])
    assert (
        fingerprint(session_factory, ignore={"voucher_attempts", "voucher_locks", "rate_limit_counters"})
        == before
    )


def test_the_same_idempotency_key_returns_the_first_redemption(
    uow, session_factory, settings, tmp_path, line
):
    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path)
    first = redeem(uow, settings, line, rows[0]["pin"], idempotency_scope="api:1", idempotency_key="k")
    again = redeem(uow, settings, line, rows[0]["pin"], idempotency_scope="api:1", idempotency_key="k")
    assert again.replayed and again.order.id == first.order.id


def test_five_wrong_pins_lock_the_line_until_care_unlocks(uow, session_factory, settings, tmp_path, line):
    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path)
    for attempt in range(settings.voucher_failures_max - 1):
        with pytest.raises(vouchers.VoucherRefused, match="not valid"):
            redeem(uow, settings, line, f"1234 5678 0000 {attempt:04d}", ip_address="10.1.1.1")
    with pytest.raises(vouchers.RedemptionLocked, match="locked until") as locked:
        redeem(uow, settings, line, "1234567800009999", ip_address="10.1.1.1")
    until = locked.value.params["until"]
    # Even the right PIN is refused while locked, from another address too (the line is locked).
    with pytest.raises(vouchers.RedemptionLocked, match=until):
        redeem(uow, settings, line, rows[0]["pin"], ip_address="10.9.9.9")
    with uow() as session:
        failures = session.scalar(select(func.count()).where(RedemptionAttempt.succeeded.is_(False)))
        assert failures >= settings.voucher_failures_max
        assert vouchers.unlock(session, key=f"line:{line.id}", actor="care@example.com")
        assert vouchers.unlock(session, key="ip:10.1.1.1", actor="care@example.com")
    assert redeem(uow, settings, line, rows[0]["pin"], ip_address="10.1.1.1").order.status == "credited"


def test_the_lock_ends_by_itself(uow, session_factory, settings, tmp_path, line):
    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path)
    for attempt in range(settings.voucher_failures_max):
        with pytest.raises((vouchers.VoucherRefused, vouchers.RedemptionLocked)):
            redeem(uow, settings, line, f"9999 0000 0000 {attempt:04d}")
    with time_machine.travel(utcnow() + timedelta(hours=settings.voucher_lock_hours + 1), tick=False):
        assert redeem(uow, settings, line, rows[0]["pin"]).order.status == "credited"


def test_expired_vouchers_are_refused_and_their_value_goes_to_breakage(
    uow, session_factory, settings, tmp_path, line
):
    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path, quantity=3)
    voucher_helpers.batch(session_factory, settings, tmp_path, quantity=2, name="unsold.csv")
    with time_machine.travel(utcnow() + timedelta(days=40), tick=False):
        with pytest.raises(vouchers.VoucherRefused, match="expired"):
            redeem(uow, settings, line, rows[0]["pin"])
        assert vouchers.expire_due(session_factory) == 5
        assert vouchers.expire_due(session_factory) == 0
        with uow() as session:
            assert (
                balance_of(session, operator_account(session, kind=AccountKind.BREAKAGE, currency="GBP"))
                == 3000
            )
            assert (
                balance_of(
                    session, operator_account(session, kind=AccountKind.VOUCHER_LIABILITY, currency="GBP")
                )
                == 0
            )
            assert check_invariants(session) == []
        with pytest.raises(vouchers.VoucherRefused, match="expired"):
            redeem(uow, settings, line, rows[1]["pin"])


def test_block_and_unblock_with_reasons(uow, session_factory, settings, tmp_path, line):
    generated, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path)
    with uow() as session:
        assert (
            vouchers.block(
                session,
                serial_first=generated.serial_first,
                serial_last=generated.serial_first + 1,
                actor="admin@example.com",
                reason="box stolen",
            )
            == 2
        )
    with pytest.raises(vouchers.VoucherRefused, match="not valid"):
        redeem(uow, settings, line, rows[0]["pin"])
    with uow() as session:
        with pytest.raises(Exception, match="reason"):
            vouchers.unblock(
                session,
                serial_first=generated.serial_first,
                serial_last=generated.serial_first,
                actor="admin@example.com",
                reason=" ",
            )
        assert (
            vouchers.unblock(
                session,
                serial_first=generated.serial_first,
                serial_last=generated.serial_first,
                actor="admin@example.com",
                reason="found",
            )
            == 1
        )
        voucher, events = vouchers.by_serial(session, generated.serial_first)
        assert voucher.state == VoucherState.ACTIVE
        assert [event.event for event in events] == ["generated", "activated", "blocked", "unblocked"]
        assert all(event.actor for event in events)
    assert redeem(uow, settings, line, rows[0]["pin"]).order.status == "credited"


def test_epin_sale_from_the_float_shows_the_pin_once(uow, session_factory, settings, line):
    with uow() as session:
        shop = voucher_helpers.outlet(session, float_minor=1500)
        sale = vouchers.sell_epin(
            session,
            settings=settings,
            outlet=shop,
            face_value_minor=1000,
            actor="till 1",
            idempotency_key="sale-1",
        )
    assert sale.pin and len(sale.pin) == 16
    with uow() as session:
        again = vouchers.sell_epin(
            session,
            settings=settings,
            outlet=vouchers.outlet_by_code(session, "SHOP-1"),
            face_value_minor=1000,
            actor="till 1",
            idempotency_key="sale-1",
        )
        assert again.serial == sale.serial and again.pin is None
        assert balance_of(session, shop.float_account_id) == 500
    before = fingerprint(session_factory)
    with pytest.raises(InsufficientFunds), uow() as session:
        vouchers.sell_epin(
            session,
            settings=settings,
            outlet=vouchers.outlet_by_code(session, "SHOP-1"),
            face_value_minor=1000,
            actor="till 1",
            idempotency_key="sale-2",
        )
    assert fingerprint(session_factory) == before
    assert redeem(uow, settings, line, sale.pin).order.amount_minor == 1000


def test_a_voucher_in_another_currency_is_not_used_up(uow, session_factory, settings, tmp_path):
    from tests import factories

    with uow() as session:
        factories.plan(session, code="TEST-CNY", currency="CNY")
        topup_helpers.catalogue(session)
        from airtime.accounts import service as accounts

        cny_line = accounts.add_line(
            session, msisdn="+8613800138000", plan_code="TEST-CNY", settings=settings
        )
    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path)
    with pytest.raises(Exception, match="in GBP"):
        redeem(uow, settings, cny_line, rows[0]["pin"])
    with uow() as session:
        assert session.scalar(select(func.count()).where(Voucher.state == VoucherState.ACTIVE)) == 5


def test_every_transition_is_audited(uow, session_factory, settings, tmp_path, line):
    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path, quantity=2)
    redeem(uow, settings, line, rows[0]["pin"])
    with uow() as session:
        kinds = session.scalars(select(VoucherEvent.event).order_by(VoucherEvent.id)).all()
    assert kinds == ["generated", "activated", "redeemed"]


def test_a_line_terminated_after_its_lookup_refuses_and_the_voucher_stays_unused(
    uow, session_factory, settings, tmp_path, line
):
    """The line was read (active), then terminated by another transaction before the credit
    locked it: the redemption is refused as a whole and nothing moves."""
    from sqlalchemy import text

    from airtime.topups.service import LineNotTopupable

    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path, quantity=1)
    before = fingerprint(session_factory)
    with pytest.raises(LineNotTopupable, match="no longer in service"), uow() as session:
        looked_up = session.get(Line, line.id)
        assert looked_up.state == "active"
        # What the sweep does meanwhile, behind this session's back (no identity-map sync).
        session.execute(text("UPDATE lines SET state = 'terminated' WHERE id = :id"), {"id": line.id})
        vouchers.redeem(session, settings=settings, pin=rows[0]["pin"], line=looked_up, channel="web")
    assert fingerprint(session_factory) == before
    with uow() as session:
        assert session.scalar(select(Voucher.state)) == VoucherState.ACTIVE


def test_a_validity_changed_after_the_lookup_is_built_on_not_overwritten(
    uow, session_factory, settings, tmp_path, line
):
    """Another top-up extended the line after this session read it: the credit starts from
    the locked row's validity, not the one read before."""
    from sqlalchemy import text

    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path, quantity=1, validity_days=10)
    extended = today() + timedelta(days=40)
    with uow() as session:
        looked_up = session.get(Line, line.id)
        session.execute(
            text("UPDATE lines SET validity_date = :day WHERE id = :id"), {"day": extended, "id": line.id}
        )
        vouchers.redeem(session, settings=settings, pin=rows[0]["pin"], line=looked_up, channel="web")
    with uow() as session:
        assert session.get(Line, line.id).validity_date == extended + timedelta(days=10)
