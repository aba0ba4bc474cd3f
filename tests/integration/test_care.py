"""Care actions on both databases: each leaves exactly one audit row; the audit log cannot
be changed; maker-checker adjustments; goodwill extensions; disputes; TOTP."""

from __future__ import annotations

from datetime import timedelta

import pyotp
import pytest
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.exc import DBAPIError

from airtime.accounts.models import Line, LineState
from airtime.care import service as care
from airtime.care.disputes import open_claim
from airtime.care.models import AdjustmentStatus, AuditEntry, BalanceAdjustment, Dispute, DisputeStatus
from airtime.clock import today, utcnow
from airtime.errors import Conflict, PermissionDenied
from airtime.ledger.service import balance_of
from airtime.payments.sandbox import SandboxProvider
from airtime.staff import totp
from airtime.staff.models import StaffTotp
from airtime.topups import service as topups
from airtime.topups.models import OrderStatus
from airtime.vouchers.models import RedemptionLock
from tests import staff_helpers, topup_helpers
from tests.snapshot import fingerprint


@pytest.fixture
def people(uow):
    with uow() as session:
        return {
            role: staff_helpers.staff_user(session, email=f"{role}@example.com", role=role)
            for role in ("care", "supervisor", "admin")
        }


def _providers(settings):
    return {"sandbox": SandboxProvider(base_url=settings.base_url)}


def _line(uow, settings, **args):
    with uow() as session:
        return topup_helpers.line_with_catalogue(session, settings, **args)


def _paid_order(uow, settings, line_id, *, credit=False):
    """A sandbox order the customer paid; credited only when asked (else "paid, not credited")."""
    provider = _providers(settings)["sandbox"]
    with uow() as session:
        order = topup_helpers.order(session, settings, line_id=line_id, amount_minor=1000)
        provider.decide(session, order.payment_reference, "approve")
        topups.apply_payment_state(session, order, provider.fetch_payment(session, order.payment_reference))
        if credit:
            topups.credit(session, order_id=order.id, settings=settings)
        return topups.get_order(session, order.public_id)


def _audit_count(uow) -> int:
    with uow() as session:
        return int(session.scalar(select(func.count()).select_from(AuditEntry)))


def test_every_care_action_leaves_exactly_one_audit_row(uow, settings, people):
    line = _line(uow, settings, balance_minor=500)
    paid = _paid_order(uow, settings, line.id)
    credited = _paid_order(uow, settings, line.id, credit=True)
    with uow() as session:
        waiting = topup_helpers.order(session, settings, line_id=line.id, amount_minor=1000)
        session.add(RedemptionLock(key=f"line:{line.id}", locked_until=utcnow() + timedelta(hours=1)))
    care_agent, supervisor, admin = people["care"], people["supervisor"], people["admin"]
    providers = _providers(settings)
    with uow() as session:
        dispute = Dispute(order_id=waiting.id, status=DisputeStatus.OPEN, opened_at=utcnow())
        session.add(dispute)
    actions = [
        lambda s: care.credit_order(
            s, actor=care_agent, public_id=paid.public_id, reason="", settings=settings
        ),
        lambda s: care.ask_provider(
            s, actor=care_agent, public_id=waiting.public_id, providers=providers, settings=settings
        ),
        lambda s: care.resend_receipt(
            s, actor=care_agent, public_id=credited.public_id, recipient="ana@example.com", settings=settings
        ),
        lambda s: care.unlock_voucher_attempts(s, actor=care_agent, key=f"line:{line.id}"),
        lambda s: care.block_vouchers(
            s, actor=supervisor, serial_first=1, serial_last=5, reason="stolen box"
        ),
        lambda s: care.block_vouchers(
            s, actor=supervisor, serial_first=1, serial_last=5, reason="found again", unblock=True
        ),
        lambda s: care.extend_validity(
            s, actor=care_agent, line_id=line.id, days=10, reason="network outage"
        ),
        lambda s: care.adjust_balance(
            s,
            actor=care_agent,
            line_id=line.id,
            amount_minor=300,
            reason_code="goodwill",
            reason="sorry",
            settings=settings,
        ),
        lambda s: care.adjust_balance(
            s,
            actor=care_agent,
            line_id=line.id,
            amount_minor=5000,
            reason_code="billing_error",
            reason="double charge",
            settings=settings,
        ),
        lambda s: care.approve_adjustment(
            s, actor=supervisor, role="supervisor", adjustment_id=_pending_id(s), note="checked"
        ),
        lambda s: care.adjust_balance(
            s,
            actor=care_agent,
            line_id=line.id,
            amount_minor=-9000,
            reason_code="other",
            reason="wrong line",
            settings=settings,
        ),
        lambda s: care.reject_adjustment(
            s, actor=admin, role="admin", adjustment_id=_pending_id(s), note="no such charge"
        ),
        lambda s: care.refund_order(
            s,
            actor=supervisor,
            public_id=credited.public_id,
            amount_minor=None,
            reason="customer asked",
            providers=providers,
        ),
        lambda s: care.close_dispute(s, actor=care_agent, dispute_id=_open_dispute_id(s), note="not paid"),
    ]
    for index, action in enumerate(actions):
        before = _audit_count(uow)
        with uow() as session:
            action(session)
        assert _audit_count(uow) == before + 1, f"action {index}"
    with uow() as session:
        actions_recorded = session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)).all()
        assert actions_recorded[0] == "credit_order" and "refund_order" in actions_recorded
        assert topups.get_order(session, credited.public_id).status == OrderStatus.REFUNDED


