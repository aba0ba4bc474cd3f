"""The fast path (PostgreSQL only): it writes row for row what the ORM path writes, it
hands everything else over untouched, and simultaneous requests still credit once."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import time_machine
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, text

import airtime.fastpath as fastpath_module
from airtime.accounts.models import Line
from airtime.app import create_app
from airtime.config import Settings
from airtime.db.session import make_session_factory, unit_of_work
from airtime.fastpath import FAST_PATH, FastPath, HandOver
from airtime.ledger.models import AccountKind
from airtime.ledger.service import balance_of, check_invariants, operator_account
from airtime.metrics import REQUESTS
from airtime.payments.registry import providers_from_settings
from airtime.topups import service as topups
from airtime.topups.models import OrderStatus, PromotionKind, TopupOrder
from airtime.vouchers.models import Voucher, VoucherState
from tests import factories, topup_helpers, voucher_helpers
from tests.conftest import _truncate_all
from tests.e2e.test_web import csrf

MOMENT = datetime(2026, 11, 2, 10, 30, tzinfo=UTC)
MSISDN = "+447911123456"
# Tables either path writes when it starts a top-up, approves it or redeems a voucher.
WRITTEN = (
    "topup_orders",
    "sandbox_payments",
    "payment_events",
    "ledger_transfers",
    "ledger_entries",
    "ledger_accounts",
    "lines",
    "line_transitions",
    "notifications",
    "vouchers",
    "voucher_attempts",
    "voucher_events",
)


def _settings(postgres_url: str, tmp_path: Path, *, fast_path: bool) -> Settings:
    return Settings(
        database_url=postgres_url,
        secret_key="test-secret-key-not-for-production",
        base_url="http://testserver",
        outbox_dir=tmp_path / "outbox",
        environment="test",
        fast_path=fast_path,
    )


def _served() -> dict[tuple[str, str], float]:
    return {
        (sample.labels["route"], sample.labels["outcome"]): sample.value
        for metric in FAST_PATH.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    }


def _requests() -> dict[tuple[str, str, str], float]:
    """The app's request counts by method, route template and status."""
    return {
        (sample.labels["method"], sample.labels["route"], sample.labels["status"]): sample.value
        for metric in REQUESTS.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    }


def _increase(before: dict[Any, float], after: dict[Any, float]) -> dict[Any, float]:
    return {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}


def _prepare(engine: Engine, settings: Settings, tmp_path: Path) -> list[dict[str, str]]:
    """A line, amounts, three promotions (one only for a first top-up), the operator
    accounts in use, and a released batch of vouchers with their own validity."""
    factory = make_session_factory(engine)
    with unit_of_work(factory) as session:
        topup_helpers.line_with_catalogue(session, settings)
        topup_helpers.promotion(session, code="API10", value=1000, channels=["api"])
        topup_helpers.promotion(
            session, code="SHOP", kind=PromotionKind.FIXED, value=150, channels=["voucher"]
        )
        topup_helpers.promotion(
            session,
            code="FIRST",
            kind=PromotionKind.FIXED,
            value=999,
            channels=["voucher"],
            first_topup_only=True,
        )
        for kind, qualifier in (
            (AccountKind.PAYMENT_CLEARING, "sandbox"),
            (AccountKind.PROMOTION_EXPENSE, ""),
        ):
            operator_account(session, kind=kind, currency="GBP", qualifier=qualifier)
    _, rows = voucher_helpers.released_pins(factory, settings, tmp_path, quantity=2, validity_days=45)
    return rows


