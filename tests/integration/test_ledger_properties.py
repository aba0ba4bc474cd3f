"""Any sequence of transfers, replays and conflicting reuses keeps the ledger sound (both databases).

A Hypothesis state machine posts random transfers and batches between a few accounts and keeps a
model of what the ledger must then hold. Each example opens its own accounts under a fresh code
prefix and its own transfer ids, because the database fixture lives for the whole test function,
not for one example.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from airtime.errors import AppError, IdempotencyConflict, InsufficientFunds
from airtime.ledger.models import AccountKind, Entry, LedgerAccount, Transfer
from airtime.ledger.service import (
    Leg,
    PostedTransfer,
    TransferRequest,
    balance_of,
    check_invariants,
    open_account,
    post_transfers,
)

UnitOfWork = Callable[[], AbstractContextManager[Session]]

# (floor, tracked) per account: three prepaid balances, one with a credit limit, two operator
# accounts whose balances are derived from entries.
ACCOUNT_SHAPES: tuple[tuple[int | None, bool], ...] = (
    (0, True),
    (0, True),
    (0, True),
    (-300, True),
    (None, False),
    (None, False),
)
ACCOUNT_COUNT = len(ACCOUNT_SHAPES)

amounts = st.integers(min_value=1, max_value=500)


@st.composite
def legs_strategy(draw: st.DrawFn) -> tuple[tuple[int, int], ...]:
    """Balanced legs as (account index, amount) pairs, on 2 to 4 distinct accounts."""
    indexes = draw(st.lists(st.integers(0, ACCOUNT_COUNT - 1), min_size=2, max_size=4, unique=True))
    signed = [draw(amounts) * draw(st.sampled_from([-1, 1])) for _ in indexes[:-1]]
    if sum(signed) == 0:
        # The last leg balances the others and must not be zero: move the first leg by one.
        signed[0] += 1 if signed[0] > 0 else -1
    return tuple(zip(indexes, [*signed, -sum(signed)], strict=True))


# Funding (an operator account pays a customer balance) keeps balances above their floors often
# enough that random spending is sometimes accepted, not almost always refused.
OPERATOR_INDEXES = [index for index, (_floor, tracked) in enumerate(ACCOUNT_SHAPES) if not tracked]
GUARDED_INDEXES = [index for index, (floor, _tracked) in enumerate(ACCOUNT_SHAPES) if floor is not None]
funding_legs = st.builds(
    lambda source, target, amount: ((source, -amount), (target, amount)),
    st.sampled_from(OPERATOR_INDEXES),
    st.sampled_from(GUARDED_INDEXES),
    st.integers(min_value=100, max_value=2000),
)
any_legs = st.one_of(legs_strategy(), funding_legs)


@dataclass(frozen=True)
class Planned:
    """One transfer the machine means to post, in model terms (account indexes)."""

    transfer_id: str
    kind: str
    legs: tuple[tuple[int, int], ...]

    def content(self) -> tuple[str, frozenset[tuple[int, int]]]:
        return self.kind, frozenset(self.legs)


def run_ledger_machine(uow: UnitOfWork, *, max_examples: int, step_count: int) -> None:
    class LedgerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.prefix = uuid.uuid4().hex[:10]
            self.account_ids: list[int] = []
            self.expected_balances = [0] * ACCOUNT_COUNT
            self.posted: dict[str, tuple[Planned, PostedTransfer]] = {}
            self.refused_ids: set[str] = set()
            self.next_number = 0

        # -- helpers ------------------------------------------------------------------------

        def new_id(self) -> str:
            self.next_number += 1
            return f"{self.prefix}-{self.next_number}"

        def request(self, planned: Planned) -> TransferRequest:
            return TransferRequest(
                transfer_id=planned.transfer_id,
                kind=planned.kind,
                currency="USD",
                legs=tuple(Leg(self.account_ids[index], amount) for index, amount in planned.legs),
            )

        def predict(self, batch: list[Planned]) -> type[AppError] | None:
            """What the ledger must answer to this batch, and the balances it would leave."""
            seen: dict[str, Planned] = {}
            for planned in batch:
                earlier = seen.get(planned.transfer_id)
                if earlier is not None and earlier.content() != planned.content():
                    return IdempotencyConflict
                seen[planned.transfer_id] = planned
            for transfer_id, planned in seen.items():
                if transfer_id in self.posted and self.posted[transfer_id][0].content() != planned.content():
                    return IdempotencyConflict
            balances = list(self.expected_balances)
            for transfer_id, planned in seen.items():
                if transfer_id in self.posted:
                    continue
                for index, amount in planned.legs:
                    balances[index] += amount
                    floor, _tracked = ACCOUNT_SHAPES[index]
                    if amount < 0 and floor is not None and balances[index] < floor:
                        return InsufficientFunds
            return None

        def post(self, batch: list[Planned]) -> None:
            """Post a batch in one unit of work and check the answer against the model."""
            expected_error = self.predict(batch)
            try:
                with uow() as session:
                    results = post_transfers(session, [self.request(planned) for planned in batch])
            except AppError as error:
                event(f"batch of {len(batch)} refused: {type(error).__name__}")
                assert type(error) is expected_error, f"expected {expected_error}, got {error!r}"
                self.refused_ids |= {planned.transfer_id for planned in batch} - set(self.posted)
                return
            event(f"batch of {len(batch)} posted")
            assert expected_error is None, f"expected {expected_error.__name__}, the batch was posted"
            assert [result.transfer_id for result in results] == [planned.transfer_id for planned in batch]
            fresh: dict[str, PostedTransfer] = {}
            for planned, result in zip(batch, results, strict=True):
                if planned.transfer_id in fresh:
                    # The same transfer twice in one batch is posted once.
                    assert result == fresh[planned.transfer_id]
                elif planned.transfer_id in self.posted:
                    first = self.posted[planned.transfer_id][1]
                    assert result.replayed
                    assert result.created_at == first.created_at
                else:
                    assert not result.replayed
                    fresh[planned.transfer_id] = result
                    for index, amount in planned.legs:
                        self.expected_balances[index] += amount
                    self.posted[planned.transfer_id] = (planned, result)
                    self.refused_ids.discard(planned.transfer_id)

        def fingerprint(self, session: Session) -> tuple[object, ...]:
            """Everything this example wrote, to prove a replay wrote nothing."""
            entries = session.execute(
                select(Entry.id, Entry.transfer_id, Entry.account_id, Entry.amount_minor).where(
                    Entry.account_id.in_(self.account_ids)
                )
            ).all()
            transfers = session.execute(
                select(Transfer.id, Transfer.content_hash, Transfer.created_at).where(
                    Transfer.id.like(f"{self.prefix}-%")
                )
            ).all()
            kept = session.execute(
                select(LedgerAccount.id, LedgerAccount.balance_minor).where(
                    LedgerAccount.id.in_(self.account_ids)
                )
            ).all()
            return (
                tuple(sorted(map(tuple, entries))),
                tuple(sorted(map(tuple, transfers))),
                tuple(sorted(kept)),
            )

        # -- rules --------------------------------------------------------------------------

        @initialize()
        def open_accounts(self) -> None:
            with uow() as session:
                for number, (floor, tracked) in enumerate(ACCOUNT_SHAPES):
                    self.account_ids.append(
                        open_account(
                            session,
                            code=f"prop:{self.prefix}:{number}",
                            kind=AccountKind.CUSTOMER_MAIN if tracked else AccountKind.PAYMENT_CLEARING,
                            currency="USD",
                            balance_tracked=tracked,
                            floor_minor=floor,
                        )
                    )

        @rule(legs=legs_strategy(), kind=st.sampled_from(["topup", "usage"]))
        def post_new_transfer(self, legs: tuple[tuple[int, int], ...], kind: str) -> None:
            self.post([Planned(self.new_id(), kind, legs)])

        @rule(legs=funding_legs)
        def fund_a_balance(self, legs: tuple[tuple[int, int], ...]) -> None:
            self.post([Planned(self.new_id(), "topup", legs)])

        @precondition(lambda self: self.refused_ids)
        @rule(data=st.data(), legs=legs_strategy())
        def reuse_a_refused_id(self, data: st.DataObject, legs: tuple[tuple[int, int], ...]) -> None:
            """A refused transfer left no trace, so its id is free for any content."""
            transfer_id = data.draw(st.sampled_from(sorted(self.refused_ids)))
            self.post([Planned(transfer_id, "usage", legs)])

        @precondition(lambda self: self.posted)
        @rule(data=st.data())
        def replay_with_same_content(self, data: st.DataObject) -> None:
            planned, _result = self.posted[data.draw(st.sampled_from(sorted(self.posted)))]
            # The order of legs is not part of the content.
            legs = tuple(data.draw(st.permutations(planned.legs)))
            with uow() as session:
                before = self.fingerprint(session)
            self.post([Planned(planned.transfer_id, planned.kind, legs)])
            with uow() as session:
                assert self.fingerprint(session) == before

        @precondition(lambda self: self.posted)
        @rule(data=st.data(), legs=legs_strategy(), kind=st.sampled_from(["topup", "usage"]))
        def reuse_id_with_other_content(
            self, data: st.DataObject, legs: tuple[tuple[int, int], ...], kind: str
        ) -> None:
            planned, _result = self.posted[data.draw(st.sampled_from(sorted(self.posted)))]
            other = Planned(planned.transfer_id, kind, legs)
            if other.content() == planned.content():
                other = Planned(planned.transfer_id, "refund", legs)
            with uow() as session:
                before = self.fingerprint(session)
            self.post([other])
            with uow() as session:
                assert self.fingerprint(session) == before

        @rule(
            data=st.data(),
            batch_size=st.integers(min_value=1, max_value=5),
        )
        def post_a_batch(self, data: st.DataObject, batch_size: int) -> None:
            """New transfers mixed with replays, conflicting reuses and duplicates: all or nothing."""
            batch: list[Planned] = []
            for _ in range(batch_size):
                choice = data.draw(st.sampled_from(["new", "new", "replay", "conflict", "duplicate"]))
                if choice == "replay" and self.posted:
                    batch.append(self.posted[data.draw(st.sampled_from(sorted(self.posted)))][0])
                elif choice == "conflict" and self.posted:
                    planned = self.posted[data.draw(st.sampled_from(sorted(self.posted)))][0]
                    batch.append(Planned(planned.transfer_id, "refund", data.draw(legs_strategy())))
                elif choice == "duplicate" and batch:
                    batch.append(data.draw(st.sampled_from(batch)))
                else:
                    batch.append(Planned(self.new_id(), "usage", data.draw(any_legs)))
            self.post(batch)

        # -- invariants ---------------------------------------------------------------------

        @invariant()
        def ledger_matches_the_model(self) -> None:
            if not self.account_ids:
                return
            with uow() as session:
                for index, account_id in enumerate(self.account_ids):
                    floor, tracked = ACCOUNT_SHAPES[index]
                    balance = balance_of(session, account_id)
                    assert balance == self.expected_balances[index], f"account {index}"
                    if floor is not None:
                        assert balance >= floor
                    entries_total = session.execute(
                        select(func.coalesce(func.sum(Entry.amount_minor), 0)).where(
                            Entry.account_id == account_id
                        )
                    ).scalar_one()
                    assert entries_total == balance
                    if tracked:
                        kept = session.get(LedgerAccount, account_id)
                        assert kept is not None and kept.balance_minor == entries_total
                all_entries_total = session.execute(
                    select(func.coalesce(func.sum(Entry.amount_minor), 0)).where(
                        Entry.account_id.in_(self.account_ids)
                    )
                ).scalar_one()
                assert all_entries_total == 0
                transfer_ids = set(
                    session.execute(select(Transfer.id).where(Transfer.id.like(f"{self.prefix}-%"))).scalars()
                )
                assert transfer_ids == set(self.posted)
                entry_count = session.execute(
                    select(func.count()).select_from(Entry).where(Entry.account_id.in_(self.account_ids))
                ).scalar_one()
                assert entry_count == sum(len(planned.legs) for planned, _ in self.posted.values())

        def teardown(self) -> None:
            if not self.account_ids:
                return
            # Replaying every transfer the example posted, all at once, changes nothing.
            if self.posted:
                with uow() as session:
                    before = self.fingerprint(session)
                self.post([planned for planned, _ in self.posted.values()])
                with uow() as session:
                    assert self.fingerprint(session) == before
            with uow() as session:
                assert check_invariants(session) == []

    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=max_examples,
            stateful_step_count=step_count,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
            database=None,
        ),
    )


def test_any_sequence_of_transfers_keeps_the_ledger_sound(uow: UnitOfWork) -> None:
    run_ledger_machine(uow, max_examples=30, step_count=25)