def _pending_id(session) -> int:
    return int(
        session.scalar(
            select(BalanceAdjustment.id).where(BalanceAdjustment.status == AdjustmentStatus.PENDING)
        )
    )


def _open_dispute_id(session) -> int:
    return int(session.scalar(select(Dispute.id).where(Dispute.status == DisputeStatus.OPEN)))


def test_a_refused_action_leaves_no_audit_row_and_changes_nothing(uow, session_factory, settings, people):
    line = _line(uow, settings)
    credited = _paid_order(uow, settings, line.id, credit=True)
    before = fingerprint(session_factory)
    with pytest.raises(Conflict), uow() as session:
        care.credit_order(
            session, actor=people["care"], public_id=credited.public_id, reason="", settings=settings
        )
    assert fingerprint(session_factory) == before


def test_the_database_refuses_to_change_or_delete_an_audit_row(uow, settings, people):
    with uow() as session:
        care.audit.record(session, actor=people["care"], action="test", subject_type="line", subject_id=1)
    for statement in (update(AuditEntry).values(reason="rewritten"), delete(AuditEntry)):
        with pytest.raises(DBAPIError, match="append-only"), uow() as session:
            session.execute(statement)
    with uow() as session:
        assert session.scalar(select(func.count()).select_from(AuditEntry)) == 1
        assert session.scalar(select(AuditEntry.reason)) == ""
    with pytest.raises(DBAPIError), uow() as session:
        session.execute(text("UPDATE audit_log SET staff_email = 'someone@else'"))


