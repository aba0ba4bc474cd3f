"""Report pages over HTTP on a PostgreSQL database with 1,000,000 top-up orders and 100,000
lines, next to pgbench on the same server. Goal: every report page under 1 s.

    uv run python bench/reports.py [--orders 1000000] [--lines 100000] [--repeat 5]
                                   [--database-url postgresql://...] [--explain]

Phases, each on its own throwaway database (dropped at the end):
1. pgbench: ``pgbench -i -s 10`` then the TPC-B-like script with 2 clients for --seconds;
2. reports: migrate, then seed with set-based ``INSERT ... SELECT generate_series`` (test
   data, not real flows): --lines lines (with their two ledger accounts) in every lifecycle
   state, --orders top-up orders spread over the last 365 days in every channel, provider and
   status, 200,000 vouchers over 50 outlets, a promotion expense transfer for every order with
   a bonus and breakage transfers for terminated lines (each transfer balanced), 200 agents
   (150 of them sub-agents) and an agent sale for every credited order of the agent channel;
   then ``VACUUM ANALYZE``. Each report page is requested through the whole app
   (``TestClient``, an admin's staff session) --repeat times after one warm-up request, for
   the default range (the last 30 days) and for a whole year; the figures are the median
   and slowest wall-clock time per page, CSV download included.

``--explain`` prints ``EXPLAIN (ANALYZE, BUFFERS)`` of each report query for the default range.
"""

# ruff: noqa: E501  (the seed statements are SQL, kept one clause a line)
from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fastapi.testclient import TestClient
from itsdangerous import Signer
from rich.table import Table
from sqlalchemy import Engine, event, text

from airtime.accounts import service as accounts
from airtime.app import create_app
from airtime.clock import today
from airtime.config import Settings
from airtime.db.migrate import upgrade
from airtime.db.session import make_engine, make_session_factory, unit_of_work
from airtime.reports.service import REPORTS
from airtime.web.context import STAFF_COOKIE
from bench.common import DEFAULT_ADMIN_URL, make_console, run_pgbench, sqlalchemy_url, throwaway_database

ORDERS_DEFAULT = 1_000_000
LINES_DEFAULT = 100_000
VOUCHERS = 200_000
OUTLETS = 50
AGENTS = 200
GOAL_SECONDS = 1.0
FIRST_SECTION = {
    "topups": "by-channel",
    "credit-time": "credit-time",
    "vouchers": "by-outlet",
    "lines": "by-state",
    "breakage": "breakage",
    "promotions": "by-promotion",
    "agents": "sales",
}