def _walk(client: TestClient, pins: list[dict[str, str]]) -> list[Any]:
    """Start an API top-up, approve it, redeem a PIN, then replay both keys."""
    token = csrf(client, "/topup")
    topup = {"msisdn": "07911 123456", "amount_minor": 1000, "receipt_email": "Friend@Example.com"}
    created = client.post("/api/v1/topups", json=topup, headers={"Idempotency-Key": "top-1"})
    assert created.status_code == 201, created.text
    path = "/" + created.json()["payment_url"].split("/", 3)[3]
    approved = client.post(path, data={"decision": "approve", "csrf_token": token}, follow_redirects=False)
    assert approved.status_code == 303
    redeem = {"pin": pins[0]["pin"], "msisdn": MSISDN}
    redeemed = client.post("/api/v1/vouchers/redeem", json=redeem, headers={"Idempotency-Key": "pin-1"})
    assert redeemed.status_code == 201, redeemed.text
    replayed = client.post("/api/v1/topups", json=topup, headers={"Idempotency-Key": "top-1"})
    again = client.post("/api/v1/vouchers/redeem", json=redeem, headers={"Idempotency-Key": "pin-1"})
    assert (replayed.status_code, again.status_code) == (200, 200)
    return [created.json(), approved.headers["location"], redeemed.json(), replayed.json(), again.json()]


