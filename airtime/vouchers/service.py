"""Vouchers: generate batches, release them to outlets, sell e-PINs, redeem, expire, block.

States: generated → active (released or sold: a box of unsold cards is worthless) →
redeemed | expired | blocked (reversible by an admin, with a reason). Every change is a
conditional UPDATE on the current state and is written to ``voucher_events``.

Money: releasing or selling a voucher moves its face value from the outlet's prepaid
float (or the cash clearing account for direct sales) to the voucher liability; a
redemption is a top-up order paid by the voucher (liability → the line's balance) through
the one crediting step; expiry moves the unredeemed liability to breakage.
"""

from __future__ import annotations

import csv
import html
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import psycopg
from sqlalchemy import Column, Table, and_, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from airtime.accounts.models import Line, Plan
from airtime.clock import today, utcnow
from airtime.config import Settings
from airtime.db.dialect import is_postgresql
from airtime.db.session import unit_of_work
from airtime.errors import AppError, Conflict, NotFound, ValidationFailed
from airtime.ledger.models import AccountKind
from airtime.ledger.service import Leg, open_account, operator_account, post_transfer
from airtime.money import format_money, validate_currency
from airtime.topups import service as topups
from airtime.topups.models import TopupOrder
from airtime.vouchers.models import (
    Outlet,
    RedemptionAttempt,
    RedemptionLock,
    Voucher,
    VoucherBatch,
    VoucherEvent,
    VoucherState,
)
from airtime.vouchers.pins import (
    format_pin,
    format_serial,
    hash_pin,
    new_pin,
    new_pins,
    normalize_pin,
    pin_key,
)

SERIALS_PER_BATCH = 10_000_000
BATCH_QUANTITY_MAX = SERIALS_PER_BATCH - 1
GENERATION_CHUNK = 10_000
EXPIRY_CHUNK = 5_000
BLOCKABLE_STATES = (VoucherState.GENERATED, VoucherState.ACTIVE)
_vouchers = cast(Table, Voucher.__table__)
PRINT_SHEET_CSS = (
    "body{font-family:sans-serif}"
    ".card{display:inline-block;width:85mm;height:50mm;border:1px dashed #999;margin:2mm;padding:4mm;"
    "box-sizing:border-box;break-inside:avoid}"
    ".value{font-size:20pt;font-weight:bold}.pin{font:16pt monospace;margin:4mm 0}"
    ".meta{font-size:8pt;color:#555}"
)


class VoucherRefused(AppError):
    """A redemption that did not credit; says only what the subscriber needs."""

    status_code = 422
    code = "voucher_refused"
    title = "Voucher not accepted"
    persist_changes = True  # the failed attempt is recorded even though the request fails


class RedemptionLocked(AppError):
    status_code = 429
    code = "voucher_locked"
    title = "Too many wrong PINs"
    persist_changes = True


# --- outlets ---------------------------------------------------------------------------


def create_outlet(
    session: Session, *, code: str, name: str, currency: str, credit_limit_minor: int = 0
) -> Outlet:
    """An outlet and its prepaid float (floor 0, or a negative credit limit)."""
    currency = validate_currency(currency)
    if session.scalar(select(Outlet.id).where(Outlet.code == code)) is not None:
        raise Conflict("An outlet %(code)s already exists.", code=code)
    float_account_id = open_account(
        session,
        code=f"outlet:{code}:float",
        kind=AccountKind.AGENT_FLOAT,
        currency=currency,
        name=f"Float of outlet {name}",
        balance_tracked=True,
        floor_minor=-abs(credit_limit_minor),
    )
    outlet = Outlet(
        code=code, name=name, currency=currency, float_account_id=float_account_id, created_at=utcnow()
    )
    session.add(outlet)
    session.flush()
    return outlet


def fund_outlet(session: Session, *, outlet: Outlet, amount_minor: int, reference: str) -> None:
    """The outlet paid the operator (bank transfer, cash deposit): its float goes up."""
    if amount_minor <= 0:
        raise ValidationFailed("The amount must be positive.", field="amount")
    clearing = operator_account(
        session, kind=AccountKind.PAYMENT_CLEARING, currency=outlet.currency, qualifier="outlet-deposits"
    )
    post_transfer(
        session,
        transfer_id=f"outlet-funding:{outlet.id}:{reference}",
        kind="outlet_funding",
        currency=outlet.currency,
        legs=[Leg(clearing, -amount_minor), Leg(outlet.float_account_id, amount_minor)],
        description=f"Float top-up {reference}",
    )