SEED_STATEMENTS = [
    # A plan, the operator accounts, a promotion and the outlets with their floats.
    """INSERT INTO plans (code, name, name_zh, currency, validity_rule, validity_tiers, validity_days_max,
        activity_days, grace_days, suspension_days, quarantine_days, forfeit_balance_on_termination,
        reactivation_fee_minor, created_at)
       VALUES ('BENCH', 'Bench', '', 'GBP', 'topup_extends', '[[500, 30]]', 365, 180, 30, 60, 90, true, 0, now())""",
    """INSERT INTO ledger_accounts (code, kind, currency, name, balance_tracked, floor_minor, balance_minor, created_at)
       VALUES ('operator:payment_clearing:bench:GBP', 'payment_clearing', 'GBP', '', false, NULL, 0, now()),
              ('operator:promotion_expense:GBP', 'promotion_expense', 'GBP', '', false, NULL, 0, now()),
              ('operator:breakage:GBP', 'breakage', 'GBP', '', false, NULL, 0, now())""",
    """INSERT INTO promotions (code, name, name_zh, kind, value, currency, amount_min_minor, bonus_max_minor,
        starts_at, ends_at, first_topup_only, channels, active)
       SELECT 'PROMO-' || g, 'Promotion ' || g, '', 'fixed', 100, 'GBP', 0, NULL,
              now() - interval '400 days', now() + interval '30 days', false, '[]', true
       FROM generate_series(1, 5) AS g""",
    """INSERT INTO ledger_accounts (code, kind, currency, name, balance_tracked, floor_minor, balance_minor, created_at)
       SELECT 'bench:outlet:' || g, 'agent_float', 'GBP', '', true, 0, 0, now() FROM generate_series(1, :outlets) AS g""",
    """INSERT INTO outlets (code, name, currency, float_account_id, active, created_at)
       SELECT 'SHOP-' || g, 'Shop ' || g, 'GBP', a.id, true, now()
       FROM generate_series(1, :outlets) AS g JOIN ledger_accounts a ON a.code = 'bench:outlet:' || g""",
    # Lines: two accounts each, then the line in a state by its number.
    """INSERT INTO ledger_accounts (code, kind, currency, name, balance_tracked, floor_minor, balance_minor, created_at)
       SELECT 'bench:line:' || g || ':' || part, 'customer_' || part, 'GBP', '', true, 0, 0, now()
       FROM generate_series(1, :lines) AS g CROSS JOIN (VALUES ('main'), ('bonus')) AS parts(part)""",
    """INSERT INTO lines (msisdn, plan_id, state, validity_date, state_changed_at, main_account_id,
        bonus_account_id, nickname, created_at)
       SELECT '+447' || lpad(g::text, 9, '0'), (SELECT id FROM plans WHERE code = 'BENCH'),
              (ARRAY['active','active','active','active','active','active','active','grace','suspended',
                     'terminated'])[1 + g % 10],
              current_date + (g % 120 - 20), now() - (g % 90) * interval '1 day', main.id, bonus.id, '', now()
       FROM generate_series(1, :lines) AS g
       JOIN ledger_accounts main ON main.code = 'bench:line:' || g || ':main'
       JOIN ledger_accounts bonus ON bonus.code = 'bench:line:' || g || ':bonus'""",
    # Orders: spread evenly over the last 365 days, newest last.
    """INSERT INTO topup_orders (public_id, idempotency_scope, idempotency_key, request_hash, channel, line_id,
        msisdn, customer_id, currency, amount_minor, bonus_minor, promotion_id, payment_provider, payment_method,
        status, failure_code, receipt_email, language, refunded_minor, refund_shortfall_minor,
        created_at, paid_at, credited_at, failed_at, cancelled_at)
       SELECT md5(g::text), 'bench', g::text, md5(g::text) || md5(g::text), c.channel,
              1 + g % :lines, '+447' || lpad((1 + g % :lines)::text, 9, '0'), NULL, 'GBP',
              (ARRAY[500, 1000, 2000, 5000])[1 + g % 4], CASE WHEN g % 10 = 0 THEN 100 ELSE 0 END,
              CASE WHEN g % 10 = 0 THEN (SELECT min(id) FROM promotions) + g % 5 END,
              c.provider, '', s.status, '', '', 'en', 0, 0,
              t.created_at,
              CASE WHEN s.status IN ('credited', 'refunded') THEN t.created_at + interval '20 seconds' END,
              CASE WHEN s.status IN ('credited', 'refunded')
                   THEN t.created_at + interval '20 seconds' + (g % 97) * interval '150 milliseconds' END,
              CASE WHEN s.status = 'failed' THEN t.created_at + interval '1 minute' END,
              CASE WHEN s.status = 'cancelled' THEN t.created_at + interval '30 minutes' END
       FROM generate_series(1, :orders) AS g
       CROSS JOIN LATERAL (SELECT now() - interval '365 days' + (g::float8 / :orders) * interval '365 days'
                           AS created_at) AS t
       CROSS JOIN LATERAL (SELECT (ARRAY['web','quick','api','voucher','auto','agent','ussd'])[1 + g % 7] AS channel,
                                  (ARRAY['sandbox','stripe','paypal','voucher','stripe','agent','sandbox'])[1 + g % 7]
                                  AS provider) AS c
       CROSS JOIN LATERAL (SELECT CASE WHEN g % 100 < 85 THEN 'credited' WHEN g % 100 < 92 THEN 'failed'
                                       WHEN g % 100 < 97 THEN 'cancelled' WHEN g % 100 < 99 THEN 'refunded'
                                       ELSE 'awaiting_payment' END AS status) AS s""",
    # The ledger side of bonuses and of terminated lines' breakage, each transfer balanced.
    """INSERT INTO ledger_transfers (id, kind, currency, content_hash, description, details, created_at)
       SELECT 'topup:' || o.id || ':credit', 'topup', 'GBP', '', '', '{}', o.credited_at
       FROM topup_orders o WHERE o.bonus_minor > 0 AND o.credited_at IS NOT NULL""",
    """INSERT INTO ledger_entries (transfer_id, account_id, amount_minor, created_at)
       SELECT 'topup:' || o.id || ':credit', leg.account_id, leg.amount_minor, o.credited_at
       FROM topup_orders o JOIN lines l ON l.id = o.line_id
       CROSS JOIN LATERAL (VALUES
           ((SELECT id FROM ledger_accounts WHERE code = 'operator:promotion_expense:GBP'), -o.bonus_minor),
           (l.bonus_account_id, o.bonus_minor)) AS leg(account_id, amount_minor)
       WHERE o.bonus_minor > 0 AND o.credited_at IS NOT NULL""",
    """INSERT INTO ledger_transfers (id, kind, currency, content_hash, description, details, created_at)
       SELECT 'line:' || l.id || ':termination', 'breakage', 'GBP', '', '', '{}', l.state_changed_at
       FROM lines l WHERE l.state = 'terminated'""",
    """INSERT INTO ledger_entries (transfer_id, account_id, amount_minor, created_at)
       SELECT 'line:' || l.id || ':termination', leg.account_id, leg.amount_minor, l.state_changed_at
       FROM lines l CROSS JOIN LATERAL (VALUES
           (l.main_account_id, -250),
           ((SELECT id FROM ledger_accounts WHERE code = 'operator:breakage:GBP'), 250)) AS leg(account_id, amount_minor)
       WHERE l.state = 'terminated'""",
    # Vouchers over the outlets (a tenth held by the operator), in every state.
    """INSERT INTO voucher_batches (currency, face_value_minor, quantity, expires_on, outlet_id, distributor, kind,
        serial_first, serial_last, created_by, created_at)
       VALUES ('GBP', 1000, :vouchers, current_date + 365, NULL, '', 'printed', 1, :vouchers, 'bench', now())""",
    """INSERT INTO vouchers (batch_id, serial, pin_hash, state, currency, face_value_minor, expires_on, outlet_id,
        state_changed_at, state_before_block)
       SELECT (SELECT min(id) FROM voucher_batches), g, md5(g::text) || md5((-g)::text),
              (ARRAY['generated','active','active','redeemed','redeemed','redeemed','expired','blocked'])[1 + g % 8],
              'GBP', 1000, current_date + 365,
              CASE WHEN g % 10 = 0 THEN NULL ELSE (SELECT min(id) FROM outlets) + g % :outlets END, now(), ''
       FROM generate_series(1, :vouchers) AS g""",
    # Agents with their floats: the first 50 sell on their own and are the parents of the rest.
    """INSERT INTO ledger_accounts (code, kind, currency, name, balance_tracked, floor_minor, balance_minor, created_at)
       SELECT 'agent:AGENT-' || g || ':float', 'agent_float', 'GBP', '', true, 0, 0, now()
       FROM generate_series(1, :agents) AS g""",
    """INSERT INTO agents (code, name, currency, parent_id, float_account_id, commission_basis_points,
        commission_amounts, rate_limit_per_minute, daily_limit_minor, active, created_at)
       SELECT 'AGENT-' || g, 'Agent ' || g, 'GBP', NULL, a.id, CASE WHEN g <= 50 THEN 400 ELSE 300 END, '{}',
              60, NULL, true, now()
       FROM generate_series(1, :agents) AS g JOIN ledger_accounts a ON a.code = 'agent:AGENT-' || g || ':float'""",
    """UPDATE agents SET parent_id = (SELECT id FROM agents p WHERE p.code = 'AGENT-' || (1 + agents.id % 50))
       WHERE commission_basis_points = 300""",
    # A sale for every credited agent-channel order, by an agent picked unevenly (a few sell most).
    """INSERT INTO agent_sales (agent_id, order_id, transfer_id, idempotency_key, request_hash, msisdn, currency,
        amount_minor, commission_minor, commission_total_minor, float_debit_minor, staff_user_id, created_at)
       SELECT ag.id, o.id, 'topup:' || o.id || ':credit', o.idempotency_key, o.request_hash, o.msisdn, 'GBP',
              o.amount_minor, o.amount_minor * ag.commission_basis_points / 10000,
              o.amount_minor * 400 / 10000, o.amount_minor - o.amount_minor * ag.commission_basis_points / 10000,
              NULL, o.credited_at
       FROM topup_orders o
       JOIN agents ag ON ag.code = 'AGENT-' || (1 + (o.id * o.id) % :agents * (o.id % :agents) / :agents)
       WHERE o.channel = 'agent' AND o.credited_at IS NOT NULL""",
]


