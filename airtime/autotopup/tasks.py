"""The auto top-up job: find due rules, charge their saved methods, credit through the one
top-up state machine. Safe to run anywhere, any number of times, in parallel.

Each charge is made in three steps, so that a crash or a second process never charges twice:

1. claim (one transaction, the rule's row locked): check the rule is due and within its
   monthly cap, then write the attempt (unique per rule and idempotency key, which names the
   occasion) and its top-up order (channel "auto"), and commit;
2. charge the saved method at the provider with the attempt's idempotency key: asked again
   with the same key, the provider answers with the first result instead of charging again;
3. apply the outcome (another transaction): the order is paid and credited by the crediting
   step every channel ends in, or failed; a decline backs the rule off and tells the customer.

An attempt whose outcome never arrived (the process died, the provider did not answer) stays
"charging" and is charged again, with the same key, by a later run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from airtime.accounts.models import Customer, Line, LineState
from airtime.accounts.phone import mask_msisdn
from airtime.autotopup import service as rules
from airtime.autotopup.models import (
    AttemptStatus,
    AutoTopupAttempt,
    AutoTopupRule,
    MethodStatus,
    SavedPaymentMethod,
)
from airtime.clock import today, utcnow
from airtime.config import Settings
from airtime.db.dialect import insert_ignoring_conflicts, is_postgresql
from airtime.db.session import unit_of_work
from airtime.errors import AppError
from airtime.ledger.models import LedgerAccount
from airtime.ledger.service import balance_of
from airtime.notifications.service import enqueue
from airtime.payments.base import (
    OffSessionCharge,
    PaymentOutcome,
    PaymentProvider,
    PaymentRequest,
    PaymentStart,
    PaymentState,
    ProviderEvent,
    SavedMethodState,
    SaveMethodRequest,
)
from airtime.topups import service as topups
from airtime.topups.models import Channel, OrderStatus, TopupOrder

log = structlog.get_logger(__name__)
RULES_PER_RUN_MAX = 500
# An attempt still "charging" after this long lost its process: charge again with its key.
CHARGING_STALE_AFTER = timedelta(minutes=10)
# Providers keep idempotency keys for about a day (Stripe: 24 hours); after that a retry
# could charge again, so an attempt whose outcome is still unknown is given up instead.
CHARGING_GIVE_UP_AFTER = timedelta(hours=23)
# The validity trigger looks this far ahead at most (the rule's own N is checked per rule).
LOOKAHEAD_DAYS = rules.DAYS_BEFORE_VALIDITY_MAX


@dataclass
class AutoTopupReport:
    charged: int = 0
    succeeded: int = 0
    declined: int = 0
    disabled: int = 0
    pending: int = 0
    capped: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class _ReservedPayment:
    """The provider, as create_order sees it for an off-session order: there is no page to
    send anyone to, and the payment is made afterwards by ``charge_saved_method``. The
    reference is a placeholder until the provider's own (a PaymentIntent id) is known."""

    provider: PaymentProvider
    reference: str
    name: str = ""
    saves_methods: bool = True

    def __post_init__(self) -> None:
        self.name = self.provider.name
        self.saves_methods = self.provider.saves_methods

    def start_payment(self, session: Session, request: PaymentRequest) -> PaymentStart:
        return PaymentStart(reference=self.reference, redirect_url="")

    def fetch_payment(self, session: Session, reference: str) -> PaymentState:
        return self.provider.fetch_payment(session, reference)

    def parse_webhook(self, body: bytes, headers: Any) -> ProviderEvent | None:
        return self.provider.parse_webhook(body, headers)

    def refund(self, session: Session, reference: str, amount_minor: int, idempotency_key: str) -> None:
        self.provider.refund(session, reference, amount_minor, idempotency_key)

    def start_saving_method(self, session: Session, request: SaveMethodRequest) -> PaymentStart:
        return self.provider.start_saving_method(session, request)

    def fetch_saved_method(self, session: Session, reference: str) -> SavedMethodState:
        return self.provider.fetch_saved_method(session, reference)

    def charge_saved_method(self, session: Session, charge: OffSessionCharge) -> PaymentState:
        return self.provider.charge_saved_method(session, charge)


