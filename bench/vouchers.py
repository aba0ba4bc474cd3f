"""Voucher PINs: how long a 1,000,000-PIN batch takes to generate and store (SQLite and
PostgreSQL, memory flat), and redemptions per second through HTTP on PostgreSQL, next to
pgbench on the same server.

    uv run python bench/vouchers.py [--quantity 1000000] [--seconds 15] [--clients 8]
                                    [--workers 2] [--redeem-pins 50000] [--lines 2000]
                                    [--shared-lines] [--skip-sqlite] [--skip-postgres]
                                    [--skip-redeem]
                                    [--database-url postgresql://...]

Goals: generation under 60 s on each database with the process's memory flat, and
redemptions ≥ 0.3× pgbench's TPC-B-like transactions per second.

Phases (the SQLite file, PIN exports and PostgreSQL databases are all throwaway):
1. generation on SQLite: a fresh file, migrated, then ``generate_batch`` of --quantity PINs
   (CSV export + keyed hashes in chunks). Timed is the call alone; the process's resident
   memory (VmRSS) is read before, at 10 %, 50 % and 100 % of the PINs and sampled every
   50 ms for its peak. Afterwards the stored rows are counted and a few exported PINs are
   hashed and looked up, so a fast but wrong batch does not count.
2. generation on PostgreSQL: the same on a fresh database (COPY + INSERT ... ON CONFLICT).
3. redemptions, in the PostgreSQL database of phase 2 (so the vouchers table holds the
   million PINs too): a GBP plan and amount rule, --lines lines, an outlet whose float pays
   for a batch of --redeem-pins PINs, generated and released to it. Then VACUUM ANALYZE and
   a CHECKPOINT (if allowed), so phase 2's writes do not land in the timed phase; then
   ``pgbench -i -s 10`` + TPC-B-like with --clients clients in a throwaway database for the
   baseline (again after the redemptions: the ratio is to the mean of both, as this
   machine's speed drifts); then ``uvicorn bench.vouchers:app_factory --factory --workers W``
   as a separate process and --clients threads, each with one keep-alive connection, POSTing
   ``/api/v1/vouchers/redeem`` {"pin", "msisdn"} with a fresh Idempotency-Key, every PIN
   once (as printed: groups of four), onto a random line of its own. 201 with status
   "credited" counts. Each client redeems 3 PINs before the clock starts (warm-up),
   then --history redemptions are made and ANALYZE runs (a database in use has history
   and statistics; see ``bench.common.make_history``).
   The load generator is lean on purpose: ``bench.common.KeepAliveClient`` on a plain
   socket, not httpx, because it runs on the same 2 cores as the server
   and PostgreSQL, and one request through an ``httpx.Client`` cost about 1 ms of client
   CPU, taken from the server being measured.
   Lines are split between the clients because two redemptions onto one line at the same
   moment can deadlock in PostgreSQL (the order's and voucher's foreign keys take KEY SHARE
   locks on the line, then crediting asks for FOR UPDATE on it); --shared-lines shows it.
After phase 3 the run is void unless: no request failed, the credited voucher orders are
exactly the ones the clients were told about, as many vouchers are redeemed, no wrong-PIN
attempt or lockout was recorded (all requests come from 127.0.0.1: 5 failures would lock
it), and the ledger passes ``check_invariants``.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script (python bench/vouchers.py): make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from fastapi import FastAPI
from rich.console import Console
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from airtime.accounts.models import Plan
from airtime.accounts.service import add_line
from airtime.app import create_app, frozen_for_serving
from airtime.clock import today, utcnow
from airtime.config import Settings
from airtime.db.migrate import upgrade
from airtime.db.session import make_engine, make_session_factory, unit_of_work
from airtime.ledger.service import check_invariants
from airtime.topups.models import AmountRule, Channel, OrderStatus, TopupOrder
from airtime.vouchers import service as vouchers
from airtime.vouchers.models import RedemptionAttempt, RedemptionLock, Voucher, VoucherState
from airtime.vouchers.pins import hash_pin, normalize_pin, pin_key
from bench.common import (
    Baseline,
    Figure,
    KeepAliveClient,
    RssSampler,
    add_common_arguments,
    check_common_arguments,
    machine_cpu_ticks,
    make_console,
    make_history,
    percentile,
    pgbench_around,
    print_ratio_table,
    process_cpu_seconds,
    processes,
    rss_kib,
    run_clients,
    sqlalchemy_url,
    throwaway_database,
)

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
CURRENCY = "GBP"
FACE_VALUE_MINOR = 1000
PLAN_CODE = "BENCH-GBP"
OUTLET_CODE = "BENCH-SHOP"
MSISDN_PREFIX = "+447911"  # valid UK mobile numbers +447911000000, +447911000001, ...
# Bounds, so a typo on the command line cannot fill the disk or occupy the machine for hours.
QUANTITY_MAX = 5_000_000
REDEEM_PINS_MAX = 1_000_000
LINES_MAX = 100_000
WORKERS_MAX = 16
WARM_UP_PER_CLIENT = 3
GENERATION_GOAL_SECONDS = 60.0
RATIO_GOAL = 0.3
RSS_CHECKPOINTS = (0.1, 0.5, 1.0)
PINS_CHECKED = 20
REQUEST_TIMEOUT_SECONDS = 15.0
SERVER_START_TIMEOUT_SECONDS = 60.0
SERVER_STOP_TIMEOUT_SECONDS = 20.0
ERRORS_KEPT_MAX = 5
PGBENCH_SCALE = 10


# --- measuring memory and the machine (Linux /proc; harmless elsewhere) ---------------------


def busy_fraction(before: tuple[int, int], after: tuple[int, int]) -> float:
    return (after[0] - before[0]) / (after[1] - before[1]) if after[1] > before[1] else float("nan")


def report_machine_load(console: Console, phase: str) -> None:
    """Say how busy the machine is just before a phase: another benchmark would skew it."""
    before = machine_cpu_ticks()
    time.sleep(1.0)
    busy = busy_fraction(before, machine_cpu_ticks())
    if busy > 0.25:  # False for NaN (no /proc/stat)
        console.print(
            f"[yellow]before {phase}: the machine is already {busy:.0%} busy; figures may suffer[/]"
        )


# --- generation ----------------------------------------------------------------------------


def bench_settings(database_url: str, secret: str, scratch: Path) -> Settings:
    return Settings(
        database_url=database_url, secret_key=secret, environment="test", outbox_dir=scratch / "outbox"
    )


@dataclass
class Generation:
    database: str
    quantity: int
    seconds: float
    cpu_seconds: float  # this process's (user + system), so a busy machine shows up as a gap
    rss_before_kib: int
    rss_at_kib: dict[float, int]
    rss_peak_kib: int
    export_bytes: int
    problems: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.quantity / self.seconds if self.seconds else 0.0


def generate(
    factory: sessionmaker[Session],
    settings: Settings,
    *,
    quantity: int,
    export_path: Path,
    outlet_code: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> vouchers.GeneratedBatch:
    return vouchers.generate_batch(
        factory,
        settings=settings,
        currency=CURRENCY,
        face_value_minor=FACE_VALUE_MINOR,
        quantity=quantity,
        expires_on=today() + timedelta(days=365),
        export_path=export_path,
        created_by="bench",
        outlet_code=outlet_code,
        on_progress=on_progress,
    )


def measure_generation(
    label: str, engine: Engine, settings: Settings, *, quantity: int, export_path: Path, console: Console
) -> Generation:
    """Time ``generate_batch`` of ``quantity`` PINs on a migrated, empty database."""
    factory = make_session_factory(engine)
    done = [0]
    rss_at: dict[float, int] = {}
    next_report = [0.0]

    def on_progress(size: int) -> None:
        done[0] += size
        for checkpoint in RSS_CHECKPOINTS:
            if checkpoint not in rss_at and done[0] >= checkpoint * quantity:
                rss_at[checkpoint] = rss_kib()
        now = time.perf_counter()
        if now >= next_report[0]:
            next_report[0] = now + 10
            console.print(
                f"  {label}: {done[0]:,} / {quantity:,} PINs, {now - started:.1f} s", highlight=False
            )

    report_machine_load(console, f"generation on {label}")
    gc.collect()
    rss_before = rss_kib()
    console.print(f"generating {quantity:,} PINs on {label} …")
    with RssSampler() as sampler:
        started, cpu_started = time.perf_counter(), time.process_time()
        batch = generate(
            factory, settings, quantity=quantity, export_path=export_path, on_progress=on_progress
        )
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
    result = Generation(
        database=label,
        quantity=quantity,
        seconds=seconds,
        cpu_seconds=cpu_seconds,
        rss_before_kib=rss_before,
        rss_at_kib=rss_at,
        rss_peak_kib=sampler.peak_kib,
        export_bytes=export_path.stat().st_size,
    )
    result.problems = check_generation(engine, settings, batch, export_path)
    console.print(
        f"  {label}: {quantity:,} PINs in {seconds:.1f} s ({result.per_second:,.0f}/s); "
        + ("stored rows and sampled PINs check out" if not result.problems else "; ".join(result.problems)),
        highlight=False,
    )
    return result


def check_generation(
    engine: Engine, settings: Settings, batch: vouchers.GeneratedBatch, export_path: Path
) -> list[str]:
    """The batch's rows are all stored, the export lists each once, and sampled PINs hash to
    the stored hash of their serial."""
    problems = []
    chooser = random.Random(0)
    sample: list[tuple[int, str]] = []
    rows = 0
    with export_path.open(encoding="utf-8") as export:
        for row in csv.DictReader(export):
            rows += 1
            # Reservoir sample, so the whole export is read once and never held in memory.
            if len(sample) < PINS_CHECKED:
                sample.append((int(row["serial"]), row["pin"]))
            elif (index := chooser.randrange(rows)) < PINS_CHECKED:
                sample[index] = (int(row["serial"]), row["pin"])
    if rows != batch.quantity:
        problems.append(f"the export lists {rows:,} PINs, not {batch.quantity:,}")
    key = pin_key(settings)
    with engine.connect() as connection:
        stored = connection.execute(
            select(func.count(), func.min(Voucher.serial), func.max(Voucher.serial)).where(
                Voucher.batch_id == batch.batch_id
            )
        ).one()
        if tuple(stored) != (batch.quantity, batch.serial_first, batch.serial_last):
            problems.append(f"stored (count, first, last) = {tuple(stored)}")
        for serial, pin in sample:
            digits = normalize_pin(pin)
            stored_hash = connection.execute(
                select(Voucher.pin_hash).where(Voucher.serial == serial)
            ).scalar_one_or_none()
            if digits is None or stored_hash != hash_pin(key, digits):
                problems.append(f"the exported PIN of serial {serial} does not match its stored hash")
                break
    return problems


# --- the server side -------------------------------------------------------------------------


def app_factory() -> FastAPI:
    """The app as uvicorn's ``--factory`` builds it in each worker: settings from AIRTIME_*."""
    return frozen_for_serving(create_app(Settings(), run_background_jobs=False))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def worker_pids(self) -> list[int]:
        """uvicorn's spawned workers (not its resource tracker), or uvicorn itself."""
        workers = []
        for pid in processes(parent=self.process.pid):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in command and b"resource_tracker" not in command:
                workers.append(pid)
        return workers or [self.process.pid]


