"""PostgreSQL, real parallel connections: one provider event fired 20 times at once credits once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.ledger.models import Entry
from airtime.ledger.service import balance_of, check_invariants
from airtime.payments.models import PaymentEvent
from airtime.payments.sandbox import SandboxProvider
from airtime.payments.webhooks import process_event
from airtime.topups.models import OrderStatus, TopupOrder
from tests import topup_helpers

PARALLEL = 20


def test_the_same_event_from_twenty_connections_credits_once(pg_session_factory, postgres_url, tmp_path):
    settings = Settings(database_url=postgres_url, secret_key="x", outbox_dir=tmp_path, environment="test")
    sandbox = SandboxProvider(base_url=settings.base_url)
    with unit_of_work(pg_session_factory) as session:
        line = topup_helpers.line_with_catalogue(session, settings)
        order = topup_helpers.order(session, settings, line_id=line.id, amount_minor=2000)
        event = sandbox.decide(session, order.payment_reference, "approve")
    barrier = threading.Barrier(PARALLEL)

    def fire(_: int):
        barrier.wait()
        return process_event(pg_session_factory, provider_name="sandbox", event=event, settings=settings)

    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(fire, range(PARALLEL)))
    assert sum(not result.duplicate for result in results) == 1
    assert sum(result.credited for result in results) == 1
    with unit_of_work(pg_session_factory) as session:
        credited = session.get(TopupOrder, order.id)
        assert credited.status == OrderStatus.CREDITED
        assert balance_of(session, line.main_account_id) == 2000
        assert session.scalar(select(func.count()).select_from(PaymentEvent)) == 1
        assert session.scalar(select(func.count()).where(Entry.account_id == line.main_account_id)) == 1
        assert check_invariants(session) == []


def test_different_events_for_one_payment_in_parallel_credit_once(pg_session_factory, postgres_url, tmp_path):
    """A provider may send several event types for one payment; the order still credits once."""
    import dataclasses

    settings = Settings(database_url=postgres_url, secret_key="x", outbox_dir=tmp_path, environment="test")
    sandbox = SandboxProvider(base_url=settings.base_url)
    with unit_of_work(pg_session_factory) as session:
        line = topup_helpers.line_with_catalogue(session, settings)
        order = topup_helpers.order(session, settings, line_id=line.id, amount_minor=1000)
        event = sandbox.decide(session, order.payment_reference, "approve")
    events = [dataclasses.replace(event, event_id=f"{event.event_id}:{number}") for number in range(PARALLEL)]
    barrier = threading.Barrier(PARALLEL)

    def fire(one):
        barrier.wait()
        return process_event(pg_session_factory, provider_name="sandbox", event=one, settings=settings)

    with ThreadPoolExecutor(PARALLEL) as pool:
        results = list(pool.map(fire, events))
    assert sum(result.credited for result in results) == 1
    with unit_of_work(pg_session_factory) as session:
        assert balance_of(session, line.main_account_id) == 1000
        assert check_invariants(session) == []
