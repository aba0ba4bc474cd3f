"""Posting balanced transfers. Nothing else in Airtime writes ledger entries or balances.

Rules kept here:
- a transfer has two or more legs on distinct accounts of one currency, summing to zero;
- its id is the idempotency key: the same id with the same content returns the first
  result, with different content it is refused;
- a tracked account never ends a transfer below its floor (0 for prepaid balances);
- guarded balances are changed by relative UPDATEs on rows locked in id order, so
  concurrent transfers neither lose updates nor deadlock.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import URL, Table, bindparam, func, select, text, update
from sqlalchemy.orm import Session

from airtime.clock import utcnow
from airtime.db.base import UTCDateTime
from airtime.db.dialect import among, insert_ignoring_conflicts, is_postgresql
from airtime.db.session import after_commit
from airtime.errors import (
    IdempotencyConflict,
    InsufficientFunds,
    NotFound,
    ValidationFailed,
)
from airtime.ledger.models import AccountKind, Entry, LedgerAccount, Transfer
from airtime.money import AMOUNT_MINOR_MAX, format_money, validate_currency

TRANSFER_ID_LENGTH_MAX = 100
LEGS_PER_TRANSFER_MAX = 16
TRANSFERS_PER_BATCH_MAX = 50_000

# A batch may touch more accounts than one statement takes parameters (PostgreSQL allows
# 65,535, some SQLite builds 32,766), so id lists are sent in chunks of this many.
_IN_LIST_SIZE_MAX = 10_000
_operator_account_ids: dict[tuple[URL, str], int] = {}

_accounts = cast(Table, LedgerAccount.__table__)
_entries = cast(Table, Entry.__table__)
_transfers = cast(Table, Transfer.__table__)


@dataclass(frozen=True, slots=True)
class Leg:
    """One side of a transfer: a signed amount on an account (positive raises its balance)."""

    account_id: int
    amount_minor: int


@dataclass(frozen=True, slots=True)
class TransferRequest:
    transfer_id: str
    kind: str
    currency: str
    legs: tuple[Leg, ...]
    description: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    def content_hash(self) -> str:
        """What makes two requests with one id "the same": kind, currency and legs."""
        legs = sorted((leg.account_id, leg.amount_minor) for leg in self.legs)
        payload = json.dumps([self.kind, self.currency, legs], separators=(",", ":"))
        return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class PostedTransfer:
    transfer_id: str
    replayed: bool
    created_at: datetime
    # Tracked accounts' balances once this call's transfers were applied (locked until
    # commit, so they hold for the rest of the transaction); empty for a replay.
    balances_after: Mapping[int, int] = field(default_factory=dict)


def _validate(request: TransferRequest) -> None:
    if not request.transfer_id or len(request.transfer_id) > TRANSFER_ID_LENGTH_MAX:
        raise ValidationFailed("A transfer id has 1 to %(length)s characters.", length=TRANSFER_ID_LENGTH_MAX)
    validate_currency(request.currency)
    if not 2 <= len(request.legs) <= LEGS_PER_TRANSFER_MAX:
        raise ValidationFailed("A transfer has 2 to %(legs)s legs.", legs=LEGS_PER_TRANSFER_MAX)
    if len({leg.account_id for leg in request.legs}) != len(request.legs):
        raise ValidationFailed("A transfer touches each account once")
    for leg in request.legs:
        if not isinstance(leg.amount_minor, int) or isinstance(leg.amount_minor, bool):
            raise ValidationFailed("Amounts are integers in minor units")
        if leg.amount_minor == 0 or abs(leg.amount_minor) > AMOUNT_MINOR_MAX:
            raise ValidationFailed("Each leg moves a non-zero amount within bounds")
    if sum(leg.amount_minor for leg in request.legs) != 0:
        raise ValidationFailed("A transfer's legs must sum to zero")


def post_transfer(
    session: Session,
    *,
    transfer_id: str,
    kind: str,
    currency: str,
    legs: Sequence[Leg],
    description: str = "",
    details: Mapping[str, Any] | None = None,
) -> PostedTransfer:
    """Post one balanced transfer within the caller's transaction (see module rules)."""
    request = TransferRequest(
        transfer_id=transfer_id,
        kind=kind,
        currency=currency,
        legs=tuple(legs),
        description=description,
        details=details or {},
    )
    return post_transfers(session, [request])[0]


