"""The lifecycle sweep over many lines, on PostgreSQL and SQLite, next to pgbench.

    uv run python bench/lifecycle.py [--lines 1000000] [--mix all|expiry] [--skip-sqlite]
                                     [--skip-postgres] [--database-url postgresql://...]

Each database gets --lines lines whose time has come. With ``--mix all`` (the default, the
hard case) a quarter are in each of the four due states: active past validity (→ grace),
grace over (→ suspended), suspension over with a balance (→ terminated, balance to breakage:
250,000 ledger transfers for 1,000,000 lines) and quarantine over (→ number released). With
``--mix expiry`` every line is active past its validity (→ grace), the everyday sweep. The
statistics are refreshed after seeding (ANALYZE), as they would be on a table in service. The sweep then
moves every one of them, chunk by chunk, with its transition record and breakage transfers.
Reported: seconds and lines moved per second, this process's memory (VmRSS) before, at the
peak and after (it must stay flat: nothing is held per line), a second sweep that finds
nothing to do, and a check that every line moved exactly once and the ledger balances.
On PostgreSQL the figure is also given as a ratio to ``pgbench -b tpcb-like`` in the same
run (one line moved per pgbench transaction). Goal: under 60 s for 1,000,000 lines.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import cast

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy import Engine, Table, func, insert, select, text

from airtime.accounts.models import Line, LineState, Plan
from airtime.clock import today as clock_today
from airtime.clock import utcnow
from airtime.db.migrate import upgrade
from airtime.db.session import make_engine, make_session_factory, unit_of_work
from airtime.ledger.models import AccountKind, Entry, LedgerAccount, Transfer
from airtime.ledger.service import check_invariants, operator_account
from airtime.lifecycle.models import LineTransition
from airtime.lifecycle.service import sweep
from bench.common import (
    Figure,
    RssSampler,
    make_console,
    print_ratio_table,
    rss_kib,
    run_pgbench,
    sqlalchemy_url,
    throwaway_database,
)

PLAN_CODE = "BENCH-LIFECYCLE"
CURRENCY = "GBP"
GRACE_DAYS, SUSPENSION_DAYS, QUARANTINE_DAYS = 30, 60, 90
BALANCE_MINOR = 500  # what each line due for termination still holds
SEED_CHUNK = 10_000
LINES_MAX = 5_000_000
GOAL_SECONDS = 60.0
# The four due groups, by line number modulo 4: (state, days since it was entered, validity).
EXPECTED_AFTER = (LineState.GRACE, LineState.SUSPENDED, LineState.TERMINATED, LineState.TERMINATED)

_accounts = cast(Table, LedgerAccount.__table__)
_lines = cast(Table, Line.__table__)
_transfers = cast(Table, Transfer.__table__)
_entries = cast(Table, Entry.__table__)


ALL_GROUPS = (0, 1, 2, 3)
EXPIRY_ONLY = (0,)


def in_group(group: int, *, count: int, groups: tuple[int, ...]) -> int:
    """How many of ``count`` lines fall in ``group`` when lines cycle through ``groups``."""
    return sum(len(range(position, count, len(groups))) for position, g in enumerate(groups) if g == group)


def seed_lines(
    engine: Engine, *, count: int, today: date, groups: tuple[int, ...] = ALL_GROUPS, on_progress=None
) -> None:
    """Migrate, add the plan and ``count`` lines in the four due groups, in chunks.

    Rows are written with set-based inserts (this is test data, not provisioning); the
    opening balances are real ledger transfers, so the ledger's invariants hold.
    """
    upgrade(engine)
    factory = make_session_factory(engine)
    now = utcnow()
    with unit_of_work(factory) as session:
        session.add(
            Plan(
                code=PLAN_CODE,
                name="Lifecycle bench",
                currency=CURRENCY,
                validity_tiers=[[500, 30]],
                validity_days_max=180,
                grace_days=GRACE_DAYS,
                suspension_days=SUSPENSION_DAYS,
                quarantine_days=QUARANTINE_DAYS,
                forfeit_balance_on_termination=True,
                created_at=now,
            )
        )
        session.flush()
        plan_id = session.scalar(select(Plan.id).where(Plan.code == PLAN_CODE))
        clearing = operator_account(
            session, kind=AccountKind.PAYMENT_CLEARING, currency=CURRENCY, qualifier="seed"
        )
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0) - (clock_today() - today)
    entered = {
        1: day_start - timedelta(days=GRACE_DAYS + 1),
        2: day_start - timedelta(days=SUSPENSION_DAYS + 1),
        3: day_start - timedelta(days=QUARANTINE_DAYS + 1),
    }
    states = (LineState.ACTIVE, LineState.GRACE, LineState.SUSPENDED, LineState.TERMINATED)
    for start in range(0, count, SEED_CHUNK):
        numbers = range(start, min(start + SEED_CHUNK, count))
        with unit_of_work(factory) as session:
            account_ids = session.scalars(
                insert(_accounts).returning(_accounts.c.id, sort_by_parameter_order=True),
                [
                    {
                        "code": f"bench:line:{number}:{part}",
                        "kind": AccountKind.CUSTOMER_MAIN if part == "main" else AccountKind.CUSTOMER_BONUS,
                        "currency": CURRENCY,
                        "name": "",
                        "balance_tracked": True,
                        "floor_minor": 0,
                        "balance_minor": BALANCE_MINOR
                        if part == "main" and groups[number % len(groups)] == 2
                        else 0,
                        "created_at": now,
                    }
                    for number in numbers
                    for part in ("main", "bonus")
                ],
            ).all()
            session.execute(
                insert(_lines),
                [
                    {
                        "msisdn": f"+447{number:09d}",
                        "plan_id": plan_id,
                        "state": states[groups[number % len(groups)]],
                        "validity_date": today
                        - timedelta(days=1 if groups[number % len(groups)] == 0 else 200),
                        "state_changed_at": entered.get(
                            groups[number % len(groups)], now - timedelta(days=400)
                        ),
                        "main_account_id": account_ids[2 * index],
                        "bonus_account_id": account_ids[2 * index + 1],
                        "nickname": "",
                        "created_at": now,
                    }
                    for index, number in enumerate(numbers)
                ],
            )
            funded = [
                account_ids[2 * index]
                for index, number in enumerate(numbers)
                if groups[number % len(groups)] == 2
            ]
            if funded:
                transfer_id = f"bench:opening:{start}"
                session.execute(
                    insert(_transfers).values(
                        id=transfer_id,
                        kind="opening_balance",
                        currency=CURRENCY,
                        content_hash="",
                        description="Opening balances",
                        details={},
                        created_at=now,
                    )
                )
                session.execute(
                    insert(_entries),
                    [
                        {
                            "transfer_id": transfer_id,
                            "account_id": account,
                            "amount_minor": amount,
                            "created_at": now,
                        }
                        for account, amount in [
                            (clearing, -BALANCE_MINOR * len(funded)),
                            *((account_id, BALANCE_MINOR) for account_id in funded),
                        ]
                    ],
                )
        if on_progress is not None:
            on_progress(len(numbers))
    # Statistics as autovacuum (or SQLite's optimizer) would have them on a table this size
    # in service: freshly bulk-loaded tables otherwise look empty to the planner.
    with engine.connect() as connection:
        connection.execute(text("ANALYZE"))
        connection.commit()


def verify(engine: Engine, *, count: int, groups: tuple[int, ...] = ALL_GROUPS) -> list[str]:
    """Every line moved exactly once, to the state its group expects; the ledger balances."""
    problems = []
    factory = make_session_factory(engine)
    with unit_of_work(factory) as session:
        moved_twice = session.scalar(
            select(func.count()).select_from(
                select(LineTransition.line_id)
                .group_by(LineTransition.line_id)
                .having(func.count() > 1)
                .subquery()
            )
        )
        if moved_twice:
            problems.append(f"{moved_twice} lines have more than one transition")
        recorded = session.scalar(select(func.count(func.distinct(LineTransition.line_id))))
        if recorded != count:
            problems.append(f"{recorded} lines have a transition, expected {count}")
        by_state = dict(session.execute(select(Line.state, func.count()).group_by(Line.state)).all())
        expected: dict[str, int] = {}
        for group, state in enumerate(EXPECTED_AFTER):
            if in_group(group, count=count, groups=groups):
                expected[state] = expected.get(state, 0) + in_group(group, count=count, groups=groups)
        if by_state != expected:
            problems.append(f"lines by state {by_state}, expected {expected}")
        released = session.scalar(select(func.count()).where(Line.number_released_at.is_not(None)))
        if released != in_group(3, count=count, groups=groups):
            problems.append(
                f"{released} numbers released, expected {in_group(3, count=count, groups=groups)}"
            )
        terminations = session.scalar(select(func.count()).where(Transfer.id.like("line:%:termination")))
        if terminations != in_group(2, count=count, groups=groups):
            problems.append(
                f"{terminations} termination transfers, expected {in_group(2, count=count, groups=groups)}"
            )
        problems += check_invariants(session)
    return problems


def run_one(
    name: str, url: str, *, lines: int, groups: tuple[int, ...], console: Console
) -> tuple[Figure, list[str]]:
    engine = make_engine(url)
    try:
        progress = Progress(
            TextColumn(f"{name}: seeding"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        with progress:
            task = progress.add_task("seed", total=lines)
            seed_lines(
                engine,
                count=lines,
                today=clock_today(),
                groups=groups,
                on_progress=lambda done: progress.advance(task, done),
            )
        factory = make_session_factory(engine)
        rss_before = rss_kib()
        progress = Progress(
            TextColumn(f"{name}: sweeping"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        )
        with progress, RssSampler() as sampler:
            task = progress.add_task("sweep", total=lines)
            started = time.perf_counter()
            result = sweep(factory, on_progress=lambda _step, moved: progress.advance(task, moved))
            seconds = time.perf_counter() - started
        rss_after = rss_kib()
        started = time.perf_counter()
        again = sweep(factory)
        idle_seconds = time.perf_counter() - started
        problems = verify(engine, count=lines, groups=groups)
        if result.total != lines:
            problems.append(f"the sweep moved {result.total} lines, expected {lines}")
        if again.total:
            problems.append(f"a second sweep moved {again.total} lines")
        note = (
            f"{lines:,} lines in {seconds:.1f} s (goal < {GOAL_SECONDS:.0f} s: "
            f"{'met' if seconds < GOAL_SECONDS else 'NOT met'}); RSS {rss_before // 1024} MiB before, "
            f"peak {sampler.peak_kib // 1024} MiB, {rss_after // 1024} MiB after; "
            f"a sweep with nothing due took {idle_seconds:.2f} s"
        )
        return Figure(f"{name}: lines moved", lines / seconds, note=note), problems
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=1_000_000, help="lines to sweep (default 1,000,000)")
    parser.add_argument("--seconds", type=float, default=10, help="pgbench phase length (default 10)")
    parser.add_argument(
        "--clients", type=int, default=2, help="pgbench clients (default 2: the sweep is one)"
    )
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--mix",
        choices=("all", "expiry"),
        default="all",
        help="all: a quarter of the lines due for each move, terminations with balances (default); "
        "expiry: every line past its validity (active to grace only)",
    )
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    arguments = parser.parse_args(argv)
    if not 4 <= arguments.lines <= LINES_MAX:
        parser.error(f"--lines must be in [4, {LINES_MAX:,}]")
    groups = ALL_GROUPS if arguments.mix == "all" else EXPIRY_ONLY
    console = make_console()
    figures: list[Figure] = []
    problems: list[str] = []
    baseline = Figure("pgbench tpcb-like", float("nan"), unit="tps", note="not run (--skip-postgres)")
    if not arguments.skip_postgres:
        with throwaway_database(arguments.database_url, "airtime_bench_pgbench") as url:
            pgbench = run_pgbench(url, clients=arguments.clients, seconds=arguments.seconds)
        baseline = Figure(
            "pgbench tpcb-like",
            pgbench.transactions_per_second,
            unit="tps",
            note=f"{arguments.clients} clients",
        )
        with throwaway_database(arguments.database_url, "airtime_bench_lifecycle") as url:
            figure, found = run_one(
                "PostgreSQL", sqlalchemy_url(url), lines=arguments.lines, groups=groups, console=console
            )
            figures.append(figure)
            problems += [f"PostgreSQL: {problem}" for problem in found]
    if not arguments.skip_sqlite:
        with tempfile.TemporaryDirectory(prefix="airtime_bench_lifecycle_") as scratch:
            url = f"sqlite:///{Path(scratch) / 'airtime.db'}"
            figure, found = run_one("SQLite", url, lines=arguments.lines, groups=groups, console=console)
            figures.append(figure)
            problems += [f"SQLite: {problem}" for problem in found]
    print_ratio_table("Lifecycle sweep", baseline, figures, console)
    for problem in problems:
        console.print(f"[red]{problem}[/]")
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
