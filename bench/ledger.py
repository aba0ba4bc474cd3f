"""How fast the ledger posts transfers on PostgreSQL, next to pgbench on the same server.

    uv run python bench/ledger.py [--seconds 10] [--clients 4] [--database-url postgresql://...]

Phases, each on its own throwaway database (dropped at the end):
1. pgbench: ``pgbench -i -s 10`` then the TPC-B-like script, for the baseline tps;
2. single transfers: each client thread posts one top-up (clearing account → a random
   customer wallet among --wallets) per unit of work, i.e. one committed transaction each;
3. batched transfers: one client posts --batch-size top-ups per unit of work with
   ``post_transfers``.
The ledger is checked with ``check_invariants`` afterwards; a benchmark that breaks it is void.
"""

from __future__ import annotations

import argparse
import random
import sys
import uuid
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script (python bench/ledger.py): make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from sqlalchemy import Engine, insert, text

from airtime.clock import utcnow
from airtime.db.migrate import upgrade
from airtime.db.session import make_engine, make_session_factory, unit_of_work
from airtime.ledger.models import AccountKind, LedgerAccount
from airtime.ledger.service import (
    TRANSFERS_PER_BATCH_MAX,
    Leg,
    TransferRequest,
    check_invariants,
    open_account,
    post_transfer,
    post_transfers,
)
from bench.common import (
    Figure,
    add_common_arguments,
    check_common_arguments,
    make_console,
    print_ratio_table,
    run_clients,
    run_pgbench,
    sqlalchemy_url,
    throwaway_database,
)

CURRENCY = "USD"
TOPUP_AMOUNTS_MINOR = (500, 1000, 2000, 5000)


def open_accounts(engine: Engine, wallet_count: int) -> tuple[int, list[int]]:
    """One payment clearing account and ``wallet_count`` prepaid customer wallets."""
    factory = make_session_factory(engine)
    with unit_of_work(factory) as session:
        clearing = open_account(
            session,
            code="clearing:bench:USD",
            kind=AccountKind.PAYMENT_CLEARING,
            currency=CURRENCY,
            balance_tracked=False,
            floor_minor=None,
        )
        now = utcnow()
        # Set-up only: the wallets are created in one statement rather than 10,000 calls.
        session.execute(
            insert(LedgerAccount),
            [
                {
                    "code": f"line:bench-{number}:main",
                    "kind": AccountKind.CUSTOMER_MAIN,
                    "currency": CURRENCY,
                    "name": "",
                    "balance_tracked": True,
                    "floor_minor": 0,
                    "balance_minor": 0,
                    "created_at": now,
                }
                for number in range(wallet_count)
            ],
        )
        wallet_ids = list(
            session.execute(
                text("select id from ledger_accounts where code like 'line:bench-%' order by id")
            ).scalars()
        )
    return clearing, wallet_ids


def topup_legs(clearing: int, wallet: int, chooser: random.Random) -> tuple[Leg, Leg]:
    amount_minor = chooser.choice(TOPUP_AMOUNTS_MINOR)
    return Leg(clearing, -amount_minor), Leg(wallet, amount_minor)


def measure_ledger(arguments: argparse.Namespace, url: str, console: Console) -> tuple[Figure, Figure]:
    engine = make_engine(url, pool_size=arguments.clients + 2)
    try:
        upgrade(engine)
        clearing, wallet_ids = open_accounts(engine, arguments.wallets)
        factory = make_session_factory(engine)
        choosers = [random.Random(number) for number in range(arguments.clients)]
        run_id = uuid.uuid4().hex[:8]
        counters = [0] * arguments.clients

        def warm_up(_number: int) -> None:
            with unit_of_work(factory) as session:
                session.execute(text("select 1"))

        def single_transfer(number: int) -> int:
            chooser = choosers[number]
            counters[number] += 1
            with unit_of_work(factory) as session:
                post_transfer(
                    session,
                    transfer_id=f"single-{run_id}-{number}-{counters[number]}",
                    kind="topup",
                    currency=CURRENCY,
                    legs=topup_legs(clearing, chooser.choice(wallet_ids), chooser),
                )
            return 1

        console.print(f"single transfers: {arguments.clients} clients for {arguments.seconds:g} s …")
        single = run_clients(arguments.clients, arguments.seconds, single_transfer, warm_up=warm_up)

        batch_chooser = random.Random(-1)
        batch_numbers = [0]

        def batch_of_transfers(_number: int) -> int:
            batch_numbers[0] += 1
            requests = [
                TransferRequest(
                    transfer_id=f"batch-{run_id}-{batch_numbers[0]}-{position}",
                    kind="topup",
                    currency=CURRENCY,
                    legs=topup_legs(clearing, batch_chooser.choice(wallet_ids), batch_chooser),
                )
                for position in range(arguments.batch_size)
            ]
            with unit_of_work(factory) as session:
                post_transfers(session, requests)
            return len(requests)

        console.print(f"batched transfers: 1 client, {arguments.batch_size:,} per transaction …")
        batched = run_clients(1, arguments.seconds, batch_of_transfers, warm_up=warm_up)

        with unit_of_work(factory) as session:
            problems = check_invariants(session)
        if problems:
            raise SystemExit("The benchmark broke the ledger:\n" + "\n".join(problems))
        if single.failures or batched.failures:
            raise SystemExit(f"Failures: {single.failures} single, {batched.failures} batched")
        return (
            Figure(
                "single transfers",
                single.per_second,
                note=f"{arguments.clients} clients, 1 transfer per transaction, {single.operations:,} posted",
            ),
            Figure(
                "batched transfers",
                batched.per_second,
                note=f"1 client, {arguments.batch_size:,} per transaction, {batched.operations:,} posted",
            ),
        )
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(parser)
    parser.add_argument("--wallets", type=int, default=10_000, help="customer wallets (default 10,000)")
    parser.add_argument("--batch-size", type=int, default=5_000, help="transfers per batch (default 5,000)")
    parser.add_argument("--pgbench-scale", type=int, default=10, help="pgbench -i scale (default 10)")
    arguments = parser.parse_args(argv)
    check_common_arguments(parser, arguments)
    if not 1 <= arguments.batch_size <= TRANSFERS_PER_BATCH_MAX:
        parser.error(f"--batch-size must be in [1, {TRANSFERS_PER_BATCH_MAX}]")
    if not 1 <= arguments.wallets <= 1_000_000:
        parser.error("--wallets must be in [1, 1,000,000]")

    console = make_console()
    server_url = sqlalchemy_url(arguments.database_url)
    console.print(
        f"pgbench -i -s {arguments.pgbench_scale}, then tpcb-like with {arguments.clients} clients "
        f"for {arguments.seconds:g} s …"
    )
    with throwaway_database(server_url, "airtime_bench_pgbench") as url:
        pgbench = run_pgbench(
            url, clients=arguments.clients, seconds=arguments.seconds, scale=arguments.pgbench_scale
        )
    with throwaway_database(server_url, "airtime_bench_ledger") as url:
        single, batched = measure_ledger(arguments, url, console)
    print_ratio_table(
        "Ledger throughput on PostgreSQL",
        Figure(
            "pgbench tpcb-like",
            pgbench.transactions_per_second,
            unit="tps",
            note=f"{arguments.clients} clients, -j 2, scale {arguments.pgbench_scale}",
        ),
        [single, batched],
        console,
    )


if __name__ == "__main__":
    main()