def _tables(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    with engine.connect() as connection:
        return {
            table: [
                dict(row._mapping) for row in connection.execute(text(f"SELECT * FROM {table} ORDER BY 1"))
            ]
            for table in WRITTEN
        }


def _without_random_tokens(value: Any, tokens: list[str]) -> str:
    """Public ids and payment references are random: name them by the order in which
    ``tokens`` first gives them (longest replaced first, so one inside another stays whole)."""
    written = repr(value)
    names = {token: f"<token {number}>" for number, token in enumerate(dict.fromkeys(tokens))}
    for token in sorted(names, key=len, reverse=True):
        written = written.replace(token, names[token])
    written = re.sub(r"\b[0-9a-f]{32}\b", "<uuid>", written)  # e.g. a voucher release's transfer id
    written = re.sub(r"'pin_hash': '[0-9a-f]{64}'", "<pin hash>", written)  # the PINs are random
    return re.sub(r"(line:\+\d+):[0-9a-f]{12}:", r"\1:<suffix>:", written)  # a line's account codes


def _run(engine: Engine, postgres_url: str, tmp_path: Path, *, fast_path: bool) -> str:
    settings = _settings(postgres_url, tmp_path, fast_path=fast_path)
    try:
        with time_machine.travel(MOMENT, tick=False):
            pins = _prepare(engine, settings, tmp_path)
            with TestClient(create_app(settings, run_background_jobs=False)) as client:
                answers = _walk(client, pins)
        tables = _tables(engine)
        tokens = [
            token
            for order in tables["topup_orders"]
            for token in (order["public_id"], order["payment_reference"])
            if token and not token.isdigit()
        ]
        assert not check_invariants_problems(engine)
        return _without_random_tokens([answers, tables], tokens)
    finally:
        _truncate_all(engine)


def check_invariants_problems(engine: Engine) -> list[str]:
    with unit_of_work(make_session_factory(engine)) as session:
        return check_invariants(session)


def test_the_fast_path_writes_what_the_orm_path_writes(postgres_engine, postgres_url, tmp_path):
    before, requests_before = _served(), _requests()
    fast = _run(postgres_engine, postgres_url, tmp_path / "fast", fast_path=True)
    after, requests_fast = _served(), _requests()
    slow = _run(postgres_engine, postgres_url, tmp_path / "slow", fast_path=False)
    assert _served() == after  # with the fast path off, nothing reaches it
    # The request metrics count what the fast path serves as the app counts it.
    counted = _increase(requests_before, requests_fast)
    assert counted == _increase(requests_fast, _requests())
    assert counted[("POST", "/api/v1/topups", "201")] == 1
    assert counted[("POST", "/sandbox/pay/{reference}", "303")] == 1
    served = _increase(before, after)
    assert served == {
        ("/api/v1/topups", "served"): 1,
        ("/api/v1/topups", "handed_over"): 1,  # the replay
        ("/sandbox/pay/{reference}", "served"): 1,
        ("/api/v1/vouchers/redeem", "served"): 1,
        ("/api/v1/vouchers/redeem", "handed_over"): 1,  # the replay
    }
    assert "Friend@Example.com" not in fast and "friend@example.com" in fast
    assert fast == slow


def test_refusals_are_the_apps_own_and_move_nothing(postgres_engine, postgres_url, tmp_path):
    settings = _settings(postgres_url, tmp_path, fast_path=True)
    try:
        pins = _prepare(postgres_engine, settings, tmp_path)
        before = _served()
        with TestClient(create_app(settings, run_background_jobs=False)) as client:
            token = csrf(client, "/topup")
            refused = [
                client.post(
                    "/api/v1/topups",
                    json={"msisdn": MSISDN, "amount_minor": 7},
                    headers={"Idempotency-Key": "a"},
                ),
                client.post(
                    "/api/v1/topups",
                    json={"msisdn": "+15550000", "amount_minor": 1000},
                    headers={"Idempotency-Key": "b"},
                ),
                client.post(
                    "/api/v1/topups",
                    json={"msisdn": MSISDN, "amount_minor": 1000, "extra": 1},
                    headers={"Idempotency-Key": "c"},
                ),
                client.post("/api/v1/topups", json={"msisdn": MSISDN, "amount_minor": 1000}),
                client.post(  # JSON, but not sent as JSON
                    "/api/v1/topups",
                    content=b'{"msisdn": "+447911123456", "amount_minor": 1000}',
                    headers={"Idempotency-Key": "f", "Content-Type": "text/plain"},
                ),
                client.post(
                    "/api/v1/vouchers/redeem",
                    json={"pin": "1" * 16, "msisdn": MSISDN},
                    headers={"Idempotency-Key": "d"},
                ),
            ]
            created = client.post(
                "/api/v1/topups",
                json={"msisdn": MSISDN, "amount_minor": 1000},
                headers={"Idempotency-Key": "e"},
            )
            path = "/" + created.json()["payment_url"].split("/", 3)[3]
            forged = client.post(
                path, data={"decision": "approve", "csrf_token": "forged"}, follow_redirects=False
            )
        assert [answer.status_code for answer in refused] == [422] * 6
        assert all(answer.headers["content-type"] == "application/problem+json" for answer in refused)
        assert forged.status_code == 403
        served = _served()
        assert (
            served[("/api/v1/topups", "handed_over")] - before.get(("/api/v1/topups", "handed_over"), 0) == 5
        )
        with unit_of_work(make_session_factory(postgres_engine)) as session:
            orders = session.scalars(select(TopupOrder)).all()
            assert [order.status for order in orders] == [OrderStatus.AWAITING_PAYMENT]
            assert (
                session.scalar(select(Voucher.state).where(Voucher.serial == int(pins[0]["serial"])))
                == VoucherState.ACTIVE
            )
        del token
    finally:
        _truncate_all(postgres_engine)


def test_a_bug_in_the_fast_path_gets_the_apps_answer_and_writes_nothing(
    postgres_engine, postgres_url, tmp_path, monkeypatch
):
    """The fast path runs in front of the app's middleware: a bug there must still get the
    app's problem+json 500, be counted, and leave nothing written (here: after the read,
    before the order is written)."""
    settings = _settings(postgres_url, tmp_path, fast_path=True)

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("a bug")

    try:
        _prepare(postgres_engine, settings, tmp_path)
        monkeypatch.setattr(fastpath_module.topups, "order_request_hash", broken)
        before = _requests()
        with TestClient(create_app(settings, run_background_jobs=False)) as client:
            answer = client.post(
                "/api/v1/topups",
                json={"msisdn": MSISDN, "amount_minor": 1000},
                headers={"Idempotency-Key": "a"},
            )
        assert answer.status_code == 500
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["type"].endswith("internal_error")
        assert _increase(before, _requests()) == {("POST", "/api/v1/topups", "500"): 1}
        with unit_of_work(make_session_factory(postgres_engine)) as session:
            assert session.scalars(select(TopupOrder)).all() == []
    finally:
        _truncate_all(postgres_engine)


def test_simultaneous_approvals_and_redemptions_credit_once(postgres_engine, postgres_url, tmp_path):
    """20 approvals of one payment and 50 redemptions of one PIN, each on its own connection."""
    settings = _settings(postgres_url, tmp_path, fast_path=True)
    try:
        pins = _prepare(postgres_engine, settings, tmp_path)
        fast_path = FastPath(settings, providers_from_settings(settings))
        cookie, token = _csrf_pair(settings)
        factory = make_session_factory(postgres_engine)

        async def race() -> tuple[list[Any], list[Any]]:
            reference = await _start_topup(fast_path, factory, key=b"race")
            form = f"decision=approve&csrf_token={token}".encode()
            approve_headers = [
                (b"content-type", b"application/x-www-form-urlencoded"),
                (b"cookie", f"airtime_csrf={cookie}".encode()),
            ]
            approvals = await asyncio.gather(
                *(
                    _outcome(
                        fast_path.approve_sandbox(_scope(f"/sandbox/pay/{reference}", approve_headers), form)
                    )
                    for _ in range(20)
                )
            )
            body = f'{{"pin": "{pins[0]["pin"]}", "msisdn": "{MSISDN}"}}'.encode()
            redemptions = await asyncio.gather(
                *(
                    _outcome(
                        fast_path.redeem_voucher(
                            _scope(REDEEM, [(b"idempotency-key", f"r{n}".encode()), JSON]), body
                        )
                    )
                    for n in range(50)
                )
            )
            await fast_path.close()
            return approvals, redemptions

        approvals, redemptions = asyncio.run(race())
        assert Counter(approvals) == {303: 1, "handed over": 19}
        assert Counter(redemptions) == {201: 1, "handed over": 49}
        with unit_of_work(factory) as session:
            orders = session.scalars(select(TopupOrder).order_by(TopupOrder.id)).all()
            assert [order.status for order in orders] == [OrderStatus.CREDITED] * 2
            line_balance = balance_of(session, _main_account(session))
            assert line_balance == 2000 + 1000
            assert not check_invariants(session)
    finally:
        _truncate_all(postgres_engine)


@pytest.mark.parametrize(
    "meanwhile",
    [
        "UPDATE lines SET validity_date = DATE '2027-03-01' WHERE msisdn = :msisdn",
        "UPDATE vouchers SET state = 'blocked' WHERE serial = :serial",
    ],
    ids=["line-validity-moved", "voucher-blocked"],
)
def test_a_redemption_whose_facts_changed_after_its_read_writes_nothing(
    postgres_engine, postgres_url, tmp_path, monkeypatch, meanwhile
):
    """A redemption reads without locks, then writes in one statement only if what it read
    still holds: a line whose validity moved, or a voucher blocked, in between is handed
    over with nothing written; the app then redeems on the new facts (or refuses)."""
    settings = _settings(postgres_url, tmp_path, fast_path=True)
    try:
        pins = _prepare(postgres_engine, settings, tmp_path)
        fast_path = FastPath(settings, providers_from_settings(settings))
        factory = make_session_factory(postgres_engine)
        choose_bonus = fastpath_module.choose_bonus

        def change_then_choose(*args: Any, **kwargs: Any) -> Any:
            # Runs between the read and the write, on a connection of its own.
            with postgres_engine.begin() as connection:
                connection.execute(text(meanwhile), {"msisdn": MSISDN, "serial": int(pins[0]["serial"])})
            return choose_bonus(*args, **kwargs)

        monkeypatch.setattr(fastpath_module, "choose_bonus", change_then_choose)
        body = f'{{"pin": "{pins[0]["pin"]}", "msisdn": "{MSISDN}"}}'.encode()

        async def redeem() -> int | str:
            try:
                return await _outcome(
                    fast_path.redeem_voucher(_scope(REDEEM, [(b"idempotency-key", b"moved"), JSON]), body)
                )
            finally:
                await fast_path.close()

        assert asyncio.run(redeem()) == "handed over"
        monkeypatch.setattr(fastpath_module, "choose_bonus", choose_bonus)
        with unit_of_work(factory) as session:
            assert session.scalars(select(TopupOrder)).all() == []
            assert balance_of(session, _main_account(session)) == 0
            assert session.scalar(text("SELECT count(*) FROM voucher_attempts")) == 0
            assert session.scalar(text("SELECT count(*) FROM notifications")) == 0
            assert (
                session.scalar(
                    select(Voucher.redeemed_order_id).where(Voucher.serial == int(pins[0]["serial"]))
                )
                is None
            )
        with TestClient(create_app(settings, run_background_jobs=False)) as client:
            answer = client.post(
                REDEEM, json={"pin": pins[0]["pin"], "msisdn": MSISDN}, headers={"Idempotency-Key": "moved"}
            )
        with unit_of_work(factory) as session:
            line = session.scalar(select(Line).where(Line.msisdn == MSISDN))
            if "lines" in meanwhile:
                assert answer.status_code == 201, answer.text
                order = session.scalar(select(TopupOrder))
                assert order.status == OrderStatus.CREDITED
                # Validity built on the date the line had moved to, not on the one first read.
                assert line.validity_date > datetime(2027, 3, 1).date()
                assert order.validity_after == line.validity_date.isoformat()
                assert balance_of(session, line.main_account_id) == order.amount_minor
            else:
                assert answer.status_code >= 400
                assert answer.headers["content-type"] == "application/problem+json"
                assert session.scalars(select(TopupOrder)).all() == []
                assert balance_of(session, line.main_account_id) == 0
            assert not check_invariants(session)
    finally:
        _truncate_all(postgres_engine)


def test_an_approval_whose_line_moved_after_its_read_writes_nothing(
    postgres_engine, postgres_url, tmp_path, monkeypatch
):
    """An approval reads without locks (or takes what its start read), then writes in one
    statement only if the order and the line are still as read: a validity that moved in
    between, each time it is read, hands it over with nothing written (payment pending, no
    event, order awaiting payment); the app then credits it on the new date."""
    settings = _settings(postgres_url, tmp_path, fast_path=True)
    try:
        _prepare(postgres_engine, settings, tmp_path)
        fast_path = FastPath(settings, providers_from_settings(settings))
        cookie, token = _csrf_pair(settings)
        factory = make_session_factory(postgres_engine)
        validity_after_topup = fastpath_module.validity_after_topup
        moves = iter(range(1, 10))

        def move_then_compute(*args: Any, **kwargs: Any) -> Any:
            # Runs between the read and the write, on a connection of its own.
            with postgres_engine.begin() as connection:
                connection.execute(
                    text("UPDATE lines SET validity_date = :date WHERE msisdn = :msisdn"),
                    {"date": datetime(2027, 3, next(moves)).date(), "msisdn": MSISDN},
                )
            return validity_after_topup(*args, **kwargs)

        headers = [
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"cookie", f"airtime_csrf={cookie}".encode()),
        ]

        async def create_then_approve() -> tuple[str, int | str]:
            try:
                reference = await _start_topup(fast_path, factory, key=b"moved")
                monkeypatch.setattr(fastpath_module, "validity_after_topup", move_then_compute)
                form = f"decision=approve&csrf_token={token}".encode()
                outcome = await _outcome(
                    fast_path.approve_sandbox(_scope(f"/sandbox/pay/{reference}", headers), form)
                )
                return reference, outcome
            finally:
                await fast_path.close()

        reference, outcome = asyncio.run(create_then_approve())
        monkeypatch.setattr(fastpath_module, "validity_after_topup", validity_after_topup)
        assert outcome == "handed over"
        with unit_of_work(factory) as session:
            order = session.scalar(select(TopupOrder))
            assert order.status == OrderStatus.AWAITING_PAYMENT
            assert balance_of(session, _main_account(session)) == 0
            assert session.scalar(text("SELECT count(*) FROM payment_events")) == 0
            assert session.scalar(text("SELECT status FROM sandbox_payments")) == "pending"
            assert session.scalar(text("SELECT count(*) FROM notifications")) == 0
        with TestClient(create_app(settings, run_background_jobs=False)) as client:
            client.cookies.set("airtime_csrf", cookie)
            approved = client.post(
                f"/sandbox/pay/{reference}",
                data={"decision": "approve", "csrf_token": token},
                follow_redirects=False,
            )
        assert approved.status_code == 303
        with unit_of_work(factory) as session:
            order = session.scalar(select(TopupOrder))
            line = session.scalar(select(Line).where(Line.msisdn == MSISDN))
            assert order.status == OrderStatus.CREDITED
            assert line.validity_date > datetime(2027, 3, 2).date()
            assert order.validity_after == line.validity_date.isoformat()
            assert balance_of(session, line.main_account_id) == 2000
            assert not check_invariants(session)
    finally:
        _truncate_all(postgres_engine)


