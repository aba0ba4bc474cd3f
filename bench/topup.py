"""End-to-end top-ups per second through HTTP on PostgreSQL, next to pgbench on the same server.

    uv run python bench/topup.py [--seconds 15] [--clients 8] [--workers 2] [--lines 2000]
                                 [--database-url postgresql://...] [--explain] [--cprofile FILE]
                                 [--handlers [--topups-per-client 1000]]

One top-up is what a customer's payment makes happen, over HTTP against a real server:
1. ``POST /api/v1/topups`` (JSON, a fresh Idempotency-Key) → 201 with ``payment_url``;
2. ``POST {payment_url}`` with ``decision=approve`` and the page's CSRF token → 303 to the
   status page. The sandbox stores the payment event, marks the order paid and credits the
   line (ledger transfer, validity, receipt SMS in the outbox) within that request.
Latency is measured from the start of 1 to the end of 2. Each client thread holds one
keep-alive connection (``bench.common.KeepAliveClient``: a plain socket, one ``sendall`` per
request, byte searches for the response); it fetches the sandbox page once, before the
clock starts, for the ``airtime_csrf`` cookie and its token, and sends them with every
later request (the cookie as an explicit ``Cookie`` header; double-submit scheme). The load
generator is this lean on purpose: it runs on the same 2 cores as the server and PostgreSQL,
and one request through an ``httpx.Client`` cost about 1 ms of client CPU, taken from the
server being measured.
Redirects are not followed (approve only needs its 303). Setup, the status read-backs and
the other calls outside the timed phase still use httpx.

Phases, each on its own throwaway database (dropped at the end):
1. pgbench: ``pgbench -i -s 10`` then the TPC-B-like script with the same number of clients;
2. top-ups: migrate, create a plan, a GBP amount rule and --lines lines, start
   ``uvicorn bench.topup:app_factory --factory --workers W`` as a separate process, warm up,
   make --history top-ups and ANALYZE (a database in use has history and statistics; see
   ``bench.common.make_history``), then run the clients for --seconds;
3. pgbench again. The ratio is to the mean of 1 and 3: this machine's speed drifts.
Only credited top-ups count: after the run the database must hold exactly one credited order
for every top-up the clients completed (and no other order in any other state), a random
sample of --status-sample of them is read back with ``GET /api/v1/topups/{id}`` (outside
the timed phase) and the ledger must pass ``check_invariants``; otherwise the run is void.

``--explain`` instead runs a few top-ups one at a time on one worker and prints the SQL
statements, transactions and connection checkouts of each request (the ORM's, and the fast
path's over asyncpg, marked "asyncpg:"). ``--cprofile FILE`` runs
one worker with cProfile on in every thread, timed by the thread's CPU clock, writes its
statistics of the run to FILE and prints the costliest functions per top-up (cProfile slows
Python down, so the throughput of such a run does not count; py-spy could not sample
uvicorn's threads on our machine). ``--handlers`` calls the fast path's start and approval
handlers in the bench process, from --clients tasks on one event loop, with no HTTP and no
server, and prints the CPU per top-up of that process and of PostgreSQL: a steadier figure
than the HTTP run's for comparing two versions of the fast path's code (not a throughput).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    # Run as a script (python bench/topup.py): make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from fastapi import FastAPI
from rich.console import Console
from sqlalchemy import Engine, event, func, select, text
from starlette.responses import Response

from airtime.accounts.models import Plan
from airtime.accounts.service import add_line
from airtime.app import create_app, frozen_for_serving
from airtime.clock import today, utcnow
from airtime.config import Settings
from airtime.db.migrate import upgrade
from airtime.db.session import make_engine, make_session_factory, unit_of_work
from airtime.fastpath import FastPath
from airtime.ledger.models import AccountKind
from airtime.ledger.service import check_invariants, operator_account
from airtime.payments.registry import providers_from_settings
from airtime.topups.models import AmountRule, OrderStatus, TopupOrder
from airtime.web.context import CSRF_COOKIE, set_signed_cookie
from bench.common import (
    Figure,
    KeepAliveClient,
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
    run_clients,
    sqlalchemy_url,
    throwaway_database,
)

REPOSITORY_ROOT = Path(__file__).resolve().parent.parent
CURRENCY = "GBP"
PLAN_CODE = "BENCH-GBP"
TOPUP_AMOUNT_MINOR = 1000
MSISDN_PREFIX = "+447911"  # UK mobile numbers +447911000000, +447911000001, ...
LINES_MAX = 100_000
WORKERS_MAX = 16
STATUS_SAMPLE_MAX = 10_000
HISTORY_MAX = 1_000_000
REQUEST_TIMEOUT_SECONDS = 15.0
SERVER_START_TIMEOUT_SECONDS = 60.0
SERVER_STOP_TIMEOUT_SECONDS = 20.0
ERRORS_KEPT_MAX = 5
TRACE_SQL_ENVIRONMENT = "AIRTIME_BENCH_TRACE_SQL"
CPROFILE_ENVIRONMENT = "AIRTIME_BENCH_CPROFILE"
PROFILE_ROWS = 30
POOL_SIZE_MAX = 40  # anyio runs at most 40 sync endpoints at once per worker
_CSRF_PATTERN = re.compile(r'name="csrf_token" value="([^"]+)"')


# --- the server side ---------------------------------------------------------------------


def app_factory() -> FastAPI:
    """The app as uvicorn's ``--factory`` builds it in each worker: settings from AIRTIME_*."""
    app = create_app(Settings(), run_background_jobs=False)
    if os.environ.get(TRACE_SQL_ENVIRONMENT):
        _install_sql_trace(app)
    if os.environ.get(CPROFILE_ENVIRONMENT):
        _install_cprofile(app, Path(os.environ[CPROFILE_ENVIRONMENT]))
    return frozen_for_serving(app)


