"""PostgreSQL, real parallel connections: four job runs at once over the same due rules
charge each rule once."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import func, select

from airtime.accounts.models import Line
from airtime.autotopup.models import AttemptStatus, AutoTopupAttempt
from airtime.autotopup.tasks import run_due
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.ledger.service import balance_of, check_invariants
from airtime.payments.base import OffSessionCharge, PaymentState
from airtime.payments.models import SandboxPayment
from airtime.payments.sandbox import SandboxProvider
from airtime.topups.models import OrderStatus, TopupOrder
from tests import autotopup_helpers

PARALLEL = 4
RULES = 6


@dataclass
class CountingSandbox(SandboxProvider):
    """The sandbox, counting how often each idempotency key is charged."""

    charges: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def charge_saved_method(self, session, charge: OffSessionCharge) -> PaymentState:
        with self.lock:
            self.charges[charge.idempotency_key] += 1
        return super().charge_saved_method(session, charge)


def test_four_parallel_runs_charge_each_due_rule_once(pg_session_factory, postgres_url, tmp_path):
    settings = Settings(database_url=postgres_url, secret_key="x", outbox_dir=tmp_path, environment="test")
    sandbox = CountingSandbox(base_url=settings.base_url)
    line_ids = []
    with unit_of_work(pg_session_factory) as session:
        for number in range(RULES):
            setup = autotopup_helpers.rule_on_line(
                session,
                settings,
                balance_minor=100,
                days_before="40",  # both triggers due: still one top-up per run and rule
                msisdn=f"+4479111234{number:02d}",
            )
            line_ids.append(setup.line_id)
    barrier = threading.Barrier(PARALLEL)

    def job(_: int):
        barrier.wait()
        return run_due(pg_session_factory, providers={"sandbox": sandbox}, settings=settings)

    with ThreadPoolExecutor(PARALLEL) as pool:
        reports = list(pool.map(job, range(PARALLEL)))
    assert [error for report in reports for error in report.errors] == []
    assert sum(report.charged for report in reports) == RULES
    assert len(sandbox.charges) == RULES and set(sandbox.charges.values()) == {1}
    with unit_of_work(pg_session_factory) as session:
        assert session.scalar(select(func.count()).select_from(SandboxPayment)) == RULES
        assert session.scalar(select(func.count()).select_from(TopupOrder)) == RULES
        assert set(session.scalars(select(TopupOrder.status))) == {OrderStatus.CREDITED}
        assert set(session.scalars(select(AutoTopupAttempt.status))) == {AttemptStatus.SUCCEEDED}
        for line_id in line_ids:
            line = session.get(Line, line_id)
            assert balance_of(session, line.main_account_id) == 1100
        assert check_invariants(session) == []
