"""PostgreSQL, real parallel connections: one agent's float and daily limit under load."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from airtime.agents import service as agents
from airtime.agents.models import Agent, AgentSale
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.ledger.service import balance_of, check_invariants
from tests import agent_helpers, topup_helpers

PARALLEL = 20


def _settings(postgres_url, tmp_path) -> Settings:
    return Settings(
        database_url=postgres_url, secret_key="x", outbox_dir=tmp_path / "out", environment="test"
    )


def _run_parallel(factory, settings, agent_id, keys):
    barrier = threading.Barrier(len(keys))

    def attempt(key: str) -> str:
        barrier.wait()
        try:
            with unit_of_work(factory) as session:
                agent = session.get(Agent, agent_id)
                agents.sell(
                    session,
                    agent=agent,
                    msisdn="+447911123456",
                    amount_minor=1000,
                    idempotency_key=key,
                    settings=settings,
                )
            return "sold"
        except (agents.FloatInsufficient, agents.DailyLimitReached) as refused:
            return refused.code

    with ThreadPoolExecutor(len(keys)) as pool:
        return list(pool.map(attempt, keys))


def test_twenty_parallel_sales_on_a_float_for_ten_sell_exactly_ten(
    pg_session_factory, postgres_url, tmp_path
):
    settings = _settings(postgres_url, tmp_path)
    with unit_of_work(pg_session_factory) as session:
        line = topup_helpers.line_with_catalogue(session, settings)
        # 5% commission: each £10 sale takes £9.50 from the float, which covers exactly ten.
        keys = agent_helpers.agent(session, settings, float_minor=10 * 950, commission_basis_points=500)
    outcomes = _run_parallel(
        pg_session_factory, settings, keys.agent_id, [uuid.uuid4().hex for _ in range(PARALLEL)]
    )
    assert outcomes.count("sold") == 10
    assert outcomes.count("float_insufficient") == 10
    with unit_of_work(pg_session_factory) as session:
        assert balance_of(session, keys.float_account_id) == 0
        assert balance_of(session, line.main_account_id) == 10 * 1000
        assert session.scalar(select(func.count()).select_from(AgentSale)) == 10
        assert check_invariants(session) == []


def test_parallel_sales_never_pass_the_daily_limit(pg_session_factory, postgres_url, tmp_path):
    settings = _settings(postgres_url, tmp_path)
    with unit_of_work(pg_session_factory) as session:
        topup_helpers.line_with_catalogue(session, settings)
        keys = agent_helpers.agent(session, settings, float_minor=100_000, daily_limit_minor=5000)
    outcomes = _run_parallel(
        pg_session_factory, settings, keys.agent_id, [uuid.uuid4().hex for _ in range(PARALLEL)]
    )
    assert outcomes.count("sold") == 5
    assert outcomes.count("daily_limit_reached") == PARALLEL - 5
    with unit_of_work(pg_session_factory) as session:
        assert balance_of(session, keys.float_account_id) == 100_000 - 5000


def test_parallel_retries_of_one_key_sell_once(pg_session_factory, postgres_url, tmp_path):
    settings = _settings(postgres_url, tmp_path)
    with unit_of_work(pg_session_factory) as session:
        line = topup_helpers.line_with_catalogue(session, settings)
        keys = agent_helpers.agent(session, settings, float_minor=100_000)
    outcomes = _run_parallel(pg_session_factory, settings, keys.agent_id, ["same-key"] * 10)
    assert outcomes == ["sold"] * 10
    with unit_of_work(pg_session_factory) as session:
        assert balance_of(session, line.main_account_id) == 1000
        assert session.scalar(select(func.count()).select_from(AgentSale)) == 1