def _install_cprofile(app: FastAPI, output: Path) -> None:
    """For --cprofile (one worker): profile the event loop thread and every thread started
    from now on (the endpoints' thread pool); ``POST /_bench/profile`` writes the merged
    statistics to ``output``."""
    profiles: list[cProfile.Profile] = []

    def start_in_new_thread(*_: object) -> None:
        # Called once on a new thread's first event; enabling replaces this hook there. The
        # timer is the thread's CPU time, so waiting for PostgreSQL, the GIL or work is left out.
        profile = cProfile.Profile(time.thread_time)
        profiles.append(profile)
        profile.enable()

    threading.setprofile(start_in_new_thread)
    start_in_new_thread()  # uvicorn builds the app on the thread that runs its event loop

    @app.post("/_bench/profile", include_in_schema=False)
    def write_profile() -> dict[str, int]:
        threading.setprofile(None)
        pstats.Stats(*profiles).dump_stats(output)
        return {"threads": len(profiles)}


def _install_sql_trace(app: FastAPI) -> None:
    """For --explain: record what the worker sends to PostgreSQL; ``GET /_bench/sql`` hands
    the record over and starts a new one. Only for a single worker and one request at a time."""
    engine: Engine = app.state.engine
    record: list[str] = []
    lock = threading.Lock()

    def note(entry: str) -> None:
        with lock:
            record.append(entry)

    # A checkout of a pooled connection pings the server first (pool_pre_ping=True).
    event.listen(engine.pool, "checkout", lambda *_: note("(checkout + ping)"))
    event.listen(engine, "begin", lambda _connection: note("BEGIN"))
    event.listen(engine, "commit", lambda _connection: note("COMMIT"))
    event.listen(engine, "rollback", lambda _connection: note("ROLLBACK"))
    event.listen(
        engine,
        "before_cursor_execute",
        lambda _connection, _cursor, statement, _parameters, _context, executemany: note(
            ("executemany: " if executemany else "") + " ".join(statement.split())
        ),
    )

    # The fast path's statements go over asyncpg: its pool logs each one too.
    fast_path = app.state.fast_path
    if fast_path is not None:
        fast_path.on_connect.append(
            lambda connection: connection.add_query_logger(
                lambda logged: note("asyncpg: " + " ".join(logged.query.split()))
            )
        )

    @app.get("/_bench/sql", include_in_schema=False)
    def take_record() -> list[str]:
        with lock:
            taken = list(record)
            record.clear()
        return taken


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
        """The uvicorn processes serving requests: the workers it spawned, or uvicorn itself."""
        uvicorn = self.process.pid
        workers = [pid for pid in processes(parent=uvicorn) if _is_spawned_worker(pid)]
        return workers or [uvicorn]