def test_an_approval_takes_what_its_start_read_and_reads_again_what_moved(
    postgres_engine, postgres_url, tmp_path
):
    """An approval of a top-up started in the same process writes in one statement, on the
    line and plan its start read. If the line moved on to another plan in between, that
    statement writes nothing; the approval reads again and credits by the new plan's rule."""
    settings = _settings(postgres_url, tmp_path, fast_path=True)
    try:
        _prepare(postgres_engine, settings, tmp_path)
        fast_path = FastPath(settings, providers_from_settings(settings))
        sent: list[str] = []
        fast_path.on_connect.append(
            lambda connection: connection.add_query_logger(lambda query: sent.append(query.query))
        )
        cookie, token = _csrf_pair(settings)
        factory = make_session_factory(postgres_engine)
        headers = [
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"cookie", f"airtime_csrf={cookie}".encode()),
        ]
        form = f"decision=approve&csrf_token={token}".encode()

        async def start_then_approve(key: bytes) -> tuple[int, int | str]:
            reference = await _start_topup(fast_path, factory, key=key)
            if key == b"replanned":
                with unit_of_work(factory) as session:
                    longer = factories.plan(session, code="LONG")
                    longer.validity_tiers, longer.validity_days_max = [[500, 365]], 400
                    session.scalar(select(Line).where(Line.msisdn == MSISDN)).plan_id = longer.id
            sent.clear()
            outcome = await _outcome(
                fast_path.approve_sandbox(_scope(f"/sandbox/pay/{reference}", headers), form)
            )
            return len(sent), outcome

        async def both() -> list[tuple[int, int | str]]:
            try:
                # The first also looks up the operator's accounts and the statements' types.
                return [await start_then_approve(key) for key in (b"first", b"kept", b"replanned")]
            finally:
                await fast_path.close()

        with time_machine.travel(MOMENT, tick=False):
            _, kept, replanned = asyncio.run(both())
        assert kept == (1, 303)  # the guarded statement only
        assert replanned == (3, 303)  # the statement that found another plan, a read, the statement
        with unit_of_work(factory) as session:
            orders = session.scalars(select(TopupOrder).order_by(TopupOrder.id)).all()
            line = session.scalar(select(Line).where(Line.msisdn == MSISDN))
            assert [order.status for order in orders] == [OrderStatus.CREDITED] * 3
            # The first plan keeps a line at most 180 days ahead; the new one adds 365 days to
            # its validity, up to 400 days ahead.
            assert [order.validity_after for order in orders[:2]] == ["2027-05-01", "2027-05-01"]
            assert line.validity_date == datetime(2027, 12, 7).date()
            assert orders[2].validity_after == line.validity_date.isoformat()
            assert balance_of(session, line.main_account_id) == 6000
            assert not check_invariants(session)
    finally:
        _truncate_all(postgres_engine)