def seed(engine: Engine, *, orders: int, lines: int, console) -> None:  # type: ignore[no-untyped-def]
    upgrade(engine)
    parameters = {
        "orders": orders,
        "lines": lines,
        "outlets": OUTLETS,
        "vouchers": VOUCHERS,
        "agents": AGENTS,
    }
    with engine.begin() as connection:
        for statement in SEED_STATEMENTS:
            started = time.perf_counter()
            # Plain integers put into the text: the statements hold literals like 'line:' that a
            # bind-parameter parser would misread.
            for name, value in parameters.items():
                statement = statement.replace(f":{name}", str(int(value)))
            result = connection.exec_driver_sql(statement.replace("%", "%%"))
            console.print(
                f"  seeded {result.rowcount:>9,} rows in {time.perf_counter() - started:5.1f} s: "
                f"{' '.join(statement.split()[:3])}"
            )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        started = time.perf_counter()
        connection.execute(text("VACUUM ANALYZE"))
        console.print(f"  VACUUM ANALYZE in {time.perf_counter() - started:.1f} s")


def admin_cookie(engine: Engine, settings: Settings) -> str:
    """A signed staff cookie for a fresh admin (the log-in and its second factor are not timed)."""
    with unit_of_work(make_session_factory(engine)) as session:
        staff = accounts.create_staff(
            session, email="bench-admin@example.com", password="bench password", role="admin"
        )
        token = accounts.open_session(
            session, kind="staff", lifetime=timedelta(hours=1), staff_user_id=staff.id
        )
    return Signer(settings.effective_secret_key(), salt=f"airtime.{STAFF_COOKIE}").sign(token).decode()


