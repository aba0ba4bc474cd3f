"""The signed agent API over HTTP on both databases: refusals move nothing, sales credit once."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from airtime.agents.models import AgentSale
from airtime.db.session import unit_of_work
from airtime.ledger.models import AccountKind
from airtime.ledger.service import balance_of, check_invariants, operator_account
from airtime.topups.models import TopupOrder
from tests import agent_helpers, topup_helpers
from tests.snapshot import COUNTERS, fingerprint

MSISDN = "+447911123456"
# A refused request may still leave its signature (so it cannot be replayed) and its count.
REQUEST_RECORDS = COUNTERS | {"agent_signatures"}
PROBLEM = "application/problem+json"


def _setup(session_factory, settings, **agent_options):
    with unit_of_work(session_factory) as session:
        line = topup_helpers.line_with_catalogue(session, settings)
        keys = agent_helpers.agent(session, settings, **agent_options)
    return line, keys


def _balances(session_factory, *account_ids):
    with unit_of_work(session_factory) as session:
        return [balance_of(session, account_id) for account_id in account_ids]


def test_top_up_with_commission_and_the_same_key_twice_credits_once(client, session_factory, settings):
    line, keys = _setup(session_factory, settings, commission_basis_points=500)
    looked = agent_helpers.call(client, keys, "GET", "/api/v1/agent/lookup?msisdn=%2B447911123456")
    assert looked.status_code == 200, looked.text
    assert looked.json()["ours"] is True and looked.json()["currency"] == "GBP"
    assert [d["amount_minor"] for d in looked.json()["denominations"]] == [500, 1000, 2000]
    assert looked.json()["bundles"][0]["code"] == "DATA-5GB"
    body = {"msisdn": MSISDN, "amount_minor": 1000}
    first = agent_helpers.call(client, keys, "POST", "/api/v1/agent/topups", body, idempotency_key="sale-1")
    assert first.status_code == 201, first.text
    sold = first.json()
    assert sold["status"] == "credited" and sold["receipt_number"]
    assert sold["commission"]["amount_minor"] == 50 and sold["float_debit"]["amount_minor"] == 950
    again = agent_helpers.call(client, keys, "POST", "/api/v1/agent/topups", body, idempotency_key="sale-1")
    assert again.status_code == 200 and again.json()["id"] == sold["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = agent_helpers.call(
        client, keys, "POST", "/api/v1/agent/topups", {**body, "amount_minor": 2000}, idempotency_key="sale-1"
    )
    assert other.status_code == 409 and other.headers["content-type"].startswith(PROBLEM)
    assert other.json()["type"].endswith("/idempotency_conflict")
    assert _balances(session_factory, line.main_account_id, keys.float_account_id) == [1000, 9050]
    with unit_of_work(session_factory) as session:
        expense = operator_account(session, kind=AccountKind.COMMISSION_EXPENSE, currency="GBP")
        assert balance_of(session, expense) == -50
        assert session.scalar(select(func.count()).select_from(TopupOrder)) == 1
        assert session.scalar(select(func.count()).select_from(AgentSale)) == 1
        assert check_invariants(session) == []
    found = agent_helpers.call(client, keys, "GET", f"/api/v1/agent/transactions/{sold['id']}")
    assert found.status_code == 200 and found.json()["amount"]["amount_minor"] == 1000
    listed = agent_helpers.call(client, keys, "GET", "/api/v1/agent/transactions?limit=10")
    assert [item["id"] for item in listed.json()["items"]] == [sold["id"]]
    by_key = agent_helpers.call(client, keys, "GET", "/api/v1/agent/transactions?idempotency_key=sale-1")
    assert by_key.json()["items"][0]["id"] == sold["id"]
    float_state = agent_helpers.call(client, keys, "GET", "/api/v1/agent/float").json()
    assert float_state["balance"]["amount_minor"] == 9050
    assert float_state["sold_today"]["amount_minor"] == 1000


def test_bundle_for_a_line_from_the_float(client, session_factory, settings):
    line, keys = _setup(session_factory, settings, commission_basis_points=300)
    sold = agent_helpers.call(
        client,
        keys,
        "POST",
        "/api/v1/agent/bundles",
        {"msisdn": MSISDN, "bundle_code": "DATA-5GB"},
        idempotency_key="b-1",
    )
    assert sold.status_code == 201, sold.text
    assert sold.json()["kind"] == "bundle" and sold.json()["bundle_code"] == "DATA-5GB"
    assert _balances(session_factory, line.main_account_id, keys.float_account_id) == [0, 10_000 - 970]
    with unit_of_work(session_factory) as session:
        assert check_invariants(session) == []


def test_wrong_expired_replayed_and_unsigned_requests_are_refused_with_nothing_moved(
    client, session_factory, settings
):
    _, keys = _setup(session_factory, settings)
    path = "/api/v1/agent/topups"
    body = b'{"msisdn": "+447911123456", "amount_minor": 1000}'
    before = fingerprint(session_factory, ignore=REQUEST_RECORDS)

    wrong_secret = agent_helpers.AgentKeys(
        keys.code, keys.agent_id, keys.float_account_id, keys.key_id, "nope"
    )
    headers = agent_helpers.signed_headers(wrong_secret, "POST", path, body, idempotency_key="k-1")
    wrong = client.post(path, content=body, headers=headers)
    assert wrong.status_code == 401 and wrong.headers["content-type"].startswith(PROBLEM)
    assert "does not match" in wrong.json()["detail"]

    # Signed for another body: the body's hash is part of what is signed.
    headers = agent_helpers.signed_headers(
        keys, "POST", path, body.replace(b"1000", b"2000"), idempotency_key="k-1"
    )
    assert client.post(path, content=body, headers=headers).status_code == 401

    stale = agent_helpers.signed_headers(
        keys, "POST", path, body, timestamp=int(time.time()) - 400, idempotency_key="k-1"
    )
    expired = client.post(path, content=body, headers=stale)
    assert expired.status_code == 401 and "seconds away" in expired.json()["detail"]

    unsigned = client.post(path, content=body, headers={"Idempotency-Key": "k-1"})
    assert unsigned.status_code == 401

    looked = agent_helpers.signed_headers(keys, "GET", "/api/v1/agent/float")
    assert client.get("/api/v1/agent/float", headers=looked).status_code == 200
    replayed = client.get("/api/v1/agent/float", headers=looked)
    assert replayed.status_code == 401 and "already received" in replayed.json()["detail"]
    assert fingerprint(session_factory, ignore=REQUEST_RECORDS) == before


def test_float_too_low_is_refused_with_nothing_moved(client, session_factory, settings):
    line, keys = _setup(session_factory, settings, float_minor=900)
    before = fingerprint(session_factory, ignore=REQUEST_RECORDS)
    refused = agent_helpers.call(
        client,
        keys,
        "POST",
        "/api/v1/agent/topups",
        {"msisdn": MSISDN, "amount_minor": 1000},
        idempotency_key="x",
    )
    assert refused.status_code == 409 and refused.json()["type"].endswith("/float_insufficient")
    assert "£9.00" in refused.json()["detail"] and "account_id" not in refused.json()
    assert fingerprint(session_factory, ignore=REQUEST_RECORDS) == before
    assert _balances(session_factory, line.main_account_id, keys.float_account_id) == [0, 900]


def test_daily_limit_reached_is_refused_with_nothing_moved(client, session_factory, settings):
    _, keys = _setup(session_factory, settings, daily_limit_minor=1500)
    body = {"msisdn": MSISDN, "amount_minor": 1000}
    assert (
        agent_helpers.call(
            client, keys, "POST", "/api/v1/agent/topups", body, idempotency_key="d-1"
        ).status_code
        == 201
    )
    before = fingerprint(session_factory, ignore=REQUEST_RECORDS)
    refused = agent_helpers.call(client, keys, "POST", "/api/v1/agent/topups", body, idempotency_key="d-2")
    assert refused.status_code == 429 and refused.json()["type"].endswith("/daily_limit_reached")
    assert fingerprint(session_factory, ignore=REQUEST_RECORDS) == before
    # The first sale asked again still answers, limit or not.
    again = agent_helpers.call(client, keys, "POST", "/api/v1/agent/topups", body, idempotency_key="d-1")
    assert again.status_code == 200
    small = agent_helpers.call(
        client, keys, "POST", "/api/v1/agent/topups", {**body, "amount_minor": 500}, idempotency_key="d-3"
    )
    assert small.status_code == 201


def test_rate_limit_per_agent_per_minute(client, session_factory, settings):
    _, keys = _setup(session_factory, settings, rate_limit_per_minute=3)
    answers = [agent_helpers.call(client, keys, "GET", "/api/v1/agent/float").status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]


def test_sub_agent_sale_pays_the_parent_the_difference(client, session_factory, settings):
    with unit_of_work(session_factory) as session:
        line = topup_helpers.line_with_catalogue(session, settings)
        parent = agent_helpers.agent(
            session, settings, code="PARENT", float_minor=0, commission_basis_points=500
        )
        child = agent_helpers.agent(
            session,
            settings,
            code="CHILD",
            parent_code="PARENT",
            commission_basis_points=300,
            commission_amounts={2000: 80},
        )
    for key, amount in (("c-1", 1000), ("c-2", 2000)):
        sold = agent_helpers.call(
            client,
            child,
            "POST",
            "/api/v1/agent/topups",
            {"msisdn": MSISDN, "amount_minor": amount},
            idempotency_key=key,
        )
        assert sold.status_code == 201, sold.text
    # 1000: child keeps 30, parent earns 50 − 30; 2000: child's fixed 80, parent 100 − 80.
    child_float, parent_float, line_balance = _balances(
        session_factory, child.float_account_id, parent.float_account_id, line.main_account_id
    )
    assert child_float == 10_000 - 970 - 1920
    assert parent_float == 20 + 20
    assert line_balance == 3000
    with unit_of_work(session_factory) as session:
        expense = operator_account(session, kind=AccountKind.COMMISSION_EXPENSE, currency="GBP")
        assert balance_of(session, expense) == -(50 + 100)
        assert check_invariants(session) == []


def test_money_moving_calls_need_an_idempotency_key(client, session_factory, settings):
    _, keys = _setup(session_factory, settings)
    missing = agent_helpers.call(
        client, keys, "POST", "/api/v1/agent/topups", {"msisdn": MSISDN, "amount_minor": 1000}
    )
    assert missing.status_code == 422 and missing.headers["content-type"].startswith(PROBLEM)


def test_lookup_of_a_number_that_is_not_ours(client, session_factory, settings):
    _, keys = _setup(session_factory, settings)
    looked = agent_helpers.call(client, keys, "GET", "/api/v1/agent/lookup?msisdn=%2B447911123999")
    assert looked.status_code == 200, looked.text
    assert looked.json()["ours"] is False