REDEEM = "/api/v1/vouchers/redeem"
JSON = (b"content-type", b"application/json")


async def _outcome(call: Any) -> int | str:
    try:
        status, _, _ = await call
    except HandOver:
        return "handed over"
    return int(status)


def _scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": path, "headers": headers, "client": ("10.0.0.9", 5000)}


async def _start_topup(fast_path: FastPath, factory: Any, *, key: bytes) -> str:
    """A £20 API top-up started through the fast path; its sandbox payment's reference."""
    status, _, _ = await fast_path.create_topup(
        _scope("/api/v1/topups", [(b"idempotency-key", key), JSON]),
        b'{"msisdn": "+447911123456", "amount_minor": 2000}',
    )
    assert status == 201
    with unit_of_work(factory) as session:
        return str(session.scalar(select(TopupOrder.payment_reference).order_by(TopupOrder.id.desc())))


def _csrf_pair(settings: Settings) -> tuple[str, str]:
    """A signed CSRF cookie and the token it holds, as the sandbox page hands them out."""
    from airtime.web.context import CSRF_COOKIE, _signer

    token = "race-token"
    return _signer(settings, CSRF_COOKIE).sign(token).decode(), token


def _main_account(session) -> int:
    from airtime.accounts.models import Line

    line = session.scalar(select(Line).where(Line.msisdn == MSISDN))
    return line.main_account_id


pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def test_an_unreachable_fast_path_hands_over_and_recovers(postgres_engine, postgres_url, tmp_path):
    """With its connections failing, the fast path hands requests to the app (they are
    idempotent by key, so even a commit that went through is safe to do again)."""
    settings = _settings(postgres_url, tmp_path, fast_path=True)
    try:
        _prepare(postgres_engine, settings, tmp_path)
        app = create_app(settings, run_background_jobs=False)
        fast_path = app.state.fast_path
        reachable, fast_path._dsn = fast_path._dsn, "postgresql://postgres@127.0.0.1:1/nowhere"
        before = _served()
        with TestClient(app) as client:
            body = {"msisdn": MSISDN, "amount_minor": 1000}
            handed = client.post("/api/v1/topups", json=body, headers={"Idempotency-Key": "down"})
            assert handed.status_code == 201, handed.text
            fast_path._dsn = reachable
            served = client.post("/api/v1/topups", json=body, headers={"Idempotency-Key": "up"})
            assert served.status_code == 201
        after = _served()
        key = ("/api/v1/topups", "handed_over")
        assert after[key] - before.get(key, 0) == 1
        assert after[("/api/v1/topups", "served")] - before.get(("/api/v1/topups", "served"), 0) == 1
    finally:
        _truncate_all(postgres_engine)


