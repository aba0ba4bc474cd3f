"""Agent sales on both databases, where the line changes under the sale."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from airtime.agents import service as agents
from airtime.agents.models import Agent
from airtime.topups import service as topups
from tests import agent_helpers, topup_helpers
from tests.snapshot import fingerprint


def test_a_sale_onto_a_line_terminated_after_its_lookup_is_refused_and_charges_nothing(
    uow, session_factory, settings, monkeypatch
):
    with uow() as session:
        topup_helpers.line_with_catalogue(session, settings)
        keys = agent_helpers.agent(session, settings, float_minor=100_000)
    looked_up = topups.find_topupable_line

    def then_terminated(session, **options):
        line = looked_up(session, **options)
        # What the sweep does meanwhile, behind this session's back (no identity-map sync).
        session.execute(text("UPDATE lines SET state = 'terminated' WHERE id = :id"), {"id": line.id})
        return line

    monkeypatch.setattr(topups, "find_topupable_line", then_terminated)
    before = fingerprint(session_factory)
    with pytest.raises(topups.LineNotTopupable, match="no longer in service"), uow() as session:
        agents.sell(
            session,
            agent=session.get(Agent, keys.agent_id),
            msisdn="+447911123456",
            idempotency_key="sale-1",
            settings=settings,
            amount_minor=1000,
        )
    assert fingerprint(session_factory) == before