def _is_spawned_worker(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"spawn_main" in command and b"resource_tracker" not in command


@contextmanager
def running_server(
    *,
    database_url: str,
    workers: int,
    port: int,
    pool_size: int,
    trace_sql: bool = False,
    cprofile_output: Path | None = None,
    secret_key: str | None = None,
    console: Console,
) -> Iterator[Server]:
    """Start uvicorn with ``app_factory`` in its own process group, wait until it is healthy,
    and stop it (SIGTERM, then SIGKILL of that group) however the block ends."""
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="airtime_bench_topup_") as scratch:
        environment = dict(os.environ)
        environment.update(
            {
                "AIRTIME_DATABASE_URL": database_url,
                "AIRTIME_DATABASE_POOL_SIZE": str(pool_size),
                # A caller that derives keys from the secret (agent credentials) passes its own.
                "AIRTIME_SECRET_KEY": secret_key or secrets.token_urlsafe(32),
                "AIRTIME_BASE_URL": base_url,
                "AIRTIME_ENVIRONMENT": "production",
                "AIRTIME_OUTBOX_DIR": str(Path(scratch) / "outbox"),
                "PYTHONPATH": os.pathsep.join(
                    part for part in (str(REPOSITORY_ROOT), environment.get("PYTHONPATH", "")) if part
                ),
            }
        )
        if trace_sql:
            environment[TRACE_SQL_ENVIRONMENT] = "1"
        if cprofile_output is not None:
            environment[CPROFILE_ENVIRONMENT] = str(cprofile_output.resolve())
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.topup:app_factory",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            # Access logs would be written by the same 2 cores; a production log shipper
            # would cost about as much. The app's own structured logs stay on.
            "--no-access-log",
            "--log-level",
            "warning",
        ]
        log_path = Path(scratch) / "server.log"
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
            _wait_until_healthy(server, workers=workers)
            yield server
        finally:
            _stop(server, console)


def _wait_until_healthy(server: Server, *, workers: int) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_SECONDS
    with httpx.Client(base_url=server.base_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise SystemExit(f"The server exited at start:\n{server.log_path.read_text()[-4000:]}")
            try:
                if client.get("/healthz").status_code == 200 and len(server.worker_pids()) >= workers:
                    # Every worker answers once it has built its app; give late ones a moment.
                    time.sleep(1.0)
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    raise SystemExit(f"The server was not healthy within {SERVER_START_TIMEOUT_SECONDS:g} s")


def _stop(server: Server, console: Console) -> None:
    process = server.process
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=SERVER_STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            console.print("[yellow]the server did not stop in time; killing its process group[/]")
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=SERVER_STOP_TIMEOUT_SECONDS)
    log = server.log_path.read_text(errors="replace")
    problems = [line for line in log.splitlines() if '"level": "error"' in line or "Traceback" in line]
    if problems:
        console.print(f"[yellow]server log has {len(problems)} error lines; first: {problems[0][:300]}[/]")


# --- the data ----------------------------------------------------------------------------


def bench_settings(database_url: str) -> Settings:
    """Settings for preparing data in the bench process (the server reads its own from AIRTIME_*)."""
    return Settings(database_url=database_url, secret_key="bench", environment="test")


def msisdn_of(number: int) -> str:
    return f"{MSISDN_PREFIX}{number:06d}"


def prepare_database(engine: Engine, *, lines: int, database_url: str) -> list[str]:
    """Migrate, then a plan, a GBP amount rule and ``lines`` active lines; returns their numbers."""
    upgrade(engine)
    settings = bench_settings(database_url)
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
    msisdns = [msisdn_of(number) for number in range(lines)]
    # Lines through the product's own provisioning (each opens its two ledger accounts),
    # committed in chunks so a large --lines does not become one huge transaction.
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
    return msisdns


# --- the client side ---------------------------------------------------------------------


class TopupFailed(RuntimeError):
    pass


@dataclass
class Customer:
    """One client thread: its keep-alive connection, CSRF cookie and token, and what it completed."""

    number: int
    client: KeepAliveClient
    chooser: random.Random
    csrf_token: str = ""
    cookies: dict[str, str] = field(default_factory=dict)  # sent with every request, as a browser does
    count: int = 0
    latencies_seconds: list[float] = field(default_factory=list)
    public_ids: list[str] = field(default_factory=list)