def _stripe_walk(engine: Engine, postgres_url: str, tmp_path: Path, *, fast_path: bool) -> str:
    """A web top-up paid by card: Stripe's signed "paid" event delivered twice."""
    from tests.fakes.stripe_api import SECRET_KEY, WEBHOOK_SECRET, FakeStripe
    from tests.integration.test_stripe_provider import deliver

    fake = FakeStripe()
    settings = _settings(postgres_url, tmp_path, fast_path=fast_path).model_copy(
        update={
            "stripe_secret_key": SECRET_KEY,
            "stripe_webhook_secret": WEBHOOK_SECRET,
            "stripe_api_base": fake.url,
        }
    )
    factory = make_session_factory(engine)
    try:
        _prepare(engine, settings, tmp_path)
        with unit_of_work(factory) as session:
            operator_account(session, kind=AccountKind.PAYMENT_CLEARING, currency="GBP", qualifier="stripe")
        app = create_app(settings, run_background_jobs=False)
        with TestClient(app) as client:
            provider = app.state.payment_providers["stripe"]
            with unit_of_work(factory) as session:
                line = session.scalar(select(Line).where(Line.msisdn == MSISDN))
                quote = topups.quote(session, line=line, channel="web", amount_minor=2000)
                order, _ = topups.create_order(
                    session,
                    quote=quote,
                    channel="web",
                    provider=provider,
                    idempotency_scope="test",
                    idempotency_key="card-1",
                    settings=settings,
                    receipt_email="card@example.com",
                )
            event = fake.event(
                "checkout.session.completed", fake.pay(order.payment_reference), event_id="evt_same"
            )
            answers = [deliver(client, event).json() for _ in range(2)]
        tables = _tables(engine)
        tokens = [
            token
            for row in tables["topup_orders"]
            for token in (row["public_id"], row["payment_reference"], row["payment_redirect_url"])
            if token
        ]
        for row in tables["payment_events"]:  # Stripe's ids and times in the stored event
            tokens += [str(row["payload"].get("created")), *_stripe_ids(row["payload"].get("object"))]
        assert not check_invariants_problems(engine)
        written = _without_random_tokens([answers, tables], tokens)
        # The clock runs here (Stripe signs with the real time): compare the rows, not the times.
        return re.sub(r"datetime\.datetime\((?:[^()]|\([^()]*\))*\)", "<time>", written)
    finally:
        fake.close()
        _truncate_all(engine)