@contextmanager
def running_server(
    *, database_url: str, secret: str, workers: int, pool_size: int, scratch: Path, console: Console
) -> Iterator[Server]:
    """uvicorn in its own process group; waits until healthy, stops it however the block ends."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    environment = dict(os.environ)
    environment.update(
        {
            "AIRTIME_DATABASE_URL": database_url,
            "AIRTIME_DATABASE_POOL_SIZE": str(pool_size),
            # The PIN hashes are keyed with the secret: the server must have the generator's.
            "AIRTIME_SECRET_KEY": secret,
            "AIRTIME_BASE_URL": base_url,
            "AIRTIME_ENVIRONMENT": "production",
            "AIRTIME_OUTBOX_DIR": str(scratch / "outbox"),
            "PYTHONPATH": os.pathsep.join(
                part for part in (str(REPOSITORY_ROOT), environment.get("PYTHONPATH", "")) if part
            ),
        }
    )
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.vouchers:app_factory",
        "--factory",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        # Clients wait at the start line after their warm-up; keep their connections open.
        "--timeout-keep-alive",
        "60",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    log_path = scratch / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=REPOSITORY_ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(base_url=base_url, process=process, log_path=log_path)
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
        with httpx.Client(base_url=base_url, timeout=2.0) as client:
            while True:
                if process.poll() is not None:
                    raise SystemExit(f"The server exited at start:\n{log_path.read_text()[-4000:]}")
                if time.monotonic() > deadline:
                    raise SystemExit(f"The server was not healthy within {SERVER_START_TIMEOUT_SECONDS:g} s")
                try:
                    if client.get("/healthz").status_code == 200 and len(server.worker_pids()) >= workers:
                        time.sleep(1.0)  # late workers finish building their app
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=SERVER_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                console.print("[yellow]the server did not stop in time; killing its process group[/]")
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=SERVER_STOP_TIMEOUT_SECONDS)
        errors = [
            line
            for line in log_path.read_text(errors="replace").splitlines()
            if '"level": "error"' in line or "Traceback" in line
        ]
        if errors:
            console.print(f"[yellow]server log has {len(errors)} error lines; the first ends:[/]")
            console.print(_error_summary(errors[0]), markup=False, highlight=False)


def _error_summary(line: str) -> str:
    """The end of a logged traceback (the exception itself), from a JSON log line or plain text."""
    try:
        exception = str(json.loads(line).get("exception") or line)
    except ValueError:
        exception = line
    lines = exception.strip().splitlines()
    raised = [line for line in lines if not line.startswith(" ") and "Error" in line][-1:]
    return "\n".join([*raised, *lines[-4:]])[:2000]


# --- redemptions -------------------------------------------------------------------------------


def msisdn_of(number: int) -> str:
    return f"{MSISDN_PREFIX}{number:06d}"


def prepare_redemptions(
    engine: Engine, settings: Settings, *, lines: int, pins: int, export_path: Path
) -> tuple[list[str], list[str]]:
    """A plan, an amount rule, ``lines`` lines, an outlet with enough float, and ``pins``
    vouchers generated for it and released; returns the PINs (as printed) and the numbers."""
    factory = make_session_factory(engine)
    with unit_of_work(factory) as session:
        session.add(
            Plan(
                code=PLAN_CODE,
                name="Bench plan",
                name_zh="基准套餐",
                currency=CURRENCY,
                validity_tiers=[[500, 30], [1000, 60], [2000, 120]],
                validity_days_max=180,
                created_at=utcnow(),
            )
        )
        session.add(
            AmountRule(
                currency=CURRENCY,
                denominations=[500, 1000, 2000],
                amount_min_minor=300,
                amount_max_minor=20000,
                custom_allowed=True,
            )
        )
        outlet = vouchers.create_outlet(session, code=OUTLET_CODE, name="Bench shop", currency=CURRENCY)
        vouchers.fund_outlet(session, outlet=outlet, amount_minor=pins * FACE_VALUE_MINOR, reference="bench")
    msisdns = [msisdn_of(number) for number in range(lines)]
    # Through the product's own provisioning (each line opens its ledger accounts), in chunks.
    for start in range(0, lines, 500):
        with unit_of_work(factory) as session:
            for msisdn in msisdns[start : start + 500]:
                add_line(
                    session,
                    msisdn=msisdn,
                    plan_code=PLAN_CODE,
                    settings=settings,
                    validity_date=today() + timedelta(days=30),
                )
    batch = generate(factory, settings, quantity=pins, export_path=export_path, outlet_code=OUTLET_CODE)
    with unit_of_work(factory) as session:
        released = vouchers.activate_range(
            session, serial_first=batch.serial_first, serial_last=batch.serial_last, actor="bench"
        )
    if released != pins:
        raise SystemExit(f"released {released:,} vouchers, not {pins:,}")
    with export_path.open(encoding="utf-8") as export:
        printed = [row["pin"] for row in csv.DictReader(export)]
    return printed, msisdns


def settle_database(engine: Engine, console: Console) -> None:
    """VACUUM ANALYZE (planner statistics, visibility map) and a CHECKPOINT, so the bulk
    writes of generation are not paid for by the timed phase."""
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))
        try:
            connection.execute(text("CHECKPOINT"))
        except Exception as error:  # noqa: BLE001 - needs pg_checkpoint or superuser; optional
            console.print(f"[yellow]CHECKPOINT refused ({type(error).__name__}); the run goes on[/]")


class RedeemFailed(RuntimeError):
    pass


@dataclass
class Client:
    number: int
    http: KeepAliveClient
    pins: list[str]
    msisdns: list[str]
    chooser: random.Random
    used: int = 0
    latencies_seconds: list[float] = field(default_factory=list)
    public_ids: list[str] = field(default_factory=list)
    warm_up_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RedemptionRun:
    redemptions: int
    elapsed_seconds: float
    failures: int
    errors: list[str]
    exhausted: bool
    latencies_seconds: list[float]
    public_ids: list[str]
    warm_up_ids: list[str]
    machine_busy_fraction: float
    server_cpu_seconds: float
    client_cpu_seconds: float
    postgres_cpu_seconds: float

    @property
    def per_second(self) -> float:
        return self.redemptions / self.elapsed_seconds if self.elapsed_seconds else 0.0


def redeem_one(client: Client, run_id: str) -> str:
    """One redemption of the client's next unused PIN; returns the order's public id."""
    pin = client.pins[client.used]
    client.used += 1
    status, _, content = client.http.post_json(
        "/api/v1/vouchers/redeem",
        {"pin": pin, "msisdn": client.chooser.choice(client.msisdns)},
        {"Idempotency-Key": f"bench-{run_id}-{client.number}-{client.used}"},
    )
    if status != 201:
        raise RedeemFailed(f"redeem answered {status}: {content[:300].decode(errors='replace')}")
    body = json.loads(content)
    if body["status"] != OrderStatus.CREDITED:
        raise RedeemFailed(f"redeem gave status {body['status']}")
    return str(body["id"])


def run_redemptions(
    arguments: argparse.Namespace,
    server: Server,
    engine: Engine,
    pins: list[str],
    msisdns: list[str],
    console: Console,
) -> RedemptionRun:
    run_id = uuid.uuid4().hex[:8]
    count = arguments.clients
    clients = [
        Client(
            number=number,
            http=KeepAliveClient(server.base_url, timeout=REQUEST_TIMEOUT_SECONDS),
            pins=pins[number::count],  # every PIN belongs to one client and is used once
            # Its own lines too, unless --shared-lines: see the module's docstring.
            msisdns=msisdns if arguments.shared_lines else msisdns[number::count],
            chooser=random.Random(number),
        )
        for number in range(count)
    ]
    errors: list[str] = []
    errors_lock = threading.Lock()
    exhausted = threading.Event()
    warm_up_failures = [0]

    def warm_up(number: int) -> None:
        client = clients[number]
        try:
            for _ in range(WARM_UP_PER_CLIENT):
                client.warm_up_ids.append(redeem_one(client, run_id))
        except Exception as error:  # noqa: BLE001 - an escaping error would leave run_clients waiting
            with errors_lock:
                warm_up_failures[0] += 1
                if len(errors) < ERRORS_KEPT_MAX:
                    errors.append(f"warm-up {type(error).__name__}: {error}")

    def one(number: int) -> int:
        client = clients[number]
        if client.used >= len(client.pins):
            exhausted.set()
            time.sleep(0.01)
            return 0
        started = time.perf_counter()
        try:
            public_id = redeem_one(client, run_id)
        except Exception as error:
            with errors_lock:
                if len(errors) < ERRORS_KEPT_MAX:
                    errors.append(f"{type(error).__name__}: {error}")
            raise
        client.latencies_seconds.append(time.perf_counter() - started)
        client.public_ids.append(public_id)
        return 1

    try:
        history = make_history(
            arguments.history,
            count,
            lambda number: redeem_one(clients[number], run_id),
            engine=engine,
            console=console,
            what="redemptions",
        )
        for client, made in zip(clients, history, strict=True):
            client.warm_up_ids += made
        workers = server.worker_pids()
        database = processes(command="postgres")
        report_machine_load(console, "redemptions")
        console.print(
            f"redemptions: {count} clients, {len(workers)} server workers, {arguments.seconds:g} s …"
        )
        before = (
            machine_cpu_ticks(),
            sum(process_cpu_seconds(pid) for pid in workers),
            time.process_time(),
            {pid: process_cpu_seconds(pid) for pid in database},
        )
        throughput = run_clients(count, arguments.seconds, one, warm_up=warm_up)
        machine_before, server_before, client_before, database_before = before
        busy = busy_fraction(machine_before, machine_cpu_ticks())
        server_cpu = sum(process_cpu_seconds(pid) for pid in workers) - server_before
        client_cpu = time.process_time() - client_before
        # Backends that start during the phase count from 0; ones that exit are missed (none should).
        database_cpu = sum(
            process_cpu_seconds(pid) - database_before.get(pid, 0.0)
            for pid in set(database) | set(processes(command="postgres"))
        )
    finally:
        for client in clients:
            client.http.close()
    return RedemptionRun(
        redemptions=throughput.operations,
        elapsed_seconds=throughput.elapsed_seconds,
        failures=throughput.failures + warm_up_failures[0],
        errors=errors,
        exhausted=exhausted.is_set(),
        latencies_seconds=[value for client in clients for value in client.latencies_seconds],
        public_ids=[value for client in clients for value in client.public_ids],
        warm_up_ids=[value for client in clients for value in client.warm_up_ids],
        machine_busy_fraction=busy,
        server_cpu_seconds=server_cpu,
        client_cpu_seconds=client_cpu,
        postgres_cpu_seconds=database_cpu,
    )


def verify_redemptions(run: RedemptionRun, engine: Engine, console: Console) -> list[str]:
    """Everything that must hold for the redemption figures to count."""
    problems: list[str] = []
    factory = make_session_factory(engine)
    with unit_of_work(factory) as session:
        orders = dict(
            session.execute(
                select(TopupOrder.status, func.count())
                .where(TopupOrder.channel == Channel.VOUCHER)
                .group_by(TopupOrder.status)
            ).all()
        )
        credited = set(
            session.scalars(
                select(TopupOrder.public_id).where(
                    TopupOrder.channel == Channel.VOUCHER, TopupOrder.status == OrderStatus.CREDITED
                )
            )
        )
        redeemed = session.scalar(
            select(func.count()).select_from(Voucher).where(Voucher.state == VoucherState.REDEEMED)
        )
        refused = session.scalar(
            select(func.count()).select_from(RedemptionAttempt).where(RedemptionAttempt.succeeded.is_(False))
        )
        locks = session.scalar(select(func.count()).select_from(RedemptionLock))
        ledger = check_invariants(session)
    expected = set(run.public_ids) | set(run.warm_up_ids)
    if len(expected) != len(run.public_ids) + len(run.warm_up_ids):
        problems.append("an order id was reported twice")
    if credited != expected:
        problems.append(
            f"{len(credited):,} credited voucher orders, but the clients were told of {len(expected):,} "
            f"(missing {len(expected - credited):,}, unexpected {len(credited - expected):,})"
        )
    if redeemed != len(expected):
        problems.append(f"{redeemed:,} vouchers redeemed for {len(expected):,} credited orders")
    others = {status: number for status, number in orders.items() if status != OrderStatus.CREDITED}
    if others:
        problems.append(f"voucher orders in other states: {others}")
    if refused or locks:
        problems.append(f"{refused} refused attempts and {locks} lockouts recorded")
    if run.failures:
        problems.append(f"{run.failures} redemptions failed: {run.errors}")
    if run.exhausted:
        problems.append("a client ran out of PINs before the end: raise --redeem-pins")
    problems += [f"ledger: {problem}" for problem in ledger]
    console.print(
        f"checked: {len(credited):,} credited voucher orders = {len(run.public_ids):,} timed + "
        f"{len(run.warm_up_ids)} warm-up redemptions; {redeemed:,} vouchers redeemed; "
        f"{refused} refused attempts, {locks} lockouts; ledger invariants "
        + ("hold" if not ledger else "BROKEN"),
        highlight=False,
    )
    return problems


# --- main --------------------------------------------------------------------------------------


def mib(kib: int) -> str:
    return f"{kib / 1024:,.0f} MiB"


def print_generation(results: list[Generation], console: Console) -> None:
    from rich.table import Table

    table = Table(title="Generating and storing voucher PINs (generate_batch)")
    for column in (
        "database",
        "PINs",
        "seconds",
        "CPU s",
        "PINs/s",
        "RSS before",
        "10 %",
        "50 %",
        "100 %",
        "peak",
        "goal",
    ):
        table.add_column(column, justify="left" if column == "database" else "right", no_wrap=True)
    for result in results:
        met = result.seconds < GENERATION_GOAL_SECONDS and not result.problems
        table.add_row(
            result.database,
            f"{result.quantity:,}",
            f"{result.seconds:.1f}",
            f"{result.cpu_seconds:.1f}",
            f"{result.per_second:,.0f}",
            mib(result.rss_before_kib),
            *(mib(result.rss_at_kib.get(checkpoint, 0)) for checkpoint in RSS_CHECKPOINTS),
            mib(result.rss_peak_kib),
            f"< {GENERATION_GOAL_SECONDS:g} s " + ("met" if met else "NOT met"),
        )
    console.print(table)
    for result in results:
        console.print(
            f"{result.database}: export {result.export_bytes / 1e6:,.0f} MB; memory grew "
            f"{(result.rss_at_kib.get(1.0, 0) - result.rss_at_kib.get(0.1, 0)) / 1024:+,.1f} MiB "
            f"from 10 % to 100 % of the PINs",
            highlight=False,
        )


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(parser, seconds=15, clients=8)
    parser.add_argument(
        "--quantity", type=int, default=1_000_000, help="PINs generated on each database (default 1,000,000)"
    )
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (default 2)")
    parser.add_argument(
        "--redeem-pins",
        type=int,
        default=50_000,
        help="released PINs for the redemption phase (default 50,000)",
    )
    parser.add_argument(
        "--lines", type=int, default=2_000, help="lines redeemed onto at random (default 2,000)"
    )
    parser.add_argument(
        "--history",
        type=int,
        default=3_000,
        help="redemptions made before the clock starts, then ANALYZE, as a database in use has "
        "history and statistics (default 3,000; 0 for none)",
    )
    parser.add_argument(
        "--shared-lines",
        action="store_true",
        help="every client redeems onto any line, not only its own (two redemptions onto one "
        "line at the same time can deadlock: see above)",
    )
    parser.add_argument("--skip-sqlite", action="store_true", help="no generation on SQLite")
    parser.add_argument("--skip-postgres", action="store_true", help="nothing on PostgreSQL (no redemptions)")
    parser.add_argument("--skip-redeem", action="store_true", help="no redemption phase (generation only)")
    arguments = parser.parse_args(argv)
    check_common_arguments(parser, arguments)
    if not 1 <= arguments.quantity <= QUANTITY_MAX:
        parser.error(f"--quantity must be in [1, {QUANTITY_MAX:,}]")
    if not 1 <= arguments.workers <= WORKERS_MAX:
        parser.error(f"--workers must be in [1, {WORKERS_MAX}]")
    if not arguments.clients <= arguments.lines <= LINES_MAX:
        parser.error(f"--lines must be in [--clients, {LINES_MAX:,}]")
    if not 0 <= arguments.history <= REDEEM_PINS_MAX:
        parser.error(f"--history must be in [0, {REDEEM_PINS_MAX:,}]")
    pins_min = arguments.clients * (WARM_UP_PER_CLIENT + 1) + arguments.history
    if not pins_min <= arguments.redeem_pins <= REDEEM_PINS_MAX:
        parser.error(f"--redeem-pins must be in [{pins_min}, {REDEEM_PINS_MAX:,}]")
    return arguments


def sqlite_phase(arguments: argparse.Namespace, secret: str, scratch: Path, console: Console) -> Generation:
    url = f"sqlite:///{scratch / 'vouchers.db'}"
    export_path = scratch / "sqlite-pins.csv"
    engine = make_engine(url)
    try:
        upgrade(engine)
        settings = bench_settings(url, secret, scratch)
        return measure_generation(
            "SQLite", engine, settings, quantity=arguments.quantity, export_path=export_path, console=console
        )
    finally:
        engine.dispose()
        for path in [export_path, *scratch.glob("vouchers.db*")]:
            path.unlink(missing_ok=True)


def postgres_phases(
    arguments: argparse.Namespace, secret: str, scratch: Path, console: Console
) -> tuple[Generation, RedemptionRun | None, Baseline | None, list[str]]:
    """Generation, then (unless --skip-redeem) pgbench and redemptions: (generation,
    redemption run, pgbench tps, problems)."""
    server_url = sqlalchemy_url(arguments.database_url)
    with throwaway_database(server_url, "airtime_bench_vouchers") as url:
        engine = make_engine(url, pool_size=2)
        try:
            upgrade(engine)
            settings = bench_settings(url, secret, scratch)
            export_path = scratch / "postgres-pins.csv"
            try:
                generation = measure_generation(
                    "PostgreSQL",
                    engine,
                    settings,
                    quantity=arguments.quantity,
                    export_path=export_path,
                    console=console,
                )
            finally:
                export_path.unlink(missing_ok=True)
            if arguments.skip_redeem:
                return generation, None, None, []
            console.print(
                f"preparing redemptions: {arguments.lines:,} lines, "
                f"{arguments.redeem_pins:,} PINs released to an outlet …"
            )
            export_path = scratch / "redeem-pins.csv"
            try:
                pins, msisdns = prepare_redemptions(
                    engine,
                    settings,
                    lines=arguments.lines,
                    pins=arguments.redeem_pins,
                    export_path=export_path,
                )
            finally:
                export_path.unlink(missing_ok=True)
            settle_database(engine, console)
            report_machine_load(console, "pgbench")

            def redemptions() -> RedemptionRun:
                with running_server(
                    database_url=url,
                    secret=secret,
                    workers=arguments.workers,
                    pool_size=arguments.clients + 2,
                    scratch=scratch,
                    console=console,
                ) as server:
                    return run_redemptions(arguments, server, engine, pins, msisdns, console)

            pgbench, run = pgbench_around(
                redemptions,
                server_url=server_url,
                clients=arguments.clients,
                seconds=arguments.seconds,
                scale=PGBENCH_SCALE,
                console=console,
            )
            return generation, run, pgbench, verify_redemptions(run, engine, console)
        finally:
            engine.dispose()


def print_redemptions(
    arguments: argparse.Namespace, run: RedemptionRun, pgbench: Baseline, console: Console
) -> None:
    pgbench_tps = pgbench.transactions_per_second
    milliseconds = [value * 1000 for value in run.latencies_seconds]
    p50, p99 = percentile(milliseconds, 0.5), percentile(milliseconds, 0.99)
    print_ratio_table(
        "Voucher redemptions through HTTP on PostgreSQL",
        Figure(
            "pgbench tpcb-like",
            pgbench_tps,
            unit="tps",
            note=pgbench.note(arguments.clients, PGBENCH_SCALE),
        ),
        [
            Figure(
                "redemptions (POST /api/v1/vouchers/redeem)",
                run.per_second,
                note=f"{arguments.clients} clients, {arguments.workers} uvicorn workers, "
                f"{run.redemptions:,} credited in {run.elapsed_seconds:.1f} s; "
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms",
            )
        ],
        console,
    )
    per_redemption = 1000 / run.redemptions if run.redemptions else float("nan")
    cores = os.cpu_count() or 1
    ours = (run.server_cpu_seconds + run.client_cpu_seconds + run.postgres_cpu_seconds) / run.elapsed_seconds
    console.print(
        f"CPU ms per redemption: server {run.server_cpu_seconds * per_redemption:.2f}, "
        f"load generator {run.client_cpu_seconds * per_redemption:.2f}, "
        f"PostgreSQL (all its processes) {run.postgres_cpu_seconds * per_redemption:.2f}; "
        f"the machine's {cores} cores were {run.machine_busy_fraction:.0%} busy: "
        f"{ours:.2f} cores for this run, {max(0.0, run.machine_busy_fraction * cores - ours):.2f} for others",
        highlight=False,
    )
    ratio = run.per_second / pgbench_tps if pgbench_tps else 0.0
    console.print(
        f"goal ≥ {RATIO_GOAL:.2f}× pgbench: {'met' if ratio >= RATIO_GOAL else 'NOT met'} ({ratio:.2f}×)"
    )


def main(argv: list[str] | None = None) -> None:
    arguments = parse_arguments(argv)
    console = make_console()
    # The PIN hashes are keyed with it; the server gets the same one.
    secret = secrets.token_urlsafe(32)
    generations: list[Generation] = []
    problems: list[str] = []
    run: RedemptionRun | None = None
    pgbench: Baseline | None = None
    # Everything holding PINs (exports, the SQLite file) lives here and is deleted at the end.
    with tempfile.TemporaryDirectory(prefix="airtime_bench_vouchers_") as scratch_name:
        scratch = Path(scratch_name)
        if not arguments.skip_sqlite:
            generations.append(sqlite_phase(arguments, secret, scratch, console))
        if not arguments.skip_postgres:
            generation, run, pgbench, problems = postgres_phases(arguments, secret, scratch, console)
            generations.append(generation)
    print_generation(generations, console)
    for result in generations:
        problems += [f"{result.database} generation: {problem}" for problem in result.problems]
    if run is not None and pgbench is not None:
        print_redemptions(arguments, run, pgbench, console)
    if problems:
        raise SystemExit("The run is void:\n" + "\n".join(problems))


if __name__ == "__main__":
    main()