def outlet_by_code(session: Session, code: str) -> Outlet:
    outlet = session.scalar(select(Outlet).where(Outlet.code == code))
    if outlet is None:
        raise NotFound("No outlet %(code)s.", code=code)
    return outlet


# --- generation --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GeneratedBatch:
    batch_id: int
    quantity: int
    serial_first: int
    serial_last: int
    export_path: Path


def _event(session: Session, **values: Any) -> None:
    session.add(VoucherEvent(at=utcnow(), **values))


def check_batch_request(
    *,
    currency: str,
    face_value_minor: int,
    quantity: int,
    expires_on: date,
    validity_days: int | None,
    export_path: Path,
) -> str:
    """Refuse a batch that cannot be made, before any work starts; returns the currency code."""
    currency = validate_currency(currency)
    if not 1 <= quantity <= BATCH_QUANTITY_MAX:
        raise ValidationFailed(
            "A batch holds 1 to %(max)s vouchers.", max=BATCH_QUANTITY_MAX, field="quantity"
        )
    if face_value_minor <= 0:
        raise ValidationFailed("The face value must be positive.", field="face_value")
    if expires_on <= today():
        raise ValidationFailed("The expiry date must be in the future.", field="expires_on")
    if validity_days is not None and not 1 <= validity_days <= 3650:
        raise ValidationFailed("Validity days must be between 1 and 3650.", field="validity_days")
    if export_path.exists():
        raise Conflict("%(path)s already exists; PINs are never written twice.", path=str(export_path))
    return currency


def generate_batch(
    factory: sessionmaker[Session],
    *,
    settings: Settings,
    currency: str,
    face_value_minor: int,
    quantity: int,
    expires_on: date,
    export_path: Path,
    created_by: str,
    validity_days: int | None = None,
    outlet_code: str | None = None,
    distributor: str = "",
    on_progress: Callable[[int], None] | None = None,
) -> GeneratedBatch:
    """Make ``quantity`` vouchers in chunks (memory stays flat) and write the one export file
    that ever shows their PINs (CSV for the printer; a printable HTML sheet beside it for
    small batches). Each chunk is its own transaction."""
    currency = check_batch_request(
        currency=currency,
        face_value_minor=face_value_minor,
        quantity=quantity,
        expires_on=expires_on,
        validity_days=validity_days,
        export_path=export_path,
    )
    with unit_of_work(factory) as session:
        outlet = outlet_by_code(session, outlet_code) if outlet_code else None
        if outlet is not None and outlet.currency != currency:
            raise ValidationFailed(
                "Outlet %(code)s sells in %(currency)s.", code=outlet.code, currency=outlet.currency
            )
        batch = VoucherBatch(
            currency=currency,
            face_value_minor=face_value_minor,
            quantity=quantity,
            expires_on=expires_on,
            validity_days=validity_days,
            outlet_id=outlet.id if outlet else None,
            distributor=distributor[:120],
            kind="printed",
            serial_first=0,
            serial_last=0,
            created_by=created_by[:254],
            created_at=utcnow(),
        )
        session.add(batch)
        session.flush()
        batch.serial_first = batch.id * SERIALS_PER_BATCH + 1
        batch.serial_last = batch.id * SERIALS_PER_BATCH + quantity
        batch_id, serial_first, outlet_id = batch.id, batch.serial_first, batch.outlet_id
    key = pin_key(settings)
    export_path.parent.mkdir(parents=True, exist_ok=True)
    done = 0
    with export_path.open("x", newline="", encoding="utf-8") as export:
        writer = csv.writer(export)
        writer.writerow(["serial", "pin", "face_value", "currency", "expires_on"])
        face_text = format_money(face_value_minor, currency)
        while done < quantity:
            size = min(GENERATION_CHUNK, quantity - done)
            serials = range(serial_first + done, serial_first + done + size)
            with unit_of_work(factory) as session:
                pins = _insert_chunk(
                    session,
                    key=key,
                    serials=serials,
                    batch_id=batch_id,
                    currency=currency,
                    face_value_minor=face_value_minor,
                    expires_on=expires_on,
                    outlet_id=outlet_id,
                )
            writer.writerows(
                (format_serial(serial), format_pin(pin), face_text, currency, expires_on.isoformat())
                for serial, pin in zip(serials, pins, strict=True)
            )
            done += size
            if on_progress:
                on_progress(size)
    with unit_of_work(factory) as session:
        _event(
            session,
            batch_id=batch_id,
            serial_first=serial_first,
            serial_last=serial_first + quantity - 1,
            event="generated",
            to_state=VoucherState.GENERATED,
            count=quantity,
            actor=created_by,
        )
    if quantity <= 5_000:
        _write_print_sheet(export_path)
    return GeneratedBatch(batch_id, quantity, serial_first, serial_first + quantity - 1, export_path)


