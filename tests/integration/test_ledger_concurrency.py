"""Real parallel transactions on PostgreSQL: no lost updates, no double posting, no deadlocks.

Each worker thread runs its own units of work; the engine's pool (30 connections) gives every
one of them its own connection, so the transactions really overlap in the database. A barrier
releases all workers at once after each has warmed its connection.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from airtime.db.session import unit_of_work
from airtime.errors import InsufficientFunds
from airtime.ledger.models import AccountKind, Entry
from airtime.ledger.service import (
    Leg,
    PostedTransfer,
    balance_of,
    check_invariants,
    open_account,
    post_transfer,
)

Result = TypeVar("Result")


def run_together(
    session_factory: sessionmaker[Session], workers: int, work: Callable[[int], Result]
) -> list[Result]:
    """Run ``work(worker_number)`` in ``workers`` threads released together; re-raise any failure."""
    barrier = threading.Barrier(workers, timeout=30)

    def start(worker_number: int) -> Result:
        # Check out and warm a connection first, so connecting does not stagger the start.
        with unit_of_work(session_factory) as session:
            session.execute(text("select 1"))
        barrier.wait()
        return work(worker_number)

    with ThreadPoolExecutor(max_workers=workers) as executor:
        futures = [executor.submit(start, number) for number in range(workers)]
        return [future.result(timeout=120) for future in futures]


def open_usd_account(session: Session, code: str, *, tracked: bool, floor_minor: int | None) -> int:
    return open_account(
        session,
        code=code,
        kind=AccountKind.CUSTOMER_MAIN if tracked else AccountKind.PAYMENT_CLEARING,
        currency="USD",
        balance_tracked=tracked,
        floor_minor=floor_minor,
    )


def test_concurrent_debits_never_overdraw_a_shared_balance(pg_session_factory: sessionmaker[Session]) -> None:
    workers = 24
    attempts_per_worker = 8
    initial_minor = 5_000
    with unit_of_work(pg_session_factory) as session:
        clearing = open_usd_account(session, "clearing:USD", tracked=False, floor_minor=None)
        revenue = open_usd_account(session, "revenue:USD", tracked=False, floor_minor=None)
        wallet = open_usd_account(session, "line:shared:main", tracked=True, floor_minor=0)
    with unit_of_work(pg_session_factory) as session:
        post_transfer(
            session,
            transfer_id="fund",
            kind="topup",
            currency="USD",
            legs=[Leg(clearing, -initial_minor), Leg(wallet, initial_minor)],
        )
    # Debits of 1.00 to 3.99: about 24 x 8 x 2.50 = 480.00 asked for, far more than 50.00 held.
    plans = [
        [random.Random(worker * 1000 + attempt).randint(100, 399) for attempt in range(attempts_per_worker)]
        for worker in range(workers)
    ]
    assert sum(map(sum, plans)) > 2 * initial_minor

    def debit_repeatedly(worker: int) -> tuple[list[int], int]:
        succeeded: list[int] = []
        refused = 0
        for attempt, amount_minor in enumerate(plans[worker]):
            try:
                with unit_of_work(pg_session_factory) as session:
                    post_transfer(
                        session,
                        transfer_id=f"debit-{worker}-{attempt}",
                        kind="usage",
                        currency="USD",
                        legs=[Leg(wallet, -amount_minor), Leg(revenue, amount_minor)],
                    )
                succeeded.append(amount_minor)
            except InsufficientFunds:
                refused += 1
        return succeeded, refused

    outcomes = run_together(pg_session_factory, workers, debit_repeatedly)

    debited_minor = sum(sum(succeeded) for succeeded, _ in outcomes)
    successes = sum(len(succeeded) for succeeded, _ in outcomes)
    refusals = sum(refused for _, refused in outcomes)
    assert successes + refusals == workers * attempts_per_worker
    assert successes > 0
    assert refusals > 0
    with unit_of_work(pg_session_factory) as session:
        final_minor = balance_of(session, wallet)
        assert final_minor == initial_minor - debited_minor
        assert final_minor >= 0
        # Once refusals start the balance is nearly spent: no debit was refused for nothing.
        assert final_minor < 399
        assert balance_of(session, revenue) == debited_minor
        entry_count = session.execute(
            select(func.count()).select_from(Entry).where(Entry.account_id == wallet)
        ).scalar_one()
        assert entry_count == 1 + successes
        assert check_invariants(session) == []


def test_the_same_transfer_posted_concurrently_moves_money_once(
    pg_session_factory: sessionmaker[Session],
) -> None:
    workers = 20
    with unit_of_work(pg_session_factory) as session:
        clearing = open_usd_account(session, "clearing:USD", tracked=False, floor_minor=None)
        wallet = open_usd_account(session, "line:once:main", tracked=True, floor_minor=0)

    def post_the_same(_worker: int) -> PostedTransfer:
        with unit_of_work(pg_session_factory) as session:
            return post_transfer(
                session,
                transfer_id="webhook-evt-1",
                kind="topup",
                currency="USD",
                legs=[Leg(clearing, -2000), Leg(wallet, 2000)],
            )

    results = run_together(pg_session_factory, workers, post_the_same)

    first = [result for result in results if not result.replayed]
    assert len(first) == 1
    assert {result.created_at for result in results} == {first[0].created_at}
    with unit_of_work(pg_session_factory) as session:
        assert balance_of(session, wallet) == 2000
        assert balance_of(session, clearing) == -2000
        entry_count = session.execute(
            select(func.count()).select_from(Entry).where(Entry.transfer_id == "webhook-evt-1")
        ).scalar_one()
        assert entry_count == 2
        assert check_invariants(session) == []


def test_transfers_in_opposite_directions_do_not_deadlock(pg_session_factory: sessionmaker[Session]) -> None:
    """Half the workers move money A→B, half B→A (legs written in either order), all at once."""
    workers = 16
    transfers_per_worker = 25
    initial_minor = 100_000
    with unit_of_work(pg_session_factory) as session:
        clearing = open_usd_account(session, "clearing:USD", tracked=False, floor_minor=None)
        first = open_usd_account(session, "line:a:main", tracked=True, floor_minor=0)
        second = open_usd_account(session, "line:b:main", tracked=True, floor_minor=0)
        third = open_usd_account(session, "line:c:main", tracked=True, floor_minor=0)
    with unit_of_work(pg_session_factory) as session:
        for account in (first, second, third):
            post_transfer(
                session,
                transfer_id=f"fund-{account}",
                kind="topup",
                currency="USD",
                legs=[Leg(clearing, -initial_minor), Leg(account, initial_minor)],
            )

    def shuffle_money(worker: int) -> int:
        chooser = random.Random(worker)
        source, target = (first, second) if worker % 2 == 0 else (second, first)
        for number in range(transfers_per_worker):
            amount_minor = chooser.randint(1, 50)
            legs = [Leg(source, -amount_minor), Leg(target, amount_minor)]
            if number % 3 == 0:
                # A three-way transfer touching the third balance too, legs in reverse order.
                legs = [Leg(third, 1), Leg(target, amount_minor), Leg(source, -amount_minor - 1)]
            if chooser.random() < 0.5:
                legs.reverse()
            with unit_of_work(pg_session_factory) as session:
                post_transfer(
                    session, transfer_id=f"move-{worker}-{number}", kind="transfer", currency="USD", legs=legs
                )
        return transfers_per_worker

    # Any deadlock would surface here as psycopg's DeadlockDetected, failing the test.
    done = run_together(pg_session_factory, workers, shuffle_money)

    assert sum(done) == workers * transfers_per_worker
    with unit_of_work(pg_session_factory) as session:
        total = sum(balance_of(session, account) for account in (first, second, third))
        assert total == 3 * initial_minor
        assert check_invariants(session) == []