def _stripe_ids(value: Any) -> list[str]:
    """Stripe's object ids (``cs_…``, ``pi_…``, ``ch_…``) anywhere in a stored payload."""
    if isinstance(value, dict):
        return [text for item in value.values() for text in _stripe_ids(item)]
    if isinstance(value, list):
        return [text for item in value for text in _stripe_ids(item)]
    return [value] if isinstance(value, str) and re.fullmatch(r"[a-z]+(_[A-Za-z0-9]+)+", value) else []


def test_a_stripe_paid_event_writes_what_the_orm_path_writes(postgres_engine, postgres_url, tmp_path):
    before = _served()
    fast = _stripe_walk(postgres_engine, postgres_url, tmp_path / "fast", fast_path=True)
    after = _served()
    slow = _stripe_walk(postgres_engine, postgres_url, tmp_path / "slow", fast_path=False)
    route = "/webhooks/{provider_name}"
    assert after[(route, "served")] - before.get((route, "served"), 0) == 1
    assert after[(route, "handed_over")] - before.get((route, "handed_over"), 0) == 1  # the duplicate
    assert "'status': 'processed'" in fast and "'status': 'duplicate'" in fast
    assert "'event_type': 'checkout.session.completed'" in fast and "'status': 'credited'" in fast
    assert fast == slow


def test_a_body_longer_than_the_fast_path_reads_reaches_the_app_whole():
    """A body over BODY_LENGTH_MAX, in chunks: the fast path stops reading, and the app gets
    every byte, in order (what was read first, then the rest from the server)."""
    from airtime.fastpath import BODY_LENGTH_MAX, _read_body, _replay

    chunks = [bytes([65 + index]) * 5000 for index in range(6)]  # 30,000 bytes in six parts
    messages = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]

    async def whole() -> tuple[bool, bytes]:
        incoming = iter(messages)

        async def receive() -> dict[str, Any]:
            return next(incoming)

        body, complete = await _read_body(receive)
        assert len(body) > BODY_LENGTH_MAX and not complete
        replayed, received = _replay(body, complete, receive), b""
        while True:
            message = await replayed()
            received += message["body"]
            if not message["more_body"]:
                return complete, received

    complete, received = asyncio.run(whole())
    assert not complete and received == b"".join(chunks)
