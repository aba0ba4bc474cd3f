"""The ledger on SQLite and PostgreSQL: refusals change nothing, replays return the first answer.

Every refusal test takes a snapshot of the whole ledger (transfers, entries, kept and derived
balances) before the attempt and asserts the snapshot is identical after it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from airtime.clock import utcnow
from airtime.errors import (
    AppError,
    IdempotencyConflict,
    InsufficientFunds,
    NotFound,
    ValidationFailed,
)
from airtime.ledger import service as ledger_service
from airtime.ledger.models import AccountKind, Entry, LedgerAccount, Transfer
from airtime.ledger.service import (
    LEGS_PER_TRANSFER_MAX,
    TRANSFER_ID_LENGTH_MAX,
    Leg,
    TransferRequest,
    account_id_for,
    balance_of,
    check_invariants,
    open_account,
    post_transfer,
    post_transfers,
)
from airtime.money import AMOUNT_MINOR_MAX

UnitOfWork = Callable[[], AbstractContextManager[Session]]
FUNDED_MINOR = 1000


@dataclass(frozen=True)
class Accounts:
    clearing: int  # operator account: untracked, unbounded
    revenue: int  # operator account: untracked, unbounded
    wallet: int  # prepaid customer balance, floor 0, funded with FUNDED_MINOR
    other_wallet: int  # prepaid customer balance, floor 0, empty
    credit_line: int  # postpaid-style balance with a 10.00 credit limit (floor -1000)
    wallet_eur: int  # a prepaid balance in another currency


@pytest.fixture
def accounts(uow: UnitOfWork) -> Accounts:
    with uow() as session:
        opened = Accounts(
            clearing=open_account(
                session,
                code="clearing:sandbox:USD",
                kind=AccountKind.PAYMENT_CLEARING,
                currency="USD",
                balance_tracked=False,
                floor_minor=None,
            ),
            revenue=open_account(
                session,
                code="revenue:usage:USD",
                kind=AccountKind.REVENUE,
                currency="USD",
                balance_tracked=False,
                floor_minor=None,
            ),
            wallet=open_account(
                session,
                code="line:1:main",
                kind=AccountKind.CUSTOMER_MAIN,
                currency="USD",
                balance_tracked=True,
                floor_minor=0,
            ),
            other_wallet=open_account(
                session,
                code="line:2:main",
                kind=AccountKind.CUSTOMER_MAIN,
                currency="USD",
                balance_tracked=True,
                floor_minor=0,
            ),
            credit_line=open_account(
                session,
                code="line:3:main",
                kind=AccountKind.CUSTOMER_MAIN,
                currency="USD",
                balance_tracked=True,
                floor_minor=-1000,
            ),
            wallet_eur=open_account(
                session,
                code="line:4:main",
                kind=AccountKind.CUSTOMER_MAIN,
                currency="EUR",
                balance_tracked=True,
                floor_minor=0,
            ),
        )
    with uow() as session:
        post_transfer(
            session,
            transfer_id="fund-wallet",
            kind="topup",
            currency="USD",
            legs=[Leg(opened.clearing, -FUNDED_MINOR), Leg(opened.wallet, FUNDED_MINOR)],
        )
    return opened


def snapshot(session: Session) -> dict[str, Any]:
    """Everything a refused transfer must leave untouched."""
    return {
        "transfers": sorted(
            tuple(row)
            for row in session.execute(
                select(
                    Transfer.id, Transfer.kind, Transfer.currency, Transfer.content_hash, Transfer.created_at
                )
            )
        ),
        "entries": sorted(
            tuple(row)
            for row in session.execute(
                select(Entry.id, Entry.transfer_id, Entry.account_id, Entry.amount_minor)
            )
        ),
        "balances": {
            code: (kept, balance_of(session, account_id))
            for account_id, code, kept in session.execute(
                select(LedgerAccount.id, LedgerAccount.code, LedgerAccount.balance_minor)
            )
        },
    }


def read(uow: UnitOfWork, function: Callable[[Session], Any]) -> Any:
    with uow() as session:
        return function(session)


def transfer_exists(uow: UnitOfWork, transfer_id: str) -> bool:
    return read(uow, lambda session: session.get(Transfer, transfer_id) is not None)


def assert_sound(uow: UnitOfWork) -> None:
    assert read(uow, check_invariants) == []


def assert_refused_without_trace(
    uow: UnitOfWork,
    attempt: Callable[[Session], object],
    error: type[AppError],
    *,
    transfer_ids: tuple[str, ...] = (),
    match: str | None = None,
) -> AppError:
    """Run ``attempt`` in its own unit of work, expect ``error``, and prove nothing changed."""
    before = read(uow, snapshot)
    with pytest.raises(error, match=match) as raised, uow() as session:
        attempt(session)
    assert read(uow, snapshot) == before
    for transfer_id in transfer_ids:
        assert not transfer_exists(uow, transfer_id)
    assert_sound(uow)
    return raised.value


# ---------------------------------------------------------------------------------------------
# Posting and reading balances


def test_a_transfer_moves_money_and_keeps_the_ledger_sound(uow: UnitOfWork, accounts: Accounts) -> None:
    with uow() as session:
        posted = post_transfer(
            session,
            transfer_id="spend-1",
            kind="usage",
            currency="USD",
            legs=[Leg(accounts.wallet, -250), Leg(accounts.revenue, 250)],
            description="Data bundle",
            details={"bundle": "1GB"},
        )
    assert posted.transfer_id == "spend-1"
    assert not posted.replayed
    with uow() as session:
        assert balance_of(session, accounts.wallet) == FUNDED_MINOR - 250
        assert balance_of(session, accounts.revenue) == 250
        assert balance_of(session, accounts.clearing) == -FUNDED_MINOR
        assert balance_of(session, accounts.other_wallet) == 0
        transfer = session.get(Transfer, "spend-1")
        assert transfer is not None
        assert transfer.created_at == posted.created_at
        assert transfer.details == {"bundle": "1GB"}
        entries = session.execute(
            select(Entry.account_id, Entry.amount_minor).where(Entry.transfer_id == "spend-1")
        ).all()
        assert sorted(entries) == sorted([(accounts.wallet, -250), (accounts.revenue, 250)])
        assert check_invariants(session) == []


def test_a_transfer_can_have_several_legs(uow: UnitOfWork, accounts: Accounts) -> None:
    with uow() as session:
        post_transfer(
            session,
            transfer_id="topup-with-bonus",
            kind="topup",
            currency="USD",
            legs=[
                Leg(accounts.clearing, -500),
                Leg(accounts.revenue, -50),
                Leg(accounts.other_wallet, 500),
                Leg(accounts.credit_line, 50),
            ],
        )
    with uow() as session:
        assert balance_of(session, accounts.other_wallet) == 500
        assert balance_of(session, accounts.credit_line) == 50
        assert balance_of(session, accounts.revenue) == -50
        assert check_invariants(session) == []


def test_open_account_returns_the_existing_account_for_a_known_code(
    uow: UnitOfWork, accounts: Accounts
) -> None:
    with uow() as session:
        again = open_account(
            session,
            code="line:1:main",
            kind=AccountKind.CUSTOMER_MAIN,
            currency="USD",
            balance_tracked=True,
            floor_minor=0,
        )
        assert again == accounts.wallet
        assert account_id_for(session, "line:1:main") == accounts.wallet
    with pytest.raises(ValidationFailed, match="already exists in USD"), uow() as session:
        open_account(
            session,
            code="line:1:main",
            kind=AccountKind.CUSTOMER_MAIN,
            currency="EUR",
            balance_tracked=True,
            floor_minor=0,
        )
    with pytest.raises(NotFound), uow() as session:
        account_id_for(session, "line:nobody:main")
    with pytest.raises(NotFound), uow() as session:
        balance_of(session, 987_654)


# ---------------------------------------------------------------------------------------------
# Refusals change nothing


def _legs_case(name: str, build: Callable[[Accounts], list[Leg]], currency: str = "USD") -> Any:
    return pytest.param(build, currency, id=name)


REFUSED_TRANSFERS = [
    _legs_case("no legs", lambda a: []),
    _legs_case("one leg", lambda a: [Leg(a.wallet, 100)]),
    _legs_case("unbalanced", lambda a: [Leg(a.clearing, -100), Leg(a.wallet, 99)]),
    _legs_case(
        "unbalanced three legs", lambda a: [Leg(a.clearing, -100), Leg(a.wallet, 50), Leg(a.revenue, 49)]
    ),
    _legs_case("zero amounts", lambda a: [Leg(a.clearing, 0), Leg(a.wallet, 0)]),
    _legs_case("one zero leg", lambda a: [Leg(a.clearing, -100), Leg(a.wallet, 100), Leg(a.revenue, 0)]),
    _legs_case("duplicate account", lambda a: [Leg(a.wallet, -100), Leg(a.wallet, 100)]),
    _legs_case(
        "duplicate account among others",
        lambda a: [Leg(a.clearing, -200), Leg(a.wallet, 100), Leg(a.wallet, 100)],
    ),
    _legs_case("float amount", lambda a: [Leg(a.clearing, -1.5), Leg(a.wallet, 1.5)]),  # type: ignore[arg-type]
    _legs_case("bool amount", lambda a: [Leg(a.clearing, -1), Leg(a.wallet, True)]),  # type: ignore[arg-type]
    _legs_case(
        "amount too large",
        lambda a: [Leg(a.clearing, -(AMOUNT_MINOR_MAX + 1)), Leg(a.wallet, AMOUNT_MINOR_MAX + 1)],
    ),
    _legs_case(
        "too many legs",
        lambda a: (
            [Leg(a.clearing, -LEGS_PER_TRANSFER_MAX)]
            + [Leg(10_000 + index, 1) for index in range(LEGS_PER_TRANSFER_MAX)]
        ),
    ),
    _legs_case("account in another currency", lambda a: [Leg(a.clearing, -100), Leg(a.wallet_eur, 100)]),
    _legs_case(
        "transfer currency differs from accounts",
        lambda a: [Leg(a.clearing, -100), Leg(a.wallet, 100)],
        "EUR",
    ),
    _legs_case("unknown currency", lambda a: [Leg(a.clearing, -100), Leg(a.wallet, 100)], "ZZZ"),
]


@pytest.mark.parametrize(("build_legs", "currency"), REFUSED_TRANSFERS)
def test_invalid_transfers_are_refused_and_change_nothing(
    uow: UnitOfWork, accounts: Accounts, build_legs: Callable[[Accounts], list[Leg]], currency: str
) -> None:
    legs = build_legs(accounts)
    assert_refused_without_trace(
        uow,
        lambda session: post_transfer(
            session, transfer_id="bad-1", kind="topup", currency=currency, legs=legs
        ),
        ValidationFailed,
        transfer_ids=("bad-1",),
    )


def test_a_transfer_to_an_unknown_account_is_refused_and_changes_nothing(
    uow: UnitOfWork, accounts: Accounts
) -> None:
    assert_refused_without_trace(
        uow,
        lambda session: post_transfer(
            session,
            transfer_id="to-nowhere",
            kind="topup",
            currency="USD",
            legs=[Leg(accounts.clearing, -100), Leg(987_654, 100)],
        ),
        NotFound,
        transfer_ids=("to-nowhere",),
        match="987654",
    )


@pytest.mark.parametrize("transfer_id", ["", "x" * (TRANSFER_ID_LENGTH_MAX + 1)])
def test_transfer_ids_are_bounded(uow: UnitOfWork, accounts: Accounts, transfer_id: str) -> None:
    assert_refused_without_trace(
        uow,
        lambda session: post_transfer(
            session,
            transfer_id=transfer_id,
            kind="topup",
            currency="USD",
            legs=[Leg(accounts.clearing, -100), Leg(accounts.wallet, 100)],
        ),
        ValidationFailed,
    )


def test_a_refused_transfer_rolls_back_the_whole_unit_of_work(uow: UnitOfWork, accounts: Accounts) -> None:
    def attempt(session: Session) -> None:
        post_transfer(
            session,
            transfer_id="good-first",
            kind="topup",
            currency="USD",
            legs=[Leg(accounts.clearing, -100), Leg(accounts.other_wallet, 100)],
        )
        post_transfer(
            session,
            transfer_id="bad-second",
            kind="usage",
            currency="USD",
            legs=[Leg(accounts.wallet, -(FUNDED_MINOR + 1)), Leg(accounts.revenue, FUNDED_MINOR + 1)],
        )

    assert_refused_without_trace(uow, attempt, InsufficientFunds, transfer_ids=("good-first", "bad-second"))


# ---------------------------------------------------------------------------------------------
# Idempotency: the transfer id is the key


def test_replaying_a_transfer_returns_the_first_result_and_changes_nothing(
    uow: UnitOfWork, accounts: Accounts
) -> None:
    legs = [Leg(accounts.clearing, -300), Leg(accounts.other_wallet, 300)]
    with uow() as session:
        first = post_transfer(session, transfer_id="topup-42", kind="topup", currency="USD", legs=legs)
    assert not first.replayed
    before = read(uow, snapshot)

    # Later, a retried request: same content, legs in another order, another description.
    with time_machine.travel(utcnow() + timedelta(hours=1), tick=False), uow() as session:
        again = post_transfer(
            session,
            transfer_id="topup-42",
            kind="topup",
            currency="USD",
            legs=list(reversed(legs)),
            description="retried by the client",
            details={"attempt": 2},
        )
    assert again.replayed
    assert again.transfer_id == "topup-42"
    assert again.created_at == first.created_at
    assert read(uow, snapshot) == before
    assert read(uow, lambda session: balance_of(session, accounts.other_wallet)) == 300

    # The same id twice in one unit of work moves the money once too.
    with uow() as session:
        third = post_transfer(session, transfer_id="topup-43", kind="topup", currency="USD", legs=legs)
        fourth = post_transfer(session, transfer_id="topup-43", kind="topup", currency="USD", legs=legs)
    assert not third.replayed
    assert fourth.replayed
    assert fourth.created_at == third.created_at
    assert read(uow, lambda session: balance_of(session, accounts.other_wallet)) == 600
    assert_sound(uow)


def test_replaying_a_debit_that_emptied_the_balance_still_succeeds(
    uow: UnitOfWork, accounts: Accounts
) -> None:
    legs = [Leg(accounts.wallet, -FUNDED_MINOR), Leg(accounts.revenue, FUNDED_MINOR)]
    with uow() as session:
        first = post_transfer(session, transfer_id="spend-all", kind="usage", currency="USD", legs=legs)
    # The balance is now 0; a replay must return the first answer, not InsufficientFunds.
    with uow() as session:
        again = post_transfer(session, transfer_id="spend-all", kind="usage", currency="USD", legs=legs)
    assert again.replayed
    assert again.created_at == first.created_at
    assert read(uow, lambda session: balance_of(session, accounts.wallet)) == 0
    assert_sound(uow)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"amount_minor": 301}, id="different amount"),
        pytest.param({"kind": "refund"}, id="different kind"),
        pytest.param({"target": "credit_line"}, id="different account"),
        pytest.param({"currency": "EUR"}, id="different currency"),
    ],
)
def test_the_same_id_with_different_content_is_refused_and_changes_nothing(
    uow: UnitOfWork, accounts: Accounts, change: dict[str, Any]
) -> None:
    with uow() as session:
        post_transfer(
            session,
            transfer_id="topup-7",
            kind="topup",
            currency="USD",
            legs=[Leg(accounts.clearing, -300), Leg(accounts.other_wallet, 300)],
        )
    amount_minor = change.get("amount_minor", 300)
    target = getattr(accounts, change.get("target", "other_wallet"))
    currency = change.get("currency", "USD")
    source = accounts.clearing
    if currency == "EUR":
        with uow() as session:
            source = open_account(
                session,
                code="clearing:sandbox:EUR",
                kind=AccountKind.PAYMENT_CLEARING,
                currency="EUR",
                balance_tracked=False,
                floor_minor=None,
            )
        target = accounts.wallet_eur
    assert_refused_without_trace(
        uow,
        lambda session: post_transfer(
            session,
            transfer_id="topup-7",
            kind=change.get("kind", "topup"),
            currency=currency,
            legs=[Leg(source, -amount_minor), Leg(target, amount_minor)],
        ),
        IdempotencyConflict,
        match="topup-7",
    )
    assert transfer_exists(uow, "topup-7")


def test_the_same_id_twice_in_one_batch_with_different_content_is_refused(
    uow: UnitOfWork, accounts: Accounts
) -> None:
    requests = [
        TransferRequest("dup", "topup", "USD", (Leg(accounts.clearing, -1), Leg(accounts.other_wallet, 1))),
        TransferRequest("dup", "topup", "USD", (Leg(accounts.clearing, -2), Leg(accounts.other_wallet, 2))),
    ]
    assert_refused_without_trace(
        uow, lambda session: post_transfers(session, requests), IdempotencyConflict, transfer_ids=("dup",)
    )


def test_a_refused_transfer_id_can_be_used_again(uow: UnitOfWork, accounts: Accounts) -> None:
    """A refusal leaves no trace, so the client may retry the same id once funds arrive."""
    legs = [Leg(accounts.other_wallet, -500), Leg(accounts.revenue, 500)]
    assert_refused_without_trace(
        uow,
        lambda session: post_transfer(
            session, transfer_id="buy-bundle", kind="usage", currency="USD", legs=legs
        ),
        InsufficientFunds,
        transfer_ids=("buy-bundle",),
    )
    with uow() as session:
        post_transfer(
            session,
            transfer_id="fund-other",
            kind="topup",
            currency="USD",
            legs=[Leg(accounts.clearing, -500), Leg(accounts.other_wallet, 500)],
        )
    with uow() as session:
        posted = post_transfer(session, transfer_id="buy-bundle", kind="usage", currency="USD", legs=legs)
    assert not posted.replayed
    assert read(uow, lambda session: balance_of(session, accounts.other_wallet)) == 0
    assert_sound(uow)


# ---------------------------------------------------------------------------------------------
# Floors: prepaid balances and credit limits


def test_a_prepaid_balance_cannot_go_below_zero(uow: UnitOfWork, accounts: Accounts) -> None:
    error = assert_refused_without_trace(
        uow,
        lambda session: post_transfer(
            session,
            transfer_id="overspend",
            kind="usage",
            currency="USD",
            legs=[Leg(accounts.wallet, -(FUNDED_MINOR + 1)), Leg(accounts.revenue, FUNDED_MINOR + 1)],
        ),
        InsufficientFunds,
        transfer_ids=("overspend",),
    )
    assert str(error).startswith("Insufficient funds: $10.00 available, $10.01 needed")
    # Exactly the balance is allowed.
    with uow() as session:
        post_transfer(
            session,
            transfer_id="spend-exactly",
            kind="usage",
            currency="USD",
            legs=[Leg(accounts.wallet, -FUNDED_MINOR), Leg(accounts.revenue, FUNDED_MINOR)],
        )
    assert read(uow, lambda session: balance_of(session, accounts.wallet)) == 0
    assert_refused_without_trace(
        uow,
        lambda session: post_transfer(
            session,
            transfer_id="one-cent-more",
            kind="usage",
            currency="USD",
            legs=[Leg(accounts.wallet, -1), Leg(accounts.revenue, 1)],
        ),
        InsufficientFunds,
        match=r"\$0.00 available, \$0.01 needed",
    )


def test_the_floor_is_checked_on_every_guarded_leg(uow: UnitOfWork, accounts: Accounts) -> None:
    """A multi-leg transfer fails if any one guarded account would go below its floor."""
    assert_refused_without_trace(
        uow,
        lambda session: post_transfer(
            session,
            transfer_id="split-spend",
            kind="usage",
            currency="USD",
            legs=[Leg(accounts.wallet, -100), Leg(accounts.other_wallet, -1), Leg(accounts.revenue, 101)],
        ),
        InsufficientFunds,
        transfer_ids=("split-spend",),
    )


def test_operator_accounts_have_no_floor(uow: UnitOfWork, accounts: Accounts) -> None:
    with uow() as session:
        post_transfer(
            session,
            transfer_id="big-topup",
            kind="topup",
            currency="USD",
            legs=[Leg(accounts.clearing, -AMOUNT_MINOR_MAX), Leg(accounts.other_wallet, AMOUNT_MINOR_MAX)],
        )
    with uow() as session:
        assert balance_of(session, accounts.clearing) == -AMOUNT_MINOR_MAX - FUNDED_MINOR
        assert check_invariants(session) == []


def test_a_credit_limit_allows_going_down_to_the_limit_only(uow: UnitOfWork, accounts: Accounts) -> None:
    def spend(transfer_id: str, amount_minor: int) -> Callable[[Session], object]:
        return lambda session: post_transfer(
            session,
            transfer_id=transfer_id,
            kind="usage",
            currency="USD",
            legs=[Leg(accounts.credit_line, -amount_minor), Leg(accounts.revenue, amount_minor)],
        )

    with uow() as session:
        spend("credit-1", 600)(session)
    assert read(uow, lambda session: balance_of(session, accounts.credit_line)) == -600
    assert_refused_without_trace(uow, spend("credit-2", 401), InsufficientFunds, transfer_ids=("credit-2",))
    with uow() as session:
        spend("credit-3", 400)(session)
    assert read(uow, lambda session: balance_of(session, accounts.credit_line)) == -1000
    assert_refused_without_trace(uow, spend("credit-4", 1), InsufficientFunds, transfer_ids=("credit-4",))
    # Paying back raises the balance again.
    with uow() as session:
        post_transfer(
            session,
            transfer_id="repay",
            kind="topup",
            currency="USD",
            legs=[Leg(accounts.clearing, -250), Leg(accounts.credit_line, 250)],
        )
    assert read(uow, lambda session: balance_of(session, accounts.credit_line)) == -750
    assert_sound(uow)


def test_the_database_itself_refuses_a_balance_below_its_floor(uow: UnitOfWork, accounts: Accounts) -> None:
    """The check constraint is the last word, should code outside the service write balances."""
    with pytest.raises(IntegrityError), uow() as session:
        session.execute(
            update(LedgerAccount).where(LedgerAccount.id == accounts.wallet).values(balance_minor=-1)
        )
    assert read(uow, lambda session: balance_of(session, accounts.wallet)) == FUNDED_MINOR


# ---------------------------------------------------------------------------------------------
# Batches are atomic


def _request(
    transfer_id: str, source: int, target: int, amount_minor: int, kind: str = "usage"
) -> TransferRequest:
    return TransferRequest(
        transfer_id=transfer_id,
        kind=kind,
        currency="USD",
        legs=(Leg(source, -amount_minor), Leg(target, amount_minor)),
    )


def test_a_batch_posts_all_transfers_in_order(uow: UnitOfWork, accounts: Accounts) -> None:
    with uow() as session:
        results = post_transfers(
            session,
            [
                _request("batch-1", accounts.wallet, accounts.other_wallet, 600),
                _request("fund-wallet", accounts.clearing, accounts.wallet, FUNDED_MINOR, kind="topup"),
                # Only possible because batch-1 credited other_wallet earlier in the batch.
                _request("batch-2", accounts.other_wallet, accounts.revenue, 600),
            ],
        )
    assert [(result.transfer_id, result.replayed) for result in results] == [
        ("batch-1", False),
        ("fund-wallet", True),
        ("batch-2", False),
    ]
    with uow() as session:
        assert balance_of(session, accounts.wallet) == FUNDED_MINOR - 600
        assert balance_of(session, accounts.other_wallet) == 0
        assert balance_of(session, accounts.revenue) == 600
        assert check_invariants(session) == []
    with uow() as session:
        assert post_transfers(session, []) == []


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        # batch-1 credits other_wallet with 100 first; 101 is one more than it then holds.
        pytest.param(
            lambda a: _request("batch-bad", a.other_wallet, a.revenue, 101), InsufficientFunds, id="floor"
        ),
        pytest.param(
            lambda a: TransferRequest("batch-bad", "usage", "USD", (Leg(a.wallet, -1), Leg(a.revenue, 2))),
            ValidationFailed,
            id="unbalanced",
        ),
        pytest.param(lambda a: _request("batch-bad", a.clearing, 987_654, 1), NotFound, id="unknown account"),
        pytest.param(
            lambda a: _request("batch-bad", a.clearing, a.wallet_eur, 1), ValidationFailed, id="currency"
        ),
        pytest.param(
            lambda a: _request("fund-wallet", a.clearing, a.wallet, FUNDED_MINOR + 1, kind="topup"),
            IdempotencyConflict,
            id="conflicting replay",
        ),
        # Each transfer alone fits the balance, together they do not.
        pytest.param(
            lambda a: _request("batch-bad", a.wallet, a.revenue, 501), InsufficientFunds, id="cumulative"
        ),
    ],
)
def test_one_bad_transfer_refuses_the_whole_batch(
    uow: UnitOfWork, accounts: Accounts, bad: Callable[[Accounts], TransferRequest], error: type[AppError]
) -> None:
    requests = [
        _request("batch-1", accounts.clearing, accounts.other_wallet, 100, kind="topup"),
        _request("batch-2", accounts.wallet, accounts.revenue, 500),
        _request("batch-3", accounts.clearing, accounts.credit_line, 100, kind="topup"),
        bad(accounts),
    ]
    assert_refused_without_trace(
        uow,
        lambda session: post_transfers(session, requests),
        error,
        transfer_ids=("batch-1", "batch-2", "batch-3", "batch-bad"),
    )


# ---------------------------------------------------------------------------------------------
# The invariant checker finds what it is meant to find


def test_check_invariants_reports_a_drifted_balance_and_an_unbalanced_transfer(
    uow: UnitOfWork, accounts: Accounts
) -> None:
    assert_sound(uow)
    with uow() as session:
        session.execute(
            update(LedgerAccount).where(LedgerAccount.id == accounts.other_wallet).values(balance_minor=5)
        )
        session.execute(
            Entry.__table__.insert().values(
                transfer_id="fund-wallet", account_id=accounts.revenue, amount_minor=7, created_at=utcnow()
            )
        )
    problems = read(uow, check_invariants)
    assert "account line:2:main keeps 5 but its entries sum to 0" in problems
    assert "transfer fund-wallet sums to 7" in problems
    assert "all USD entries sum to 7" in problems


# ---------------------------------------------------------------------------------------------
# Large batches


def test_a_batch_touching_more_accounts_than_one_in_list_takes_is_posted_in_chunks(
    uow: UnitOfWork, accounts: Accounts, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids go to the database in chunks (a real batch can exceed 65,535 parameters); with tiny
    chunks, lookups, locks, replays and floor checks must still see every account and transfer."""
    monkeypatch.setattr(ledger_service, "_IN_LIST_SIZE_MAX", 2)
    with uow() as session:
        wallets = [
            open_account(
                session,
                code=f"line:chunk-{number}:main",
                kind=AccountKind.CUSTOMER_MAIN,
                currency="USD",
                balance_tracked=True,
                floor_minor=0,
            )
            for number in range(7)
        ]
    requests = [
        _request(f"chunk-{number}", accounts.clearing, wallet, 100 + number)
        for number, wallet in enumerate(wallets)
    ]
    with uow() as session:
        first = post_transfers(session, requests[:3])
    with uow() as session:
        results = post_transfers(session, requests)
    assert [result.replayed for result in results] == [True] * 3 + [False] * 4
    assert [result.created_at for result in results[:3]] == [result.created_at for result in first]
    with uow() as session:
        assert [balance_of(session, wallet) for wallet in wallets] == [100 + number for number in range(7)]
    # The last wallet is in the last chunk: its floor is still checked.
    assert_refused_without_trace(
        uow,
        lambda session: post_transfers(
            session,
            [
                _request(f"drain-{number}", wallet, accounts.revenue, 100 + number + (number == 6))
                for number, wallet in enumerate(wallets)
            ],
        ),
        InsufficientFunds,
        transfer_ids=("drain-0", "drain-6"),
    )
    assert_refused_without_trace(
        uow,
        lambda session: post_transfers(
            session, [*requests[:6], _request("chunk-6", accounts.clearing, wallets[6], 1)]
        ),
        IdempotencyConflict,
    )