def _insert_chunk(
    session: Session,
    *,
    key: bytes,
    serials: range,
    batch_id: int,
    currency: str,
    face_value_minor: int,
    expires_on: date,
    outlet_id: int | None,
) -> list[str]:
    """Insert one chunk; a PIN whose hash already exists (astronomically rare) is redrawn."""
    pins = new_pins(len(serials))
    now = utcnow()
    pending = dict(zip(serials, pins, strict=True))
    while pending:
        rows = [(serial, hash_pin(key, pin)) for serial, pin in pending.items()]
        inserted = _bulk_insert(
            session, rows, batch_id, currency, face_value_minor, expires_on, outlet_id, now
        )
        for serial in inserted:
            pending.pop(serial)
        for serial in pending:
            pins[serial - serials.start] = pending[serial] = new_pin()
    return pins


def _bulk_insert(
    session: Session,
    rows: list[tuple[int, str]],
    batch_id: int,
    currency: str,
    face_value_minor: int,
    expires_on: date,
    outlet_id: int | None,
    now: datetime,
) -> set[int]:
    """Insert (serial, pin hash) rows, skipping hash collisions; returns the serials stored.

    PostgreSQL: COPY straight into the table (the fast path for millions of rows); if a hash
    is there already, that COPY is undone to its savepoint and the rows go through a
    temporary table and one INSERT ... SELECT ... ON CONFLICT DO NOTHING instead. SQLite:
    INSERT OR IGNORE.
    """
    # What every row of the chunk has in common, by column.
    fixed: dict[str, Any] = {
        "batch_id": batch_id,
        "state": VoucherState.GENERATED,
        "currency": currency,
        "face_value_minor": face_value_minor,
        "expires_on": expires_on,
        "outlet_id": outlet_id,
        "state_changed_at": now,
        "state_before_block": "",
    }
    columns = ", ".join(("serial", "pin_hash", *fixed))
    if is_postgresql(session):
        connection = session.connection().connection.driver_connection
        assert connection is not None
        try:
            with (
                connection.transaction(),  # a savepoint
                connection.cursor() as cursor,
                cursor.copy(f"COPY vouchers ({columns}) FROM STDIN") as copy,
            ):
                common = tuple(fixed.values())
                for row in rows:
                    copy.write_row((*row, *common))
            return {serial for serial, _ in rows}
        except psycopg.errors.UniqueViolation:
            pass  # a PIN hash that exists already: astronomically rare
        with connection.cursor() as cursor:
            cursor.execute(
                "CREATE TEMPORARY TABLE IF NOT EXISTS voucher_staging (serial bigint, pin_hash varchar(64)) "
                "ON COMMIT DELETE ROWS"
            )
            with cursor.copy("COPY voucher_staging (serial, pin_hash) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute(
                f"INSERT INTO vouchers ({columns})"  # noqa: S608 (our own names)
                f" SELECT serial, pin_hash, {', '.join(['%s'] * len(fixed))} FROM voucher_staging"
                " ON CONFLICT DO NOTHING RETURNING serial",
                tuple(fixed.values()),
            )
            inserted = {int(row[0]) for row in cursor.fetchall()}
            cursor.execute("DELETE FROM voucher_staging")
        return inserted
    # The common values as SQLAlchemy would store them (bound once, not per row), and the
    # rows as plain tuples straight to the driver: SQLAlchemy's per-row parameter handling
    # cost more than SQLite's own inserts.
    stored_fixed = tuple(_as_stored(session, _vouchers.c[name], value) for name, value in fixed.items())
    placeholders = ", ".join("?" * (2 + len(fixed)))
    session.connection().exec_driver_sql(
        f"INSERT OR IGNORE INTO vouchers ({columns}) VALUES ({placeholders})",  # noqa: S608 (our own names)
        [(*row, *stored_fixed) for row in rows],
    )
    first, last = rows[0][0], rows[-1][0]
    stored = session.execute(
        select(_vouchers.c.serial, _vouchers.c.pin_hash).where(_vouchers.c.serial.between(first, last))
    ).all()
    wanted = dict(rows)
    return {serial for serial, pin_hash in stored if wanted.get(serial) == pin_hash}