def run_due(
    factory: sessionmaker[Session],
    *,
    providers: dict[str, PaymentProvider],
    settings: Settings,
    limit: int = RULES_PER_RUN_MAX,
) -> AutoTopupReport:
    """One pass: finish attempts left open, then claim, charge and settle every due rule."""
    report = AutoTopupReport()
    _finish_open_attempts(factory, providers=providers, settings=settings, report=report)
    for rule_id in _candidate_rule_ids(factory, limit=limit):
        try:
            attempt_id = _claim(
                factory, rule_id=rule_id, providers=providers, settings=settings, report=report
            )
            if attempt_id is not None:
                report.charged += 1
                _charge_and_settle(
                    factory, attempt_id=attempt_id, providers=providers, settings=settings, report=report
                )
        except AppError as error:
            report.errors.append(f"rule {rule_id}: {error.detail}")
            log.warning("autotopup_rule_failed", rule_id=rule_id, error=error.detail)
    return report


def _candidate_rule_ids(factory: sessionmaker[Session], *, limit: int) -> list[int]:
    """Rules that may be due: enabled, not backing off, and near a trigger (checked exactly,
    under the rule's lock, when claimed)."""
    now = utcnow()
    with unit_of_work(factory) as session:
        return list(
            session.scalars(
                select(AutoTopupRule.id)
                .join(Line, Line.id == AutoTopupRule.line_id)
                .join(LedgerAccount, LedgerAccount.id == Line.main_account_id)
                .where(
                    AutoTopupRule.enabled.is_(True),
                    or_(AutoTopupRule.next_attempt_at.is_(None), AutoTopupRule.next_attempt_at <= now),
                    or_(
                        and_(
                            AutoTopupRule.days_before_validity.is_not(None),
                            Line.validity_date <= today() + timedelta(days=LOOKAHEAD_DAYS),
                        ),
                        and_(
                            AutoTopupRule.balance_below_minor.is_not(None),
                            LedgerAccount.balance_minor < AutoTopupRule.balance_below_minor,
                        ),
                    ),
                )
                .order_by(AutoTopupRule.id)
                .limit(max(1, min(limit, RULES_PER_RUN_MAX)))
            )
        )