def test_maker_cannot_approve_their_own_adjustment(uow, session_factory, settings, people):
    line = _line(uow, settings)
    with uow() as session:
        staff_helpers.staff_user(session, email="second@example.com", role="supervisor")
    supervisor = people["supervisor"]
    with uow() as session:
        adjustment = care.adjust_balance(
            session,
            actor=supervisor,
            line_id=line.id,
            amount_minor=settings.care_adjustment_approval_above_minor + 1,
            reason_code="goodwill",
            reason="long outage",
            settings=settings,
        )
    assert adjustment.status == AdjustmentStatus.PENDING and adjustment.transfer_id is None
    before = fingerprint(session_factory)
    with pytest.raises(PermissionDenied), uow() as session:
        care.approve_adjustment(session, actor=supervisor, role="supervisor", adjustment_id=adjustment.id)
    with pytest.raises(PermissionDenied), uow() as session:
        care.approve_adjustment(session, actor=people["care"], role="care", adjustment_id=adjustment.id)
    assert fingerprint(session_factory) == before
    with uow() as session:
        approved = care.approve_adjustment(
            session, actor=people["admin"], role="admin", adjustment_id=adjustment.id
        )
        assert approved.transfer_id == f"care-adjustment:{adjustment.id}"
        assert balance_of(session, line.main_account_id) == settings.care_adjustment_approval_above_minor + 1
    with pytest.raises(Conflict), uow() as session:
        care.approve_adjustment(session, actor=people["admin"], role="admin", adjustment_id=adjustment.id)


def test_a_rejected_adjustment_posts_nothing(uow, session_factory, settings, people):
    line = _line(uow, settings, balance_minor=700)
    with uow() as session:
        adjustment = care.adjust_balance(
            session,
            actor=people["care"],
            line_id=line.id,
            amount_minor=50_000,
            reason_code="billing_error",
            reason="claimed double charge",
            settings=settings,
        )
    ledger_before = {
        key: value
        for key, value in fingerprint(session_factory).items()
        if key in ("balances", "ledger_transfers", "ledger_entries")
    }
    with uow() as session:
        rejected = care.reject_adjustment(
            session,
            actor=people["supervisor"],
            role="supervisor",
            adjustment_id=adjustment.id,
            note="not found",
        )
        assert rejected.status == AdjustmentStatus.REJECTED and rejected.transfer_id is None
    ledger_after = {key: value for key, value in fingerprint(session_factory).items() if key in ledger_before}
    assert ledger_after == ledger_before
    with uow() as session:
        assert balance_of(session, line.main_account_id) == 700


def test_a_small_adjustment_posts_at_once_and_a_debit_never_goes_below_zero(
    uow, session_factory, settings, people
):
    line = _line(uow, settings, balance_minor=100)
    with uow() as session:
        posted = care.adjust_balance(
            session,
            actor=people["care"],
            line_id=line.id,
            amount_minor=-100,
            reason_code="other",
            reason="wrong top-up",
            settings=settings,
        )
        assert posted.status == AdjustmentStatus.POSTED
        assert balance_of(session, line.main_account_id) == 0
    before = fingerprint(session_factory)
    with pytest.raises(Exception, match=r"(?i)insufficient|below|funds"), uow() as session:
        care.adjust_balance(
            session,
            actor=people["care"],
            line_id=line.id,
            amount_minor=-1,
            reason_code="other",
            reason="again",
            settings=settings,
        )
    assert fingerprint(session_factory) == before


def test_goodwill_extension_brings_a_line_in_grace_back_to_active(uow, settings, people):
    line = _line(uow, settings, validity_date=today() - timedelta(days=3))
    with uow() as session:
        session.execute(update(Line).where(Line.id == line.id).values(state=LineState.GRACE))
    with uow() as session:
        extended = care.extend_validity(
            session, actor=people["care"], line_id=line.id, days=30, reason="network outage"
        )
        assert extended.state == LineState.ACTIVE
        assert extended.validity_date == today() + timedelta(days=30)


def test_a_claim_about_a_paid_order_is_settled_by_the_system(session_factory, uow, settings):
    line = _line(uow, settings)
    paid = _paid_order(uow, settings, line.id)
    dispute = open_claim(
        session_factory,
        public_id=paid.public_id,
        contact_email="ana@example.com",
        providers=_providers(settings),
        settings=settings,
    )
    assert dispute.status == DisputeStatus.RESOLVED and dispute.resolution == "auto_credited"
    with uow() as session:
        assert topups.get_order(session, paid.public_id).status == OrderStatus.CREDITED