def create_topup(customer: Customer, msisdns: list[str], run_id: str) -> tuple[str, str]:
    """Step 1: the order; returns its public id and payment URL."""
    customer.count += 1
    status, _, content = customer.client.post_json(
        "/api/v1/topups",
        {
            "msisdn": customer.chooser.choice(msisdns),
            "amount_minor": TOPUP_AMOUNT_MINOR,
            "provider": "sandbox",
        },
        {
            "Idempotency-Key": f"bench-{run_id}-{customer.number}-{customer.count}",
            **_cookie_header(customer),
        },
    )
    if status != 201:
        raise TopupFailed(f"create answered {status}: {_text(content)}")
    body = json.loads(content)
    if body["status"] != OrderStatus.AWAITING_PAYMENT or not body["payment_url"]:
        raise TopupFailed(f"create gave status {body['status']} and payment_url {body['payment_url']}")
    return str(body["id"]), str(body["payment_url"])


def approve(customer: Customer, public_id: str, payment_url: str) -> None:
    """Step 2: the sandbox's approve button; the order is credited before the redirect."""
    status, headers, content = customer.client.post_form(
        payment_url,
        {"decision": "approve", "csrf_token": customer.csrf_token},
        _cookie_header(customer),
    )
    if status != 303 or public_id not in headers.get("location", ""):
        raise TopupFailed(f"approve answered {status}: {_text(content)}")


def complete_topup(customer: Customer, msisdns: list[str], run_id: str) -> str:
    """Steps 1 and 2: one top-up credited; its public id."""
    public_id, payment_url = create_topup(customer, msisdns, run_id)
    approve(customer, public_id, payment_url)
    return public_id


def _cookie_header(customer: Customer) -> dict[str, str]:
    if not customer.cookies:
        return {}
    return {"Cookie": "; ".join(f"{name}={value}" for name, value in customer.cookies.items())}


def _text(content: bytes) -> str:
    return content[:300].decode(errors="replace")


def open_customer(number: int, base_url: str, msisdns: list[str], run_id: str) -> tuple[Customer, str]:
    """A client with its CSRF cookie and token from one sandbox page, and one top-up done."""
    customer = Customer(
        number=number,
        client=KeepAliveClient(base_url, timeout=REQUEST_TIMEOUT_SECONDS),
        chooser=random.Random(number),
    )
    public_id, payment_url = create_topup(customer, msisdns, run_id)
    status, headers, content = customer.client.get(payment_url)
    match = _CSRF_PATTERN.search(content.decode())
    jar = SimpleCookie()
    for value in headers.get_all("Set-Cookie"):
        jar.load(value)
    # The cookies exactly as the server set them (what a browser, and httpx, sends back).
    customer.cookies = {name: morsel.coded_value for name, morsel in jar.items()}
    if status != 200 or match is None or "airtime_csrf" not in customer.cookies:
        raise TopupFailed(f"the sandbox page gave no CSRF cookie/token ({status})")
    customer.csrf_token = match.group(1)
    approve(customer, public_id, payment_url)
    return customer, public_id


@dataclass(frozen=True)
class TopupRun:
    topups: int
    elapsed_seconds: float
    failures: int
    errors: list[str]
    latencies_seconds: list[float]
    public_ids: list[str]
    warm_up_ids: list[str]
    machine_busy_fraction: float
    server_cpu_seconds: float
    client_cpu_seconds: float
    postgres_cpu_seconds: float
    transactions: int