def time_pages(client: TestClient, *, query: str, repeat: int) -> list[tuple[str, list[float], int]]:
    results = []
    for slug in REPORTS:
        for path in (
            f"/admin/reports/{slug}?{query}",
            f"/admin/reports/{slug}/{FIRST_SECTION[slug]}.csv?{query}",
        ):
            warm = client.get(path)
            if warm.status_code != 200:
                raise SystemExit(f"{path}: HTTP {warm.status_code}: {warm.text[:300]}")
            seconds = []
            for _ in range(repeat):
                started = time.perf_counter()
                response = client.get(path)
                seconds.append(time.perf_counter() - started)
                assert response.status_code == 200
            results.append((path.split("?")[0], seconds, len(warm.content)))
    return results


def explain(engine: Engine, console) -> None:  # type: ignore[no-untyped-def]
    """Print the plan of every statement a 30-day report page runs."""
    statements: list[str] = []

    def remember(connection, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(cursor.mogrify(statement, parameters).decode())

    from airtime.reports.service import parse_request

    factory = make_session_factory(engine)
    event.listen(engine, "before_cursor_execute", remember)
    try:
        for spec in REPORTS.values():
            with unit_of_work(factory) as session:
                request = parse_request(
                    start="", end="", currency="GBP", default_currency="GBP", language="en"
                )
                spec.build(session, request)
    finally:
        event.remove(engine, "before_cursor_execute", remember)
    with engine.connect() as connection:
        for statement in statements:
            plan = connection.execute(
                text("EXPLAIN (ANALYZE, BUFFERS) " + statement.replace("%", "%%"))
            ).scalars()
            console.print(statement, style="bold")
            console.print("\n".join(plan))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--orders", type=int, default=ORDERS_DEFAULT)
    parser.add_argument("--lines", type=int, default=LINES_DEFAULT)
    parser.add_argument("--repeat", type=int, default=5, help="timed requests per page (default 5)")
    parser.add_argument("--seconds", type=float, default=10, help="pgbench run length (default 10)")
    parser.add_argument("--database-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--explain", action="store_true")
    arguments = parser.parse_args(argv)
    if not 1_000 <= arguments.orders <= 10_000_000 or not 1_000 <= arguments.lines <= 1_000_000:
        parser.error("--orders in [1,000, 10,000,000], --lines in [1,000, 1,000,000]")
    if not 1 <= arguments.repeat <= 100:
        parser.error("--repeat in [1, 100]")
    console = make_console()
    with throwaway_database(arguments.database_url, "airtime_bench_pgbench") as url:
        baseline = run_pgbench(url, clients=2, seconds=arguments.seconds)
    console.print(f"pgbench TPC-B-like, 2 clients: {baseline.transactions_per_second:,.0f} tps (baseline)")
    with throwaway_database(arguments.database_url, "airtime_bench_reports") as url:
        engine = make_engine(sqlalchemy_url(url))
        started = time.perf_counter()
        seed(engine, orders=arguments.orders, lines=arguments.lines, console=console)
        console.print(f"seeded in {time.perf_counter() - started:.0f} s")
        if arguments.explain:
            explain(engine, console)
        settings = Settings(
            database_url=url, secret_key="bench-secret-key-not-for-production", environment="test"
        )
        cookie = admin_cookie(engine, settings)
        app = create_app(settings, run_background_jobs=False)
        table = Table(
            title=f"Report pages, {arguments.orders:,} orders, {arguments.lines:,} lines ({today()})"
        )
        for column in ("page", "range", "median ms", "slowest ms", "bytes", f"under {GOAL_SECONDS:g} s"):
            table.add_column(column, justify="left" if column in ("page", "range") else "right")
        slowest_overall = 0.0
        with TestClient(app) as client:
            client.cookies.set(STAFF_COOKIE, cookie)
            year = (
                f"start={(today() - timedelta(days=364)).isoformat()}&end={today().isoformat()}&currency=GBP"
            )
            for label, query in (("30 days", "currency=GBP"), ("365 days", year)):
                for path, seconds, size in time_pages(client, query=query, repeat=arguments.repeat):
                    slowest = max(seconds)
                    slowest_overall = max(slowest_overall, slowest) if label == "30 days" else slowest_overall
                    table.add_row(
                        path,
                        label,
                        f"{statistics.median(seconds) * 1000:.0f}",
                        f"{slowest * 1000:.0f}",
                        f"{size:,}",
                        "yes" if slowest < GOAL_SECONDS else "NO",
                    )
        engine.dispose()
    console.print(table)
    console.print(
        f"pgbench baseline on the same server: {baseline.transactions_per_second:,.0f} tps; "
        f"slowest report page (default 30 days): {slowest_overall * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