def _as_stored(session: Session, column: Column[Any], value: Any) -> Any:
    """``value`` as the driver receives it for ``column`` (the column type's bind processing)."""
    dialect = session.get_bind().dialect
    processor = column.type.dialect_impl(dialect).bind_processor(dialect)
    return processor(value) if processor is not None else value


def _write_print_sheet(export_path: Path) -> None:
    """A printable HTML sheet of cards next to the CSV (for small batches)."""
    with export_path.open(encoding="utf-8") as source:
        rows = list(csv.DictReader(source))
    cards = "\n".join(
        f'<div class="card"><div class="value">{html.escape(row["face_value"])}</div>'
        f'<div class="pin">{html.escape(row["pin"])}</div>'
        f'<div class="meta">Serial {html.escape(row["serial"])} · '
        f"expires {html.escape(row['expires_on'])}</div></div>"
        for row in rows
    )
    export_path.with_suffix(".html").write_text(
        f"<!doctype html><meta charset=utf-8><title>Vouchers</title><style>{PRINT_SHEET_CSS}</style>{cards}",
        encoding="utf-8",
    )


# --- release, sale, block --------------------------------------------------------------


def _source_of_funds(session: Session, outlet: Outlet | None, currency: str) -> int:
    if outlet is not None:
        return outlet.float_account_id
    return operator_account(session, kind=AccountKind.PAYMENT_CLEARING, currency=currency, qualifier="cash")