def run_topups(
    arguments: argparse.Namespace, server: Server, engine: Engine, msisdns: list[str], console: Console
) -> TopupRun:
    run_id = uuid.uuid4().hex[:8]
    customers: list[Customer] = []
    warm_up_ids: list[str] = []
    errors: list[str] = []
    errors_lock = threading.Lock()
    try:
        for number in range(arguments.clients):
            customer, public_id = open_customer(number, server.base_url, msisdns, run_id)
            customers.append(customer)
            warm_up_ids.append(public_id)
        # A few more top-ups per client so every worker has its connections and caches warm.
        for customer in customers:
            for _ in range(3):
                warm_up_ids.append(complete_topup(customer, msisdns, run_id))
        history = make_history(
            arguments.history,
            len(customers),
            lambda number: complete_topup(customers[number], msisdns, run_id),
            engine=engine,
            console=console,
            what="top-ups",
        )
        warm_up_ids += [public_id for made in history for public_id in made]

        def one_topup(number: int) -> int:
            customer = customers[number]
            started = time.perf_counter()
            try:
                public_id = complete_topup(customer, msisdns, run_id)
            except Exception as error:
                with errors_lock:
                    if len(errors) < ERRORS_KEPT_MAX:
                        errors.append(f"{type(error).__name__}: {error}")
                raise
            customer.latencies_seconds.append(time.perf_counter() - started)
            customer.public_ids.append(public_id)
            return 1

        # Let the statistics of the warm-up reach pg_stat_database before the first reading.
        time.sleep(1.5)
        transactions_before = _committed_transactions(engine)
        worker_pids = server.worker_pids()
        machine_before = machine_cpu_ticks()
        server_before = _cpu_by_process(worker_pids)
        client_before = time.process_time()
        postgres_before = _cpu_by_process(processes(command="postgres"))
        console.print(
            f"top-ups: {arguments.clients} clients, {len(worker_pids)} server workers, "
            f"{arguments.seconds:g} s …"
        )
        throughput = run_clients(arguments.clients, arguments.seconds, one_topup)
        machine_after = machine_cpu_ticks()
        server_cpu = _cpu_used_since(server_before, worker_pids)
        client_cpu = time.process_time() - client_before
        postgres_cpu = _cpu_used_since(postgres_before, processes(command="postgres"))
        time.sleep(1.5)
        transactions = _committed_transactions(engine) - transactions_before
    finally:
        for customer in customers:
            customer.client.close()
    return TopupRun(
        topups=throughput.operations,
        elapsed_seconds=throughput.elapsed_seconds,
        failures=throughput.failures,
        errors=errors,
        latencies_seconds=[value for customer in customers for value in customer.latencies_seconds],
        public_ids=[value for customer in customers for value in customer.public_ids],
        warm_up_ids=warm_up_ids,
        machine_busy_fraction=(machine_after[0] - machine_before[0]) / (machine_after[1] - machine_before[1])
        if machine_after[1] > machine_before[1]
        else float("nan"),
        server_cpu_seconds=server_cpu,
        client_cpu_seconds=client_cpu,
        postgres_cpu_seconds=postgres_cpu,
        transactions=transactions,
    )


def _cpu_by_process(pids: list[int]) -> dict[int, float]:
    return {pid: process_cpu_seconds(pid) for pid in pids}


def _cpu_used_since(before: dict[int, float], pids_now: list[int]) -> float:
    """CPU seconds the processes used since ``before``; one started since counts in full, one
    that has exited since (a PostgreSQL backend of someone else's session) is left out."""
    now = _cpu_by_process(pids_now)
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in now.items() if seconds > 0)


def _committed_transactions(engine: Engine) -> int:
    """Transactions committed in this database so far (PostgreSQL's own statistics)."""
    with engine.connect() as connection:
        return int(
            connection.execute(
                text("select xact_commit from pg_stat_database where datname = current_database()")
            ).scalar_one()
        )


def verify(
    run: TopupRun, server: Server, engine: Engine, *, status_sample: int, console: Console
) -> list[str]:
    """Everything that must hold for the figures to count; returns the problems found."""
    problems: list[str] = []
    factory = make_session_factory(engine)
    with unit_of_work(factory) as session:
        by_status = dict(
            session.execute(select(TopupOrder.status, func.count()).group_by(TopupOrder.status)).all()
        )
        credited = set(
            session.execute(
                select(TopupOrder.public_id).where(TopupOrder.status == OrderStatus.CREDITED)
            ).scalars()
        )
        problems += check_invariants(session)
    completed = set(run.public_ids)
    if len(completed) != len(run.public_ids):
        problems.append("a public id was reported twice")
    expected = completed | set(run.warm_up_ids)
    if credited != expected:
        problems.append(
            f"{len(credited):,} credited orders in the database, but the clients completed "
            f"{len(expected):,} (missing {len(expected - credited):,}, "
            f"unexpected {len(credited - expected):,})"
        )
    others = {status: count for status, count in by_status.items() if status != OrderStatus.CREDITED}
    if others:
        # Failed requests may leave an order behind; that is why failures void the run below.
        problems.append(f"orders in other states: {others}")
    if run.failures:
        problems.append(f"{run.failures} top-ups failed: {run.errors}")
    sample = random.Random(0).sample(run.public_ids, min(status_sample, len(run.public_ids)))
    with httpx.Client(base_url=server.base_url, timeout=REQUEST_TIMEOUT_SECONDS) as client:
        for public_id in sample:
            response = client.get(f"/api/v1/topups/{public_id}")
            if response.status_code != 200 or response.json()["status"] != OrderStatus.CREDITED:
                problems.append(
                    f"GET /api/v1/topups/{public_id}: {response.status_code} {response.text[:200]}"
                )
                break
    console.print(
        f"checked: {len(credited):,} credited orders = {len(completed):,} timed + "
        f"{len(run.warm_up_ids)} warm-up top-ups; {len(sample)} read back over HTTP as credited; "
        f"ledger invariants {'hold' if not problems else 'see below'}"
    )
    return problems