def post_transfers(session: Session, requests: Sequence[TransferRequest]) -> list[PostedTransfer]:
    """Post many transfers atomically in the caller's transaction, in set-based statements.

    Raises (and the caller must roll back) if any transfer is invalid, conflicts with an
    earlier one of the same id, or would take a guarded account below its floor.
    """
    if len(requests) > TRANSFERS_PER_BATCH_MAX:
        raise ValidationFailed("At most %(count)s transfers per batch.", count=TRANSFERS_PER_BATCH_MAX)
    by_id: dict[str, TransferRequest] = {}
    for request in requests:
        _validate(request)
        earlier = by_id.get(request.transfer_id)
        if earlier is not None and earlier.content_hash() != request.content_hash():
            raise IdempotencyConflict(
                "Transfer %(transfer_id)s was given twice with different content.",
                transfer_id=request.transfer_id,
            )
        by_id[request.transfer_id] = request
    if not by_id:
        return []

    now = utcnow()
    hashes = {transfer_id: request.content_hash() for transfer_id, request in by_id.items()}
    if is_postgresql(session):
        inserted = set(
            session.execute(
                _INSERT_TRANSFERS,
                {
                    "ids": list(by_id),
                    "kinds": [request.kind for request in by_id.values()],
                    "currencies": [request.currency for request in by_id.values()],
                    "hashes": [hashes[transfer_id] for transfer_id in by_id],
                    "descriptions": [request.description[:200] for request in by_id.values()],
                    "details": [json.dumps(dict(request.details)) for request in by_id.values()],
                    "created_at": now,
                },
            ).scalars()
        )
    else:
        inserted = set(
            session.execute(
                insert_ignoring_conflicts(session, _transfers).returning(_transfers.c.id),
                [
                    {
                        "id": transfer_id,
                        "kind": request.kind,
                        "currency": request.currency,
                        "content_hash": hashes[transfer_id],
                        "description": request.description[:200],
                        "details": dict(request.details),
                        "created_at": now,
                    }
                    for transfer_id, request in by_id.items()
                ],
            ).scalars()
        )
    created_at = dict.fromkeys(inserted, now)
    replayed_ids = [transfer_id for transfer_id in by_id if transfer_id not in inserted]
    if replayed_ids:
        rows = [
            row
            for chunk in _chunks(replayed_ids)
            for row in session.execute(
                select(_transfers.c.id, _transfers.c.content_hash, _transfers.c.created_at).where(
                    _transfers.c.id.in_(chunk)
                )
            )
        ]
        for transfer_id, content_hash, first_created_at in rows:
            if content_hash != hashes[transfer_id]:
                raise IdempotencyConflict(
                    "Transfer %(transfer_id)s was already posted with different content.",
                    transfer_id=transfer_id,
                )
            created_at[transfer_id] = first_created_at

    new_requests = [by_id[transfer_id] for transfer_id in by_id if transfer_id in inserted]
    balances_after = _apply(session, new_requests, now) if new_requests else {}
    return [
        PostedTransfer(
            transfer_id=request.transfer_id,
            replayed=request.transfer_id not in inserted,
            created_at=created_at[request.transfer_id],
            balances_after={} if request.transfer_id not in inserted else balances_after,
        )
        for request in requests
    ]


def _chunks(values: Sequence[Any]) -> list[Sequence[Any]]:
    """``values`` in consecutive slices short enough for one statement's IN list."""
    return [values[start : start + _IN_LIST_SIZE_MAX] for start in range(0, len(values), _IN_LIST_SIZE_MAX)]


