"""PostgreSQL, real parallel connections: 50 people enter the same PIN at the same moment."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from airtime.accounts.models import Line
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.ledger.service import balance_of, check_invariants
from airtime.topups.models import TopupOrder
from airtime.vouchers import service as vouchers
from tests import topup_helpers, voucher_helpers

PARALLEL = 50


def test_fifty_parallel_redemptions_of_one_pin_credit_once(pg_session_factory, postgres_url, tmp_path):
    settings = Settings(
        database_url=postgres_url, secret_key="x", outbox_dir=tmp_path / "out", environment="test"
    )
    with unit_of_work(pg_session_factory) as session:
        line = topup_helpers.line_with_catalogue(session, settings)
    _, rows = voucher_helpers.released_pins(pg_session_factory, settings, tmp_path, quantity=1)
    barrier = threading.Barrier(PARALLEL)

    def attempt(number: int):
        barrier.wait()
        try:
            with unit_of_work(pg_session_factory) as session:
                vouchers.redeem(
                    session,
                    settings=settings,
                    pin=rows[0]["pin"],
                    line=session.get(Line, line.id),
                    channel="api",
                    ip_address=f"10.0.0.{number}",
                )
            return "credited"
        except vouchers.VoucherRefused as refused:
            return refused.detail

    with ThreadPoolExecutor(PARALLEL) as pool:
        outcomes = list(pool.map(attempt, range(PARALLEL)))
    assert outcomes.count("credited") == 1
    refusals = [outcome for outcome in outcomes if outcome != "credited"]
    assert len(refusals) == PARALLEL - 1
    assert all(refusal.startswith("This voucher was already used on") for refusal in refusals)
    with unit_of_work(pg_session_factory) as session:
        assert balance_of(session, line.main_account_id) == 1000
        assert session.scalar(select(func.count()).select_from(TopupOrder)) == 1
        assert check_invariants(session) == []


def test_parallel_redemptions_of_different_pins_onto_one_line_all_credit(
    pg_session_factory, postgres_url, tmp_path
):
    """No deadlock when several people top up the same line at once."""
    settings = Settings(
        database_url=postgres_url, secret_key="x", outbox_dir=tmp_path / "out", environment="test"
    )
    with unit_of_work(pg_session_factory) as session:
        line = topup_helpers.line_with_catalogue(session, settings)
    count = 20
    _, rows = voucher_helpers.released_pins(pg_session_factory, settings, tmp_path, quantity=count)
    barrier = threading.Barrier(count)

    def attempt(number: int) -> str:
        barrier.wait()
        with unit_of_work(pg_session_factory) as session:
            vouchers.redeem(
                session,
                settings=settings,
                pin=rows[number]["pin"],
                line=session.get(Line, line.id),
                channel="api",
                ip_address=f"10.0.1.{number}",
            )
        return "credited"

    with ThreadPoolExecutor(count) as pool:
        outcomes = list(pool.map(attempt, range(count)))
    assert outcomes == ["credited"] * count
    with unit_of_work(pg_session_factory) as session:
        assert balance_of(session, line.main_account_id) == count * 1000
        assert check_invariants(session) == []