def _claim(
    factory: sessionmaker[Session],
    *,
    rule_id: int,
    providers: dict[str, PaymentProvider],
    settings: Settings,
    report: AutoTopupReport,
) -> int | None:
    """Write the attempt and its order if the rule is due and within its cap; its id, or None."""
    now = utcnow()
    with unit_of_work(factory) as session:
        query = select(AutoTopupRule).where(AutoTopupRule.id == rule_id).with_for_update(key_share=True)
        if is_postgresql(session):
            # Another process holding the rule is claiming it right now: leave it to that one.
            query = query.with_for_update(key_share=True, skip_locked=True)
        rule = session.scalar(query.execution_options(populate_existing=True))
        if rule is None or not rule.enabled:
            return None
        line = session.get(Line, rule.line_id)
        assert line is not None
        if (
            line.customer_id != rule.customer_id
            or line.state == LineState.TERMINATED
            or line.number_released_at is not None
        ):
            rule.enabled = False
            rule.disabled_reason = rules.DisabledReason.LINE_UNAVAILABLE
            rule.updated_at = now
            return None
        balance_minor = balance_of(session, line.main_account_id)
        if (
            rule.balance_below_minor is not None
            and not rule.balance_armed
            and balance_minor >= rule.balance_below_minor
        ):
            rule.balance_armed = True  # back above X: the next fall is a new occasion
        in_flight = session.scalar(
            select(AutoTopupAttempt.id)
            .where(
                AutoTopupAttempt.rule_id == rule.id,
                AutoTopupAttempt.status.in_((AttemptStatus.CHARGING, AttemptStatus.PENDING)),
            )
            .limit(1)
        )
        if in_flight is not None:
            # One attempt at a time per rule: its outcome (a new balance, a new validity date)
            # decides whether the rule is still due.
            return None
        occasions = rules.due_occasions(
            rule, balance_minor=balance_minor, validity_date=line.validity_date, today=today(), now=now
        )
        served = set(
            session.scalars(
                select(AutoTopupAttempt.occasion).where(
                    AutoTopupAttempt.rule_id == rule.id,
                    AutoTopupAttempt.occasion.in_(occasions),
                    AutoTopupAttempt.status.in_(AttemptStatus.HOLDING_CAP),
                )
            )
        )
        occasion = next((item for item in occasions if item not in served), None)
        if occasion is None:
            return None
        month = rules.cap_month(now)
        held_minor = rules.held_this_month(session, rule_id=rule.id, month=month)
        if not rules.cap_allows(
            held_minor=held_minor, amount_minor=rule.amount_minor, cap_minor=rule.monthly_cap_minor
        ):
            report.capped += 1
            if rule.cap_reached_month != month:
                rule.cap_reached_month = month
                _notify(
                    session, rule=rule, line=line, kind="cap_reached", settings=settings, dedup=f"cap:{month}"
                )
            return None
        method = session.get(SavedPaymentMethod, rule.payment_method_id)
        provider = providers.get(method.provider) if method else None
        if method is None or method.status != MethodStatus.ACTIVE:
            rule.enabled = False
            rule.disabled_reason = rules.DisabledReason.METHOD_REMOVED
            rule.updated_at = now
            return None
        if provider is None:
            raise AppError("Payment provider %(name)s is not configured.", name=method.provider)
        # The operator's amount rules may have changed since the rule was saved.
        quote = topups.quote(session, line=line, channel=Channel.AUTO, amount_minor=rule.amount_minor)
        rule.attempts_made += 1
        key = f"auto:{rule.id}:{occasion}:{rule.attempts_made}"
        attempt_id = session.execute(
            insert_ignoring_conflicts(session, AutoTopupAttempt.__table__)
            .values(
                rule_id=rule.id,
                occasion=occasion,
                idempotency_key=key,
                amount_minor=rule.amount_minor,
                currency=rule.currency,
                cap_month=month,
                status=AttemptStatus.CHARGING,
                failure_code="",
                created_at=now,
            )
            .returning(AutoTopupAttempt.__table__.c.id)
        ).scalar()
        if attempt_id is None:
            return None
        customer = session.get(Customer, rule.customer_id)
        order, _ = topups.create_order(
            session,
            quote=quote,
            channel=Channel.AUTO,
            provider=_ReservedPayment(provider, reference=f"auto:{attempt_id}"),
            idempotency_scope=f"auto:{rule.id}",
            idempotency_key=key,
            settings=settings,
            customer_id=rule.customer_id,
            language=customer.language if customer else settings.default_language,
        )
        session.execute(
            update(AutoTopupAttempt).where(AutoTopupAttempt.id == attempt_id).values(order_id=order.id)
        )
        rule.updated_at = now
        return int(attempt_id)


def _charge_and_settle(
    factory: sessionmaker[Session],
    *,
    attempt_id: int,
    providers: dict[str, PaymentProvider],
    settings: Settings,
    report: AutoTopupReport,
) -> None:
    """Charge the attempt's saved method (again, with the same key, if its outcome was lost)."""
    with unit_of_work(factory) as session:
        attempt = session.get(AutoTopupAttempt, attempt_id)
        if attempt is None or attempt.status != AttemptStatus.CHARGING or attempt.order_id is None:
            return
        rule = session.get(AutoTopupRule, attempt.rule_id)
        order = session.get(TopupOrder, attempt.order_id)
        assert rule is not None and order is not None
        method = session.get(SavedPaymentMethod, rule.payment_method_id)
        provider = providers.get(order.payment_provider)
        if method is None or provider is None:
            report.errors.append(f"attempt {attempt_id}: provider {order.payment_provider} is not configured")
            return
        try:
            state = provider.charge_saved_method(
                session,
                OffSessionCharge(
                    token=method.token,
                    provider_customer=method.provider_customer,
                    order_public_id=order.public_id,
                    amount_minor=order.amount_minor,
                    currency=order.currency,
                    description=f"Auto top-up {mask_msisdn(order.msisdn)}",
                    idempotency_key=attempt.idempotency_key,
                ),
            )
        except AppError as error:
            # The outcome is unknown: the attempt stays "charging", retried later with its key.
            report.errors.append(f"attempt {attempt_id}: {error.detail}")
            log.warning("autotopup_charge_unknown", attempt_id=attempt_id, error=error.detail)
            return
        _settle(
            session, attempt=attempt, rule=rule, order=order, state=state, settings=settings, report=report
        )