def _apply(session: Session, requests: Sequence[TransferRequest], now: datetime) -> dict[int, int]:
    """Check and write the transfers; returns the tracked accounts' new balances."""
    account_ids = sorted({leg.account_id for request in requests for leg in request.legs})
    meta = {
        row.id: row
        for chunk in _chunks(account_ids)
        for row in session.execute(
            select(_accounts.c.id, _accounts.c.currency, _accounts.c.balance_tracked).where(
                among(session, _accounts.c.id, chunk)
            )
        )
    }
    for request in requests:
        for leg in request.legs:
            account = meta.get(leg.account_id)
            if account is None:
                raise NotFound("Ledger account %(account_id)s does not exist.", account_id=leg.account_id)
            if account.currency != request.currency:
                raise ValidationFailed(
                    "Account %(account_id)s holds %(held)s, not %(given)s.",
                    account_id=leg.account_id,
                    held=account.currency,
                    given=request.currency,
                )

    tracked_ids = [account_id for account_id in account_ids if meta[account_id].balance_tracked]
    balances: dict[int, int] = {}
    if tracked_ids:
        # Lock guarded balances in id order, so two transfers over the same accounts
        # queue instead of deadlocking, then check every transfer in request order. FOR NO
        # KEY UPDATE: only the balance changes, and rows referencing the account (entries,
        # lines) take KEY SHARE locks that must not conflict with it.
        # (The chunks are ascending slices of the sorted ids, so the order holds across them.)
        locked = [
            row
            for chunk in _chunks(tracked_ids)
            for row in session.execute(
                select(_accounts.c.id, _accounts.c.balance_minor, _accounts.c.floor_minor)
                .where(among(session, _accounts.c.id, chunk))
                .order_by(_accounts.c.id)
                .with_for_update(key_share=True)
            )
        ]
        balances = {row.id: row.balance_minor for row in locked}
        floors = {row.id: row.floor_minor for row in locked}
        deltas = dict.fromkeys(tracked_ids, 0)
        for request in requests:
            for leg in request.legs:
                if leg.account_id not in balances:
                    continue
                balances[leg.account_id] += leg.amount_minor
                deltas[leg.account_id] += leg.amount_minor
                floor = floors[leg.account_id]
                if leg.amount_minor < 0 and floor is not None and balances[leg.account_id] < floor:
                    available = balances[leg.account_id] - leg.amount_minor - floor
                    raise InsufficientFunds(
                        "Insufficient funds: %(available)s available, %(needed)s needed.",
                        available=format_money(max(available, 0), request.currency),
                        needed=format_money(-leg.amount_minor, request.currency),
                        account_id=leg.account_id,
                        transfer_id=request.transfer_id,
                    )
        changed = {account_id: delta for account_id, delta in deltas.items() if delta}
        if changed and is_postgresql(session):
            # One statement for the whole batch: arrays in, unnest on the server.
            session.execute(_UPDATE_BALANCES, {"ids": list(changed), "deltas": list(changed.values())})
        elif changed:
            session.execute(
                update(_accounts)
                .where(_accounts.c.id == bindparam("b_id"))
                .values(balance_minor=_accounts.c.balance_minor + bindparam("b_delta")),
                [{"b_id": account_id, "b_delta": delta} for account_id, delta in changed.items()],
            )
    legs = [(request.transfer_id, leg) for request in requests for leg in request.legs]
    if is_postgresql(session):
        session.execute(
            _INSERT_ENTRIES,
            {
                "transfer_ids": [transfer_id for transfer_id, _ in legs],
                "account_ids": [leg.account_id for _, leg in legs],
                "amounts": [leg.amount_minor for _, leg in legs],
                "created_at": now,
            },
        )
    else:
        # SQLite runs in-process: many small statements cost no round trips.
        session.execute(
            _entries.insert(),
            [
                {
                    "transfer_id": transfer_id,
                    "account_id": leg.account_id,
                    "amount_minor": leg.amount_minor,
                    "created_at": now,
                }
                for transfer_id, leg in legs
            ],
        )
    return balances


# PostgreSQL spellings of the batch writes: a row per element of the array parameters.
_INSERT_TRANSFERS = text(
    "INSERT INTO ledger_transfers (id, kind, currency, content_hash, description, details, created_at) "
    "SELECT i, k, c, h, d, CAST(j AS json), :created_at FROM unnest(CAST(:ids AS varchar[]), "
    "CAST(:kinds AS varchar[]), CAST(:currencies AS varchar[]), CAST(:hashes AS varchar[]), "
    "CAST(:descriptions AS varchar[]), CAST(:details AS text[])) AS t(i, k, c, h, d, j) "
    "ON CONFLICT DO NOTHING RETURNING id"
).bindparams(bindparam("created_at", type_=UTCDateTime()))
_UPDATE_BALANCES = text(
    "UPDATE ledger_accounts AS a SET balance_minor = a.balance_minor + d.delta "
    "FROM unnest(CAST(:ids AS bigint[]), CAST(:deltas AS bigint[])) AS d(id, delta) "
    # The second condition gives the planner an index path into the accounts; without it a
    # large batch is hash-joined against a scan of every account.
    "WHERE a.id = d.id AND a.id = ANY(CAST(:ids AS bigint[]))"
)
_INSERT_ENTRIES = text(
    "INSERT INTO ledger_entries (transfer_id, account_id, amount_minor, created_at) "
    "SELECT t, a, m, :created_at FROM unnest(CAST(:transfer_ids AS varchar[]), "
    "CAST(:account_ids AS bigint[]), CAST(:amounts AS bigint[])) AS e(t, a, m)"
).bindparams(bindparam("created_at", type_=UTCDateTime()))


def open_account(
    session: Session,
    *,
    code: str,
    kind: str,
    currency: str,
    name: str = "",
    balance_tracked: bool,
    floor_minor: int | None,
) -> int:
    """Return the id of the account with this code, creating it if it does not exist yet."""
    currency = validate_currency(currency)
    session.execute(
        insert_ignoring_conflicts(session, _accounts).values(
            code=code,
            kind=kind,
            currency=currency,
            name=name,
            balance_tracked=balance_tracked,
            floor_minor=floor_minor,
            balance_minor=0,
            created_at=utcnow(),
        )
    )
    row = session.execute(select(_accounts.c.id, _accounts.c.currency).where(_accounts.c.code == code)).one()
    if row.currency != currency:
        raise ValidationFailed(
            "Account %(code)s already exists in %(currency)s.", code=code, currency=row.currency
        )
    return int(row.id)


