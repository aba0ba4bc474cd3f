from airtime.errors import IdempotencyConflict, InsufficientFunds
from airtime.ledger.models import AccountKind
from airtime.ledger.service import Leg, balance_of, check_invariants, open_account, post_transfer
import pytest


def test_transfer_roundtrip(uow):
    with uow() as session:
        clearing = open_account(session, code="clearing:sandbox:USD", kind=AccountKind.PAYMENT_CLEARING, currency="USD", balance_tracked=False, floor_minor=None)
        wallet = open_account(session, code="line:1:main", kind=AccountKind.CUSTOMER_MAIN, currency="USD", balance_tracked=True, floor_minor=0)
    with uow() as session:
        first = post_transfer(session, transfer_id="t1", kind="topup", currency="USD", legs=[Leg(clearing, -500), Leg(wallet, 500)])
        again = post_transfer(session, transfer_id="t1", kind="topup", currency="USD", legs=[Leg(clearing, -500), Leg(wallet, 500)])
    assert not first.replayed and again.replayed
    with pytest.raises(IdempotencyConflict), uow() as session:
        post_transfer(session, transfer_id="t1", kind="topup", currency="USD", legs=[Leg(clearing, -600), Leg(wallet, 600)])
    with pytest.raises(InsufficientFunds), uow() as session:
        post_transfer(session, transfer_id="t2", kind="spend", currency="USD", legs=[Leg(clearing, 501), Leg(wallet, -501)])
    with uow() as session:
        assert balance_of(session, wallet) == 500
        assert balance_of(session, clearing) == -500
        assert check_invariants(session) == []