def test_a_claim_the_system_cannot_settle_goes_to_care(session_factory, uow, settings):
    line = _line(uow, settings)
    with uow() as session:
        waiting = topup_helpers.order(session, settings, line_id=line.id)
    dispute = open_claim(
        session_factory,
        public_id=waiting.public_id,
        contact_email="",
        providers=_providers(settings),
        settings=settings,
    )
    assert dispute.status == DisputeStatus.OPEN
    again = open_claim(
        session_factory,
        public_id=waiting.public_id,
        contact_email="",
        providers=_providers(settings),
        settings=settings,
    )
    assert again.id == dispute.id


def test_totp_codes_are_single_use_and_the_secret_is_encrypted(uow, settings):
    with uow() as session:
        staff = staff_helpers.staff_user(session, email="agent@example.com", role="care")
        secret = totp.start_enrolment(session, staff=staff, settings=settings)
        stored = session.get(StaffTotp, staff.id).secret_encrypted
        assert secret not in stored
    code = pyotp.TOTP(secret).now()
    with uow() as session:
        totp.verify(session, staff=staff, code=code, ip_address="1.2.3.4", settings=settings, confirming=True)
    with pytest.raises(totp.CodeRefused), uow() as session:
        totp.verify(session, staff=staff, code=code, ip_address="1.2.3.4", settings=settings)
    with pytest.raises(totp.CodeRefused), uow() as session:
        totp.verify(session, staff=staff, code="000000", ip_address="1.2.3.4", settings=settings)
    with uow() as session:
        totp.verify(
            session,
            staff=staff,
            code=staff_helpers.code_for(secret, steps_ahead=1),
            ip_address="1.2.3.4",
            settings=settings,
        )
        assert totp.is_enrolled(session, staff_user_id=staff.id)


def test_a_payment_for_a_terminated_line_is_kept_for_a_refund_not_credited(
    uow, session_factory, settings, people
):
    """The money arrived after the number went out of service: nothing is credited to the
    dead line; the order waits in its own care queue, reconciliation leaves it alone,
    "credit now" is refused, and a refund through the provider closes it."""
    from airtime.care.console import queues
    from airtime.topups.tasks import reconcile

    line = _line(uow, settings)
    with uow() as session:
        order = topup_helpers.order(session, settings, line_id=line.id, amount_minor=1000)
        session.execute(update(Line).where(Line.id == line.id).values(state=LineState.TERMINATED))
    before = fingerprint(session_factory)
    with uow() as session:
        provider = _providers(settings)["sandbox"]
        provider.decide(session, order.payment_reference, "approve")
        topups.apply_payment_state(session, order, provider.fetch_payment(session, order.payment_reference))
        assert not topups.credit(session, order_id=order.id, settings=settings)
    after = fingerprint(session_factory)
    assert {name: after[name] for name in after if after[name] != before[name]} == {}  # no entry, no message
    with uow() as session:
        kept = topups.get_order(session, order.public_id)
        assert (kept.status, kept.failure_code) == (OrderStatus.PAID, topups.LINE_GONE)
        assert kept.credited_at is None and kept.receipt_number is None and kept.paid_at is not None
        assert balance_of(session, line.main_account_id) == 0
        waiting = queues(session, settings=settings)
        assert [o.public_id for o in waiting.paid_line_gone] == [order.public_id]
        assert waiting.paid_not_credited == []
    assert reconcile(session_factory, providers=_providers(settings), settings=settings).credited == 0
    with uow() as session, pytest.raises(Conflict, match="refund this top-up"):
        care.credit_order(
            session, actor=people["care"], public_id=order.public_id, reason="", settings=settings
        )
    with uow() as session:
        result = care.refund_order(
            session,
            actor=people["supervisor"],
            public_id=order.public_id,
            amount_minor=None,
            reason="number out of service",
            providers=_providers(settings),
        )
        assert result.order.status == OrderStatus.REFUNDED
        assert balance_of(session, line.main_account_id) == 0
        assert queues(session, settings=settings).paid_line_gone == []
