"""Agent top-ups per second through the signed agent API on PostgreSQL, next to pgbench.

    uv run python bench/agent.py [--seconds 15] [--clients 8] [--agents 8] [--workers 2] [--lines 2000]
                                 [--database-url postgresql://...]

One sale is ``POST /api/v1/agent/topups`` with a JSON body, a fresh Idempotency-Key and the
HMAC headers (timestamp, nonce, signature computed per request by the client): the server
checks the signature in a short transaction of its own (seen signature, rate counter), then
claims the daily usage, makes the order and credits it through credit() with the agent's
float, the commission expense and the parent's share in one ledger transfer.

Each client thread signs as one of --agents agents (round robin), each a sub-agent of one
parent, so every sale also credits the parent's float. One agent's sales queue on its float
and daily-usage rows by design, so --agents 1 shows the most one agent can sell.

Phases, each on its own throwaway database: pgbench TPC-B-like with the same clients, then the
sales. Afterwards the database must hold exactly one credited order and one sale per sale
completed, and the ledger must pass ``check_invariants``; otherwise the run is void.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from sqlalchemy import func, select

from airtime.agents import service as agents
from airtime.agents import signing
from airtime.agents.models import AgentSale
from airtime.config import Settings
from airtime.db.session import make_engine, make_session_factory, unit_of_work
from airtime.ledger.service import check_invariants
from airtime.topups.models import OrderStatus, TopupOrder
from bench.common import (
    Figure,
    add_common_arguments,
    check_common_arguments,
    make_console,
    percentile,
    print_ratio_table,
    run_clients,
    run_pgbench,
    throwaway_database,
)
from bench.topup import REQUEST_TIMEOUT_SECONDS, free_port, prepare_database, running_server

AMOUNT_MINOR = 1000
PATH = "/api/v1/agent/topups"


@dataclass
class Seller:
    number: int
    key_id: str
    secret: str
    client: httpx.Client
    count: int = 0
    latencies_seconds: list[float] = field(default_factory=list)


def make_agents(database_url: str, secret_key: str, count: int, *, parent: bool) -> list[tuple[str, str]]:
    """A parent and ``count`` sub-agents with a float for any run; their key ids and secrets."""
    settings = Settings(database_url=database_url, secret_key=secret_key, environment="test")
    engine = make_engine(database_url)
    try:
        with unit_of_work(make_session_factory(engine)) as session:
            agents.create_agent(
                session, code="BENCH-PARENT", name="Parent", currency="GBP", commission_basis_points=500
            )
            credentials = []
            for number in range(count):
                agent = agents.create_agent(
                    session,
                    code=f"BENCH-{number}",
                    name=f"Seller {number}",
                    currency="GBP",
                    parent_code="BENCH-PARENT" if parent else None,
                    commission_basis_points=300,
                    rate_limit_per_minute=agents.RATE_LIMIT_PER_MINUTE_MAX,
                )
                agents.fund_agent(session, agent=agent, amount_minor=10**12, reference="bench")
                credentials.append(agents.issue_credentials(session, agent=agent, settings=settings))
    finally:
        engine.dispose()
    return credentials


def sell(seller: Seller, msisdns: list[str], run_id: str) -> None:
    seller.count += 1
    body = json.dumps(
        {
            "msisdn": msisdns[(seller.number * 7919 + seller.count) % len(msisdns)],
            "amount_minor": AMOUNT_MINOR,
        }
    ).encode()
    timestamp, nonce = str(int(time.time())), secrets.token_hex(8)
    signature = signing.sign(
        seller.secret, method="POST", path_with_query=PATH, timestamp=timestamp, nonce=nonce, body=body
    )
    started = time.perf_counter()
    response = seller.client.post(
        PATH,
        content=body,
        headers={
            "Content-Type": "application/json",
            "Idempotency-Key": f"{run_id}-{seller.number}-{seller.count}",
            "X-Agent-Key": seller.key_id,
            "X-Agent-Timestamp": timestamp,
            "X-Agent-Nonce": nonce,
            "X-Agent-Signature": signature,
        },
    )
    if response.status_code != 201:
        raise RuntimeError(f"sale answered {response.status_code}: {response.text[:300]}")
    seller.latencies_seconds.append(time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_common_arguments(parser, seconds=15, clients=8)
    parser.add_argument(
        "--agents", type=int, default=0, help="agents the clients sign as (default: one each)"
    )
    parser.add_argument(
        "--no-parent", action="store_true", help="agents without a parent (no shared parent float row)"
    )
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes (default 2)")
    parser.add_argument("--lines", type=int, default=2000, help="lines topped up at random (default 2000)")
    arguments = parser.parse_args()
    check_common_arguments(parser, arguments)
    agent_count = arguments.agents or arguments.clients
    if (
        not 1 <= agent_count <= arguments.clients
        or not 1 <= arguments.workers <= 16
        or not 1 <= arguments.lines <= 100_000
    ):
        parser.error("--agents in [1, clients], --workers in [1, 16], --lines in [1, 100000]")
    console = make_console()
    with throwaway_database(arguments.database_url, "airtime_bench_pgbench") as url:
        console.print(f"pgbench tpcb-like, {arguments.clients} clients, {arguments.seconds:g} s ...")
        baseline = run_pgbench(url, clients=arguments.clients, seconds=arguments.seconds)
    with throwaway_database(arguments.database_url, "airtime_bench_agent") as url:
        engine = make_engine(url)
        msisdns = prepare_database(engine, lines=arguments.lines, database_url=url)
        secret_key = secrets.token_urlsafe(32)
        credentials = make_agents(url, secret_key, agent_count, parent=not arguments.no_parent)
        pool_size = max(4, arguments.clients // arguments.workers + 2)
        run_id = uuid.uuid4().hex[:8]
        with running_server(
            database_url=url,
            workers=arguments.workers,
            port=free_port(),
            pool_size=pool_size,
            secret_key=secret_key,
            console=console,
        ) as server:
            sellers = [
                Seller(
                    number=number,
                    key_id=credentials[number % agent_count][0],
                    secret=credentials[number % agent_count][1],
                    client=httpx.Client(base_url=server.base_url, timeout=REQUEST_TIMEOUT_SECONDS),
                )
                for number in range(arguments.clients)
            ]
            lock = threading.Lock()
            errors: list[str] = []

            def warm_up(number: int) -> None:
                sell(sellers[number], msisdns, run_id)
                sellers[number].latencies_seconds.clear()

            def one_sale(number: int) -> int:
                try:
                    sell(sellers[number], msisdns, run_id)
                except Exception as error:
                    with lock:
                        errors.append(str(error))
                    raise
                return 1

            console.print(
                f"agent sales, {arguments.clients} clients as {agent_count} agent(s), "
                f"{arguments.seconds:g} s ..."
            )
            result = run_clients(arguments.clients, arguments.seconds, one_sale, warm_up=warm_up)
            for seller in sellers:
                seller.client.close()
        latencies = [value for seller in sellers for value in seller.latencies_seconds]
        completed = len(latencies) + arguments.clients  # the warm-up sales count in the database
        with unit_of_work(make_session_factory(engine)) as session:
            sales = session.scalar(select(func.count()).select_from(AgentSale))
            credited = session.scalar(
                select(func.count()).select_from(TopupOrder).where(TopupOrder.status == OrderStatus.CREDITED)
            )
            problems = check_invariants(session)
        engine.dispose()
    if errors:
        console.print(f"[yellow]{len(errors)} failed sales; first: {errors[0]}[/]")
    if sales != completed or credited != completed or problems:
        raise SystemExit(
            f"void run: {completed} sales completed, {sales} recorded, {credited} credited, {problems[:3]}"
        )
    print_ratio_table(
        f"Agent top-ups through the signed API ({arguments.workers} workers, {arguments.clients} clients, "
        f"{agent_count} agents, {'no parent' if arguments.no_parent else 'one shared parent'})",
        Figure("pgbench tpcb-like", baseline.transactions_per_second, " tps"),
        [
            Figure(
                "agent top-ups",
                result.per_second,
                note=f"p50 {percentile(latencies, 0.5) * 1000:.1f} ms, "
                f"p99 {percentile(latencies, 0.99) * 1000:.1f} ms, {result.failures} failed",
            )
        ],
        console,
    )


if __name__ == "__main__":
    main()