# --- explain -----------------------------------------------------------------------------


def explain(arguments: argparse.Namespace, url: str, console: Console) -> None:
    """Print what each request of a top-up sends to PostgreSQL (one worker, one client)."""
    engine = make_engine(url, pool_size=2)
    try:
        msisdns = prepare_database(engine, lines=min(arguments.lines, 100), database_url=url)
    finally:
        engine.dispose()
    with running_server(
        database_url=url,
        workers=1,
        port=arguments.port or free_port(),
        pool_size=4,
        trace_sql=True,
        console=console,
    ) as server:
        customer, _ = open_customer(0, server.base_url, msisdns, uuid.uuid4().hex[:8])

        def take() -> list[str]:
            return list(json.loads(customer.client.get("/_bench/sql")[2]))

        totals: dict[str, Counter[str]] = {"create": Counter(), "approve": Counter()}
        listings: dict[str, list[str]] = {}
        rounds = 5
        for _ in range(rounds):
            take()
            public_id, payment_url = create_topup(customer, msisdns, "explain")
            listings["create"] = take()
            approve(customer, public_id, payment_url)
            listings["approve"] = take()
            for request, entries in listings.items():
                totals[request].update(_kind(entry) for entry in entries)
        customer.client.close()
    for request, entries in listings.items():
        console.rule(f"{request}: what one request sends")
        for entry in entries:
            console.print(f"  {entry[:160]}", highlight=False, markup=False)
        counts = {kind: count / rounds for kind, count in sorted(totals[request].items())}
        console.print(f"  per request (mean of {rounds}): {counts}", highlight=False)