def operator_account(session: Session, *, kind: str, currency: str, qualifier: str = "") -> int:
    """The operator's own account of a kind (clearing per provider, liability, revenue...).

    Operator accounts are unguarded and untracked: their balance is the sum of entries,
    so no hot balance row serialises the transfers that touch them.
    """
    if kind not in AccountKind.OPERATOR_KINDS:
        raise ValidationFailed("%(kind)s is not an operator account kind.", kind=kind)
    code = ":".join(part for part in ("operator", kind, qualifier, currency.upper()) if part)
    # Operator accounts are never deleted or renumbered, so once one is committed its id is
    # kept for the life of the process, per database (every top-up needs one or two).
    key = (session.get_bind().engine.url, code)
    cached = _operator_account_ids.get(key)
    if cached is not None:
        return cached
    # Operator accounts exist after their first use: one read, no insert attempt, after that.
    existing = session.execute(select(_accounts.c.id).where(_accounts.c.code == code)).scalar()
    if existing is not None:
        account_id = int(existing)
        # Only after commit: the row may have been made by this very transaction.
        after_commit(session, lambda: _operator_account_ids.__setitem__(key, account_id))
        return account_id
    return open_account(
        session,
        code=code,
        kind=kind,
        currency=currency,
        name=code,
        balance_tracked=False,
        floor_minor=None,
    )


def forget_cached_accounts() -> None:
    """Drop the kept operator account ids (for a test suite that empties its database)."""
    _operator_account_ids.clear()


def account_id_for(session: Session, code: str) -> int:
    account_id = session.execute(select(_accounts.c.id).where(_accounts.c.code == code)).scalar()
    if account_id is None:
        raise NotFound("No ledger account %(code)s.", code=code)
    return int(account_id)


def balance_of(session: Session, account_id: int) -> int:
    """The account's balance in minor units: the kept row if tracked, else the sum of entries."""
    row = session.execute(
        select(_accounts.c.balance_tracked, _accounts.c.balance_minor).where(_accounts.c.id == account_id)
    ).one_or_none()
    if row is None:
        raise NotFound("Ledger account %(account_id)s does not exist.", account_id=account_id)
    if row.balance_tracked:
        return int(row.balance_minor)
    return int(
        session.execute(
            select(func.coalesce(func.sum(_entries.c.amount_minor), 0)).where(
                _entries.c.account_id == account_id
            )
        ).scalar_one()
    )


def check_invariants(session: Session) -> list[str]:
    """Every way the ledger could be wrong, as readable lines; an empty list means sound."""
    problems: list[str] = []
    unbalanced = session.execute(
        select(_entries.c.transfer_id, func.sum(_entries.c.amount_minor))
        .group_by(_entries.c.transfer_id)
        .having(func.sum(_entries.c.amount_minor) != 0)
        .limit(100)
    ).all()
    problems += [f"transfer {transfer_id} sums to {total}" for transfer_id, total in unbalanced]
    sums = (
        select(_entries.c.account_id, func.sum(_entries.c.amount_minor).label("total"))
        .group_by(_entries.c.account_id)
        .subquery()
    )
    drifted = session.execute(
        select(_accounts.c.code, _accounts.c.balance_minor, func.coalesce(sums.c.total, 0))
        .select_from(_accounts.outerjoin(sums, sums.c.account_id == _accounts.c.id))
        .where(_accounts.c.balance_tracked)
        .where(_accounts.c.balance_minor != func.coalesce(sums.c.total, 0))
        .limit(100)
    ).all()
    problems += [
        f"account {code} keeps {kept} but its entries sum to {total}" for code, kept, total in drifted
    ]
    below = session.execute(
        select(_accounts.c.code, _accounts.c.balance_minor, _accounts.c.floor_minor)
        .where(_accounts.c.floor_minor.is_not(None))
        .where(_accounts.c.balance_minor < _accounts.c.floor_minor)
        .limit(100)
    ).all()
    problems += [f"account {code} is at {kept}, below its floor {floor}" for code, kept, floor in below]
    by_currency = session.execute(
        select(_transfers.c.currency, func.sum(_entries.c.amount_minor))
        .select_from(_entries.join(_transfers, _transfers.c.id == _entries.c.transfer_id))
        .group_by(_transfers.c.currency)
    ).all()
    problems += [f"all {currency} entries sum to {total}" for currency, total in by_currency if total != 0]
    return problems