def activate_range(
    session: Session,
    *,
    serial_first: int,
    serial_last: int,
    actor: str,
    outlet_code: str | None = None,
    reference: str | None = None,
) -> int:
    """Release generated vouchers in a serial range (sold, or handed over paid): they become
    redeemable and their value moves from the outlet's float to the voucher liability.
    Returns how many were activated; ones not in "generated" are left as they are."""
    if serial_last < serial_first or serial_last - serial_first >= SERIALS_PER_BATCH:
        raise ValidationFailed("Give a serial range within one batch.", field="serial")
    if serial_first // SERIALS_PER_BATCH != serial_last // SERIALS_PER_BATCH:
        raise ValidationFailed("Give a serial range within one batch.", field="serial")
    batch = session.get(VoucherBatch, serial_first // SERIALS_PER_BATCH)
    if batch is None:
        raise NotFound("No voucher batch for serial %(serial)s.", serial=format_serial(serial_first))
    outlet = (
        outlet_by_code(session, outlet_code)
        if outlet_code
        else (session.get(Outlet, batch.outlet_id) if batch.outlet_id else None)
    )
    now = utcnow()
    activated = session.execute(
        update(Voucher)
        .where(
            Voucher.serial.between(serial_first, serial_last),
            Voucher.state == VoucherState.GENERATED,
            Voucher.expires_on >= today(),
        )
        .values(
            state=VoucherState.ACTIVE,
            state_changed_at=now,
            outlet_id=outlet.id if outlet else batch.outlet_id,
        )
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]
    if not activated:
        return 0
    amount = activated * batch.face_value_minor
    post_transfer(
        session,
        transfer_id=f"voucher-release:{serial_first}-{serial_last}:{reference or uuid.uuid4().hex}",
        kind="voucher_release",
        currency=batch.currency,
        legs=[
            Leg(_source_of_funds(session, outlet, batch.currency), -amount),
            Leg(
                operator_account(session, kind=AccountKind.VOUCHER_LIABILITY, currency=batch.currency), amount
            ),
        ],
        description=f"Vouchers {format_serial(serial_first)}-{format_serial(serial_last)} released",
    )
    _event(
        session,
        batch_id=batch.id,
        serial_first=serial_first,
        serial_last=serial_last,
        event="activated",
        from_state=VoucherState.GENERATED,
        to_state=VoucherState.ACTIVE,
        count=activated,
        actor=actor,
        reason=f"outlet {outlet.code}" if outlet else "direct sale",
    )
    return int(activated)


@dataclass(frozen=True, slots=True)
class EpinSale:
    serial: int
    pin: str | None  # shown once: None when the same sale is asked for again
    face_value_minor: int
    currency: str
    expires_on: date
    sold_at: datetime


def sell_epin(
    session: Session,
    *,
    settings: Settings,
    outlet: Outlet,
    face_value_minor: int,
    actor: str,
    idempotency_key: str,
    expiry_days: int = 365,
) -> EpinSale:
    """Sell an e-PIN at the till: made on the spot, paid from the outlet's float, its PIN
    printed on the till receipt once. A retried sale with the same key sells nothing more
    and cannot show the PIN again (it is not stored)."""
    if face_value_minor <= 0:
        raise ValidationFailed("The face value must be positive.", field="face_value")
    if not idempotency_key or len(idempotency_key) > 80:
        raise ValidationFailed("An idempotency key is required.")
    transfer_id = f"epin-sale:{outlet.id}:{idempotency_key}"
    earlier = session.scalar(
        select(VoucherEvent).where(VoucherEvent.event == "sold", VoucherEvent.reason == transfer_id)
    )
    if earlier is not None:
        voucher = session.get(Voucher, earlier.voucher_id)
        assert voucher is not None
        if voucher.face_value_minor != face_value_minor:
            raise Conflict("This sale was already made with another value.")
        return EpinSale(
            voucher.serial, None, voucher.face_value_minor, voucher.currency, voucher.expires_on, earlier.at
        )
    batch = _epin_batch(
        session, outlet=outlet, face_value_minor=face_value_minor, actor=actor, expiry_days=expiry_days
    )
    serial = batch.serial_first + batch.quantity - 1
    pin = new_pin()
    now = utcnow()
    voucher = Voucher(
        batch_id=batch.id,
        serial=serial,
        pin_hash=hash_pin(pin_key(settings), pin),
        state=VoucherState.ACTIVE,
        currency=outlet.currency,
        face_value_minor=face_value_minor,
        expires_on=today() + timedelta(days=expiry_days),
        outlet_id=outlet.id,
        state_changed_at=now,
        state_before_block="",
    )
    session.add(voucher)
    session.flush()
    post_transfer(
        session,
        transfer_id=transfer_id,
        kind="epin_sale",
        currency=outlet.currency,
        legs=[
            Leg(outlet.float_account_id, -face_value_minor),
            Leg(
                operator_account(session, kind=AccountKind.VOUCHER_LIABILITY, currency=outlet.currency),
                face_value_minor,
            ),
        ],
        description=f"e-PIN {format_serial(serial)}",
    )
    _event(
        session,
        voucher_id=voucher.id,
        batch_id=batch.id,
        event="sold",
        from_state="",
        to_state=VoucherState.ACTIVE,
        actor=actor,
        reason=transfer_id,
    )
    return EpinSale(serial, pin, face_value_minor, outlet.currency, voucher.expires_on, now)


def _epin_batch(
    session: Session, *, outlet: Outlet, face_value_minor: int, actor: str, expiry_days: int
) -> VoucherBatch:
    """The outlet's open e-PIN batch for this value, its counter advanced by one (locked)."""
    batch = session.scalar(
        select(VoucherBatch)
        .where(
            VoucherBatch.outlet_id == outlet.id,
            VoucherBatch.kind == "epin",
            VoucherBatch.face_value_minor == face_value_minor,
            VoucherBatch.quantity < BATCH_QUANTITY_MAX,
        )
        .order_by(VoucherBatch.id.desc())
        .limit(1)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    if batch is None:
        batch = VoucherBatch(
            currency=outlet.currency,
            face_value_minor=face_value_minor,
            quantity=0,
            expires_on=today() + timedelta(days=expiry_days),
            outlet_id=outlet.id,
            distributor="",
            kind="epin",
            serial_first=0,
            serial_last=0,
            created_by=actor[:254],
            created_at=utcnow(),
        )
        session.add(batch)
        session.flush()
        batch.serial_first = batch.id * SERIALS_PER_BATCH + 1
    batch.quantity += 1
    batch.serial_last = batch.serial_first + batch.quantity - 1
    batch.expires_on = max(batch.expires_on, today() + timedelta(days=expiry_days))
    session.flush()
    return batch


def block(session: Session, *, serial_first: int, serial_last: int, actor: str, reason: str) -> int:
    """Block vouchers (stolen, damaged): they cannot be redeemed until unblocked."""
    if not reason.strip():
        raise ValidationFailed("Give a reason for blocking.", field="reason")
    # SET reads the row as it was, so each voucher remembers the state it is blocked from.
    count = int(
        session.execute(
            update(Voucher)
            .where(Voucher.serial.between(serial_first, serial_last), Voucher.state.in_(BLOCKABLE_STATES))
            .values(state=VoucherState.BLOCKED, state_before_block=Voucher.state, state_changed_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
    )
    if count:
        _event(
            session,
            serial_first=serial_first,
            serial_last=serial_last,
            event="blocked",
            to_state=VoucherState.BLOCKED,
            count=count,
            actor=actor,
            reason=reason[:300],
        )
    return count


def unblock(session: Session, *, serial_first: int, serial_last: int, actor: str, reason: str) -> int:
    """Undo a block: each voucher returns to the state it had."""
    if not reason.strip():
        raise ValidationFailed("Give a reason for unblocking.", field="reason")
    count = int(
        session.execute(
            update(Voucher)
            .where(
                Voucher.serial.between(serial_first, serial_last),
                Voucher.state == VoucherState.BLOCKED,
                Voucher.state_before_block.in_(BLOCKABLE_STATES),
            )
            .values(state=Voucher.state_before_block, state_before_block="", state_changed_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
    )
    if count:
        _event(
            session,
            serial_first=serial_first,
            serial_last=serial_last,
            event="unblocked",
            from_state=VoucherState.BLOCKED,
            count=count,
            actor=actor,
            reason=reason[:300],
        )
    return count


def by_serial(session: Session, serial: int) -> tuple[Voucher, list[VoucherEvent]]:
    """A voucher and its history, for care (never its PIN)."""
    voucher = session.scalar(select(Voucher).where(Voucher.serial == serial))
    if voucher is None:
        raise NotFound("No voucher with serial %(serial)s.", serial=format_serial(serial))
    events = session.scalars(
        select(VoucherEvent)
        .where(
            (VoucherEvent.voucher_id == voucher.id)
            | and_(VoucherEvent.serial_first <= serial, VoucherEvent.serial_last >= serial)
        )
        .order_by(VoucherEvent.id)
    ).all()
    return voucher, list(events)


# --- redemption --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Redemption:
    order: TopupOrder
    serial: int
    replayed: bool


def attempt_keys(*, line_id: int | None, customer_id: int | None, ip_address: str | None) -> list[str]:
    keys = []
    if line_id is not None:
        keys.append(f"line:{line_id}")
    if customer_id is not None:
        keys.append(f"customer:{customer_id}")
    if ip_address:
        keys.append(f"ip:{ip_address}")
    return keys


def lock_status(session: Session, keys: list[str]) -> datetime | None:
    """Until when the first locked key among ``keys`` is locked, or None."""
    if not keys:
        return None
    now = utcnow()
    until = session.scalar(
        select(func.max(RedemptionLock.locked_until)).where(
            RedemptionLock.key.in_(keys), RedemptionLock.locked_until > now
        )
    )
    return until


def _record_failure(
    session: Session, *, keys: list[str], reason: str, channel: str, settings: Settings
) -> None:
    now = utcnow()
    window_start = now - timedelta(hours=settings.voucher_failure_window_hours)
    for key in keys:
        session.add(RedemptionAttempt(key=key, succeeded=False, reason=reason, channel=channel, at=now))
    session.flush()
    for key in keys:
        lock = session.get(RedemptionLock, key)
        since = max(window_start, lock.forgiven_before) if lock and lock.forgiven_before else window_start
        failures = session.scalar(
            select(func.count()).where(
                RedemptionAttempt.key == key,
                RedemptionAttempt.succeeded.is_(False),
                RedemptionAttempt.at > since,
            )
        )
        if (failures or 0) >= settings.voucher_failures_max:
            until = now + timedelta(hours=settings.voucher_lock_hours)
            if lock is None:
                session.add(RedemptionLock(key=key, locked_until=until, unlocked_by=""))
            else:
                lock.locked_until = until
    session.flush()


def _refuse(session: Session, *, keys: list[str], reason: str, channel: str, settings: Settings) -> None:
    _record_failure(session, keys=keys, reason=reason, channel=channel, settings=settings)
    locked_until = lock_status(session, keys)
    if locked_until is not None:
        raise RedemptionLocked(
            "Too many wrong PINs. Voucher top-up is locked until %(until)s UTC.",
            until=f"{locked_until:%Y-%m-%d %H:%M}",
        )
    if reason == "expired":
        raise VoucherRefused("This voucher has expired.", reason=reason)
    raise VoucherRefused("This PIN is not valid. Check the digits and try again.", reason=reason)


def redeem(
    session: Session,
    *,
    settings: Settings,
    pin: str,
    line: Line,
    channel: str,
    customer_id: int | None = None,
    ip_address: str | None = None,
    idempotency_scope: str | None = None,
    idempotency_key: str | None = None,
    language: str = "en",
) -> Redemption:
    """Redeem a PIN onto any line. Exactly one of two simultaneous redemptions of one PIN
    wins (a conditional UPDATE decides); the other is told when it was used. Failures are
    counted per line, customer and IP address, and lock a key out after too many."""
    keys = attempt_keys(line_id=line.id, customer_id=customer_id, ip_address=ip_address)
    if idempotency_scope and idempotency_key:
        earlier = session.scalar(
            select(TopupOrder).where(
                TopupOrder.idempotency_scope == idempotency_scope,
                TopupOrder.idempotency_key == idempotency_key,
            )
        )
        if earlier is not None:
            if earlier.line_id != line.id or earlier.channel != channel:
                raise Conflict("This Idempotency-Key was already used for another redemption.")
            return Redemption(order=earlier, serial=int(earlier.payment_reference or 0), replayed=True)
    locked_until = lock_status(session, keys)
    if locked_until is not None:
        for key in keys:
            session.add(
                RedemptionAttempt(key=key, succeeded=False, reason="locked", channel=channel, at=utcnow())
            )
        raise RedemptionLocked(
            "Too many wrong PINs. Voucher top-up is locked until %(until)s UTC.",
            until=f"{locked_until:%Y-%m-%d %H:%M}",
        )
    digits = normalize_pin(pin)
    if digits is None:
        _refuse(session, keys=keys, reason="invalid", channel=channel, settings=settings)
    assert digits is not None
    plan = session.get(Plan, line.plan_id)
    assert plan is not None
    pin_hash = hash_pin(pin_key(settings), digits)
    now = utcnow()
    won = session.execute(
        update(Voucher)
        .where(
            Voucher.pin_hash == pin_hash,
            Voucher.state == VoucherState.ACTIVE,
            Voucher.expires_on >= today(),
            Voucher.currency == plan.currency,
        )
        .values(state=VoucherState.REDEEMED, state_changed_at=now, redeemed_line_id=line.id)
        .returning(Voucher.id, Voucher.serial, Voucher.face_value_minor, Voucher.batch_id)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if won is None:
        voucher = session.scalar(select(Voucher).where(Voucher.pin_hash == pin_hash))
        if voucher is not None and voucher.state == VoucherState.REDEEMED:
            # Not a guess: the PIN is right, it was just used. Tell when, don't count it.
            session.add(
                RedemptionAttempt(key=keys[0], succeeded=False, reason="used", channel=channel, at=now)
            )
            raise VoucherRefused(
                "This voucher was already used on %(when)s UTC.",
                when=f"{voucher.state_changed_at:%Y-%m-%d %H:%M}",
                reason="used",
            )
        if voucher is not None and voucher.state == VoucherState.ACTIVE and voucher.currency != plan.currency:
            raise ValidationFailed(
                "This voucher is in %(voucher)s; this line is topped up in %(line)s.",
                voucher=voucher.currency,
                line=plan.currency,
            )
        expired = voucher is not None and (
            voucher.state == VoucherState.EXPIRED
            or (voucher.state == VoucherState.ACTIVE and voucher.expires_on < today())
        )
        _refuse(
            session, keys=keys, reason="expired" if expired else "invalid", channel=channel, settings=settings
        )
    assert won is not None
    batch = session.get(VoucherBatch, won.batch_id)
    assert batch is not None
    order = topups.create_paid_order(
        session,
        line=line,
        amount_minor=won.face_value_minor,
        channel=channel,
        provider_name=topups.VOUCHER_PROVIDER,
        payment_reference=str(won.serial),
        idempotency_scope=idempotency_scope or "voucher",
        idempotency_key=idempotency_key or f"voucher:{won.serial}",
        customer_id=customer_id,
        language=language,
    )
    if not topups.credit(
        session, order_id=order.id, settings=settings, validity_days_override=batch.validity_days
    ):
        # The line was terminated since it was looked up: refuse, and the voucher stays unused.
        raise topups.LineNotTopupable(
            "%(msisdn)s is no longer in service and cannot be topped up.", msisdn=line.msisdn, field="msisdn"
        )
    session.execute(update(Voucher).where(Voucher.id == won.id).values(redeemed_order_id=order.id))
    for key in keys:
        session.add(
            RedemptionAttempt(
                key=key, succeeded=True, reason="redeemed", channel=channel, serial=won.serial, at=now
            )
        )
    _event(
        session,
        voucher_id=won.id,
        batch_id=won.batch_id,
        event="redeemed",
        from_state=VoucherState.ACTIVE,
        to_state=VoucherState.REDEEMED,
        actor=f"{channel}:" + (f"customer {customer_id}" if customer_id else f"ip {ip_address or '-'}"),
        reason=f"line {line.msisdn}, order {order.public_id}",
    )
    session.flush()
    refreshed = session.get(TopupOrder, order.id)
    assert refreshed is not None
    return Redemption(order=refreshed, serial=won.serial, replayed=False)


def unlock(session: Session, *, key: str, actor: str) -> bool:
    """Care lifts a lockout; the failures before now stop counting."""
    lock = session.get(RedemptionLock, key)
    if lock is None:
        return False
    now = utcnow()
    lock.locked_until = now
    lock.forgiven_before = now
    lock.unlocked_by = actor[:254]
    session.flush()
    return True


# --- expiry ------------------------------------------------------------------------------


def expire_due(factory: sessionmaker[Session], *, actor: str = "expiry job") -> int:
    """Vouchers past their expiry date become expired, in chunks; the liability of active
    ones goes to breakage. Safe to run again or in parallel (conditional updates)."""
    total = 0
    while True:
        with unit_of_work(factory) as session:
            chunk = _expire_chunk(session, actor=actor)
        if chunk == 0:
            return total
        total += chunk


def _expire_chunk(session: Session, *, actor: str) -> int:
    """One chunk: first vouchers that carry a liability (active, or blocked while active),
    whose value goes to breakage; then never-sold ones, which move no money."""
    carrying = (Voucher.state == VoucherState.ACTIVE) | (
        (Voucher.state == VoucherState.BLOCKED) & (Voucher.state_before_block == VoucherState.ACTIVE)
    )
    unsold = (Voucher.state == VoucherState.GENERATED) | (
        (Voucher.state == VoucherState.BLOCKED) & (Voucher.state_before_block == VoucherState.GENERATED)
    )
    for condition, liability in ((carrying, True), (unsold, False)):
        due = (
            select(Voucher.id)
            .where(condition, Voucher.expires_on < today())
            .order_by(Voucher.id)
            .limit(EXPIRY_CHUNK)
        )
        if is_postgresql(session):
            due = due.with_for_update(skip_locked=True)
        ids = list(session.scalars(due))
        if not ids:
            continue
        rows = session.execute(
            update(Voucher)
            .where(Voucher.id.in_(ids), condition)
            .values(state=VoucherState.EXPIRED, state_before_block="", state_changed_at=utcnow())
            .returning(Voucher.currency, Voucher.face_value_minor)
            .execution_options(synchronize_session=False)
        ).all()
        if liability:
            amounts: dict[str, int] = {}
            for currency, face_value_minor in rows:
                amounts[currency] = amounts.get(currency, 0) + face_value_minor
            for currency, amount in amounts.items():
                post_transfer(
                    session,
                    transfer_id=f"voucher-expiry:{ids[0]}-{ids[-1]}:{currency}",
                    kind="breakage",
                    currency=currency,
                    legs=[
                        Leg(
                            operator_account(session, kind=AccountKind.VOUCHER_LIABILITY, currency=currency),
                            -amount,
                        ),
                        Leg(operator_account(session, kind=AccountKind.BREAKAGE, currency=currency), amount),
                    ],
                    description="Expired vouchers",
                )
        _event(
            session,
            event="expired",
            to_state=VoucherState.EXPIRED,
            count=len(rows),
            actor=actor,
            reason=f"voucher ids {ids[0]}-{ids[-1]}"
            + (", value to breakage" if liability else ", never sold"),
        )
        return len(rows)
    return 0


def iter_export(path: Path) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8") as source:
        yield from csv.DictReader(source)