def _settle(
    session: Session,
    *,
    attempt: AutoTopupAttempt,
    rule: AutoTopupRule,
    order: TopupOrder,
    state: PaymentState,
    settings: Settings,
    report: AutoTopupReport,
) -> None:
    """Bring order, attempt and rule in line with the provider's answer (once: conditional)."""
    now = utcnow()
    if state.reference and order.payment_reference != state.reference:
        order.payment_reference = state.reference[:120]
        session.flush()
    change = topups.apply_payment_state(session, order, state)
    if state.outcome == PaymentOutcome.PENDING:
        _move(session, attempt, AttemptStatus.PENDING, from_=(AttemptStatus.CHARGING,))
        report.pending += 1
        return
    if state.outcome == PaymentOutcome.SUCCEEDED and change in ("paid", "unchanged"):
        session.refresh(order)
        if order.status == OrderStatus.PAID:
            topups.credit(session, order_id=order.id, settings=settings)
            session.refresh(order)
        if not _move(session, attempt, AttemptStatus.SUCCEEDED):
            return
        rule = _locked_rule(session, rule.id)
        rule.consecutive_declines = 0
        rule.next_attempt_at = None
        if attempt.occasion.startswith("balance:"):
            rule.balance_round += 1
            # A top-up too small to lift the balance to X does not fire again until it is.
            rule.balance_armed = (
                rule.balance_below_minor is None
                or (order.balance_after_minor or 0) >= rule.balance_below_minor
            )
        rule.updated_at = now
        report.succeeded += 1
        return
    if state.outcome == PaymentOutcome.FAILED:
        if not _move(
            session, attempt, AttemptStatus.DECLINED, failure_code=state.failure_code or "payment_declined"
        ):
            return
        rule = _locked_rule(session, rule.id)
        rule.consecutive_declines += 1
        wait = rules.backoff_after(rule.consecutive_declines)
        line = session.get(Line, rule.line_id)
        assert line is not None
        report.declined += 1
        if wait is None:
            rule.enabled = False
            rule.disabled_reason = rules.DisabledReason.DECLINED
            rule.next_attempt_at = None
            report.disabled += 1
            _notify(
                session,
                rule=rule,
                line=line,
                kind="disabled",
                settings=settings,
                dedup=f"disabled:{attempt.id}",
            )
        else:
            rule.next_attempt_at = now + wait
            _notify(
                session,
                rule=rule,
                line=line,
                kind="declined",
                settings=settings,
                dedup=f"declined:{attempt.id}",
            )
        rule.updated_at = now
        return
    # Paid a different amount than asked (the order is failed with "amount_mismatch" for care),
    # or refunded before we heard of it: no credit from this attempt, nothing counts to the cap.
    _move(session, attempt, AttemptStatus.ABANDONED, failure_code=change[:40])
    report.errors.append(f"attempt {attempt.id}: {change}")


def _move(
    session: Session,
    attempt: AutoTopupAttempt,
    status: str,
    *,
    from_: tuple[str, ...] = (AttemptStatus.CHARGING, AttemptStatus.PENDING),
    failure_code: str = "",
) -> bool:
    """Conditional: only one settler of an attempt moves it (and then updates its rule)."""
    moved = session.execute(
        update(AutoTopupAttempt)
        .where(AutoTopupAttempt.id == attempt.id, AutoTopupAttempt.status.in_(from_))
        .values(
            status=status,
            failure_code=failure_code,
            finished_at=None if status == AttemptStatus.PENDING else utcnow(),
        )
        .execution_options(synchronize_session="fetch")
    )
    return bool(moved.rowcount == 1)  # type: ignore[attr-defined]