def handlers(arguments: argparse.Namespace, url: str, console: Console) -> None:
    """For --handlers: the fast path's start and approval handlers called in this process,
    without HTTP, from --clients tasks on one event loop; prints the CPU per top-up of this
    process (the handlers, asyncpg and the loop) and of PostgreSQL. On a shared 2-core machine
    this moves far less from run to run than the HTTP figures, so it suits comparing two
    versions of the fast path's code; it is not a throughput figure."""
    engine = make_engine(url, pool_size=2)
    try:
        msisdns = prepare_database(engine, lines=arguments.lines, database_url=url)
        with unit_of_work(make_session_factory(engine)) as session:
            operator_account(
                session, kind=AccountKind.PAYMENT_CLEARING, currency=CURRENCY, qualifier="sandbox"
            )
        settings = Settings(database_url=url, secret_key="bench", environment="test", fast_path=True)
        fast_path = FastPath(settings, providers_from_settings(settings))
        token = secrets.token_urlsafe(32)
        signed = Response()
        set_signed_cookie(signed, CSRF_COOKIE, token, settings, max_age=3600)
        cookie = signed.headers["set-cookie"].split(";", 1)[0].encode()
        chooser = random.Random(0)

        async def one_topup() -> None:
            key = f"handlers-{uuid.uuid4().hex}".encode()
            body = json.dumps(
                {"msisdn": chooser.choice(msisdns), "amount_minor": TOPUP_AMOUNT_MINOR}
            ).encode()
            headers = [(b"content-type", b"application/json"), (b"idempotency-key", key), (b"cookie", cookie)]
            start: dict[str, Any] = {"type": "http", "method": "POST", "path": "/api/v1/topups"}
            start.update(headers=headers, client=("127.0.0.1", 1))
            status, _, content = await fast_path.create_topup(start, body)
            if status != 201:
                raise TopupFailed(f"create answered {status}: {_text(content)}")
            path = "/" + str(json.loads(content)["payment_url"]).split("/", 3)[3]
            form = [(b"content-type", b"application/x-www-form-urlencoded"), (b"cookie", cookie)]
            approval: dict[str, Any] = {"type": "http", "method": "POST", "path": path, "query_string": b""}
            approval.update(headers=form)
            status, _, content = await fast_path.approve_sandbox(
                approval, f"decision=approve&csrf_token={token}".encode()
            )
            if status != 303:
                raise TopupFailed(f"approve answered {status}: {_text(content)}")

        async def clients(count: int) -> None:
            async def client() -> None:
                for _ in range(count):
                    await one_topup()

            await asyncio.gather(*(client() for _ in range(arguments.clients)))

        async def run() -> tuple[float, float, float]:
            await clients(max(1, arguments.history // arguments.clients))  # warm up, plan, fill caches
            with engine.connect() as connection:
                connection.execute(text("ANALYZE"))
            await fast_path.close()  # new connections plan on the new statistics
            await clients(10)
            postgres_before = _cpu_by_process(processes(command="postgres"))
            cpu, started = time.process_time(), time.perf_counter()
            await clients(arguments.topups_per_client)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            postgres = _cpu_used_since(postgres_before, processes(command="postgres"))
            await fast_path.close()
            return elapsed, cpu, postgres

        elapsed, cpu, postgres = asyncio.run(run())
    finally:
        engine.dispose()
    topups = arguments.topups_per_client * arguments.clients
    console.print(
        f"fast path handlers in process, {arguments.clients} tasks, {topups:,} top-ups in {elapsed:.1f} s: "
        f"CPU ms per top-up: this process {cpu / topups * 1000:.3f}, "
        f"PostgreSQL {postgres / topups * 1000:.3f}",
        highlight=False,
    )


def _kind(entry: str) -> str:
    if entry.startswith("("):
        return "checkouts (ping)"
    statement = entry.removeprefix("asyncpg: ").rstrip(";")
    if statement in ("BEGIN", "COMMIT", "ROLLBACK"):
        return statement.lower()
    return "statements"


def print_profile(path: Path, *, topups: int, console: Console) -> None:
    """The functions with the most own time and the most cumulative time, in ms per top-up."""
    stats = pstats.Stats(str(path))
    total_seconds = stats.total_tt  # type: ignore[attr-defined]
    rows = stats.stats  # type: ignore[attr-defined]
    console.print(
        f"cProfile: {total_seconds * 1000 / topups:.2f} ms of profiled CPU per top-up over "
        f"{topups:,} top-ups (inflated by profiling; compare shares, not absolute values)"
    )
    for title, column in (("own time", 2), ("cumulative time", 3)):
        console.rule(f"top {PROFILE_ROWS} by {title}, ms per top-up")
        ranked = sorted(rows.items(), key=lambda item: item[1][column], reverse=True)[:PROFILE_ROWS]
        for (filename, line, function), (_, calls, own, cumulative, _) in ranked:
            where = "/".join(Path(filename).parts[-2:]) if filename != "~" else ""
            console.print(
                f"{own * 1000 / topups:8.3f} {cumulative * 1000 / topups:8.3f} "
                f"{calls / topups:7.1f}  {function} ({where}:{line})",
                highlight=False,
                markup=False,
            )


# --- main --------------------------------------------------------------------------------


def measure(arguments: argparse.Namespace, url: str, console: Console) -> tuple[TopupRun, list[str]]:
    engine = make_engine(url, pool_size=2)
    try:
        console.print(f"preparing {arguments.lines:,} lines …")
        msisdns = prepare_database(engine, lines=arguments.lines, database_url=url)
        with running_server(
            database_url=url,
            workers=arguments.workers,
            port=arguments.port or free_port(),
            # Enough connections for every client; the app allows as many again as overflow.
            pool_size=min(arguments.clients, POOL_SIZE_MAX) + 2,
            cprofile_output=arguments.cprofile,
            console=console,
        ) as server:
            run = run_topups(arguments, server, engine, msisdns, console)
            if arguments.cprofile is not None:
                response = httpx.post(f"{server.base_url}/_bench/profile", timeout=60.0)
                response.raise_for_status()
                print_profile(arguments.cprofile, topups=run.topups + len(run.warm_up_ids), console=console)
            problems = verify(run, server, engine, status_sample=arguments.status_sample, console=console)
        return run, problems
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(parser, seconds=15, clients=8)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (default 2)")
    parser.add_argument("--lines", type=int, default=2_000, help="lines topped up at random (default 2,000)")
    parser.add_argument(
        "--status-sample",
        type=int,
        default=200,
        help="completed top-ups read back with GET /api/v1/topups/{id} after the run (default 200)",
    )
    parser.add_argument(
        "--history",
        type=int,
        default=3_000,
        help="top-ups made before the clock starts, then ANALYZE, as a database in use has "
        "history and statistics (default 3,000; 0 for none)",
    )
    parser.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    parser.add_argument("--pgbench-scale", type=int, default=10, help="pgbench -i scale (default 10)")
    parser.add_argument("--explain", action="store_true", help="print the SQL of each request, no timing")
    parser.add_argument(
        "--handlers",
        action="store_true",
        help="call the fast path's handlers in this process, without HTTP, and print their CPU per top-up",
    )
    parser.add_argument(
        "--topups-per-client",
        type=int,
        default=1_000,
        help="top-ups per task with --handlers (default 1,000)",
    )
    parser.add_argument(
        "--cprofile", type=Path, default=None, help="profile one worker into FILE (implies --workers 1)"
    )
    arguments = parser.parse_args(argv)
    check_common_arguments(parser, arguments)
    if not 1 <= arguments.workers <= WORKERS_MAX:
        parser.error(f"--workers must be in [1, {WORKERS_MAX}]")
    if not 1 <= arguments.lines <= LINES_MAX:
        parser.error(f"--lines must be in [1, {LINES_MAX:,}]")
    if not 0 <= arguments.history <= HISTORY_MAX:
        parser.error(f"--history must be in [0, {HISTORY_MAX:,}]")
    if not 0 <= arguments.status_sample <= STATUS_SAMPLE_MAX:
        parser.error(f"--status-sample must be in [0, {STATUS_SAMPLE_MAX:,}]")

    if arguments.cprofile is not None:
        arguments.workers = 1
    console = make_console()
    server_url = sqlalchemy_url(arguments.database_url)
    if arguments.explain or arguments.handlers:
        with throwaway_database(server_url, "airtime_bench_topup") as url:
            (explain if arguments.explain else handlers)(arguments, url, console)
        return

    def topups() -> tuple[TopupRun, list[str]]:
        with throwaway_database(server_url, "airtime_bench_topup") as url:
            return measure(arguments, url, console)

    pgbench, (run, problems) = pgbench_around(
        topups,
        server_url=server_url,
        clients=arguments.clients,
        seconds=arguments.seconds,
        scale=arguments.pgbench_scale,
        console=console,
    )

    per_second = run.topups / run.elapsed_seconds if run.elapsed_seconds else 0.0
    milliseconds = [value * 1000 for value in run.latencies_seconds]
    per_topup = 1000 / run.topups if run.topups else float("nan")
    print_ratio_table(
        "End-to-end top-ups through HTTP on PostgreSQL",
        Figure(
            "pgbench tpcb-like",
            pgbench.transactions_per_second,
            unit="tps",
            note=pgbench.note(arguments.clients, arguments.pgbench_scale),
        ),
        [
            Figure(
                "top-ups (create + approve + credit)",
                per_second,
                note=f"{arguments.clients} clients, {arguments.workers} uvicorn workers, "
                f"{run.topups:,} credited in {run.elapsed_seconds:.1f} s; "
                f"p50 {percentile(milliseconds, 0.5):.1f} ms, p99 {percentile(milliseconds, 0.99):.1f} ms",
            ),
            Figure("HTTP requests", per_second * 2, unit="req/s", note="2 per top-up"),
        ],
        console,
    )
    console.print(
        f"per top-up: {run.transactions / run.topups if run.topups else float('nan'):.1f} commits in "
        f"pg_stat_database (a statement outside a transaction is one); CPU ms: uvicorn workers "
        f"{run.server_cpu_seconds * per_topup:.2f}, load generator {run.client_cpu_seconds * per_topup:.2f}, "
        f"PostgreSQL {run.postgres_cpu_seconds * per_topup:.2f} (all its processes, other databases "
        f"too); the machine's {os.cpu_count()} cores were {run.machine_busy_fraction:.0%} busy",
        highlight=False,
    )
    goal = 0.25
    ratio = per_second / pgbench.transactions_per_second if pgbench.transactions_per_second else 0.0
    console.print(f"goal ≥ {goal:.2f}× pgbench: {'met' if ratio >= goal else 'NOT met'} ({ratio:.2f}×)")
    if problems:
        raise SystemExit("The run is void:\n" + "\n".join(problems))


if __name__ == "__main__":
    main()