def _locked_rule(session: Session, rule_id: int) -> AutoTopupRule:
    rule = session.scalar(
        select(AutoTopupRule)
        .where(AutoTopupRule.id == rule_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    assert rule is not None
    return rule


def _finish_open_attempts(
    factory: sessionmaker[Session],
    *,
    providers: dict[str, PaymentProvider],
    settings: Settings,
    report: AutoTopupReport,
) -> None:
    """Attempts a previous run left open: "charging" ones whose process died are charged again
    with their key; "pending" ones are asked about; ones past the key's lifetime are given up."""
    now = utcnow()
    with unit_of_work(factory) as session:
        rows = session.execute(
            select(AutoTopupAttempt.id, AutoTopupAttempt.status, AutoTopupAttempt.created_at)
            .where(
                or_(
                    and_(
                        AutoTopupAttempt.status == AttemptStatus.CHARGING,
                        AutoTopupAttempt.created_at < now - CHARGING_STALE_AFTER,
                    ),
                    AutoTopupAttempt.status == AttemptStatus.PENDING,
                )
            )
            .order_by(AutoTopupAttempt.id)
            .limit(RULES_PER_RUN_MAX)
        ).all()
    for attempt_id, status, created_at in rows:
        try:
            if status == AttemptStatus.CHARGING and created_at < now - CHARGING_GIVE_UP_AFTER:
                _give_up(factory, attempt_id=attempt_id)
            elif status == AttemptStatus.CHARGING:
                _charge_and_settle(
                    factory, attempt_id=attempt_id, providers=providers, settings=settings, report=report
                )
            else:
                _ask_about_pending(
                    factory, attempt_id=attempt_id, providers=providers, settings=settings, report=report
                )
        except AppError as error:
            report.errors.append(f"attempt {attempt_id}: {error.detail}")


def _give_up(factory: sessionmaker[Session], *, attempt_id: int) -> None:
    with unit_of_work(factory) as session:
        attempt = session.get(AutoTopupAttempt, attempt_id)
        assert attempt is not None
        if _move(
            session,
            attempt,
            AttemptStatus.ABANDONED,
            from_=(AttemptStatus.CHARGING,),
            failure_code="provider_error",
        ):
            order = session.get(TopupOrder, attempt.order_id) if attempt.order_id else None
            if order is not None:
                topups.expire(session, order)
            log.error("autotopup_attempt_abandoned", attempt_id=attempt_id)


def _ask_about_pending(
    factory: sessionmaker[Session],
    *,
    attempt_id: int,
    providers: dict[str, PaymentProvider],
    settings: Settings,
    report: AutoTopupReport,
) -> None:
    with unit_of_work(factory) as session:
        attempt = session.get(AutoTopupAttempt, attempt_id)
        assert attempt is not None and attempt.order_id is not None
        order = session.get(TopupOrder, attempt.order_id)
        rule = session.get(AutoTopupRule, attempt.rule_id)
        assert order is not None and rule is not None
        provider = providers.get(order.payment_provider)
        if provider is None or not order.payment_reference:
            return
        if order.status in (OrderStatus.CREDITED, OrderStatus.PAID):
            # Reconciliation or a webhook got there first: the same outcome, already applied.
            state = PaymentState(
                reference=order.payment_reference,
                outcome=PaymentOutcome.SUCCEEDED,
                amount_minor=order.amount_minor,
                currency=order.currency,
                method=order.payment_method,
            )
        else:
            state = provider.fetch_payment(session, order.payment_reference)
            if state.outcome == PaymentOutcome.PENDING:
                report.pending += 1
                return
        _settle(
            session, attempt=attempt, rule=rule, order=order, state=state, settings=settings, report=report
        )


def _notify(
    session: Session, *, rule: AutoTopupRule, line: Line, kind: str, settings: Settings, dedup: str
) -> None:
    """Tell the customer by email and SMS (once per occasion: the dedup key)."""
    customer = session.get(Customer, rule.customer_id)
    language = customer.language if customer else settings.default_language
    context = {
        "kind": kind,
        "operator_name": settings.operator_name,
        "msisdn": line.msisdn,
        "amount_minor": rule.amount_minor,
        "cap_minor": rule.monthly_cap_minor,
        "currency": rule.currency,
        "next_attempt": rule.next_attempt_at.strftime("%Y-%m-%d") if rule.next_attempt_at else "",
        "declines": rule.consecutive_declines,
        "link": f"{settings.base_url}/lines/{line.id}/autotopup",
    }
    if customer is not None:
        enqueue(
            session,
            channel="email",
            recipient=customer.email,
            template="autotopup_notice",
            language=language,
            context=context,
            customer_id=customer.id,
            dedup_key=f"autotopup:{rule.id}:{dedup}:email",
        )
    enqueue(
        session,
        channel="sms",
        recipient=line.msisdn,
        template="autotopup_notice",
        language=language,
        context=context,
        customer_id=rule.customer_id,
        dedup_key=f"autotopup:{rule.id}:{dedup}:sms",
    )
