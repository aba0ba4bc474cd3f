"""Customers, lines and authentication on both databases, with refusals that change nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from sqlalchemy import select

from airtime.accounts import service as accounts
from airtime.accounts.models import AuthSession, Customer, Line, PasswordResetToken
from airtime.clock import utcnow
from airtime.errors import AuthenticationFailed, Conflict, NotFound, RateLimited, ValidationFailed
from airtime.notifications.models import Notification
from tests import factories
from tests.snapshot import fingerprint


def _reset_link(uow) -> str:
    with uow() as session:
        message = session.scalars(
            select(Notification)
            .where(Notification.template == "password_reset")
            .order_by(Notification.id.desc())
        ).first()
    assert message is not None
    return next(word for word in message.body_text.split() if "/reset-password/" in word)


def test_register_stores_argon2id_hash_and_sends_welcome(uow, settings):
    with uow() as session:
        customer = factories.customer(session, settings, email="  Ana@Example.COM ", language="zh-CN")
    with uow() as session:
        stored = session.get(Customer, customer.id)
        assert stored.email == "ana@example.com"
        assert stored.language == "zh_Hans"
        assert stored.password_hash.startswith("$argon2id$")
        welcome = session.scalars(select(Notification)).one()
        assert welcome.recipient == "ana@example.com" and welcome.language == "zh_Hans"


@pytest.mark.parametrize(
    ("email", "password", "language", "error"),
    [
        ("not-an-email", factories.PASSWORD, "en", ValidationFailed),
        ("a@b", factories.PASSWORD, "en", ValidationFailed),
        ("ok@example.com", "short", "en", ValidationFailed),
        ("ok@example.com", factories.PASSWORD, "klingon", ValidationFailed),
    ],
)
def test_register_refuses_bad_input_and_changes_nothing(
    uow, session_factory, settings, email, password, language, error
):
    before = fingerprint(session_factory)
    with pytest.raises(error), uow() as session:
        accounts.register_customer(
            session, email=email, password=password, language=language, settings=settings
        )
    assert fingerprint(session_factory) == before


def test_register_refuses_a_duplicate_email(uow, session_factory, settings):
    with uow() as session:
        factories.customer(session, settings, email="dup@example.com")
    before = fingerprint(session_factory)
    with pytest.raises(Conflict), uow() as session:
        factories.customer(session, settings, email="DUP@example.com")
    assert fingerprint(session_factory) == before


@pytest.mark.parametrize("msisdn", ["", "12", "+44 12", "hello", "+999123456789", "+4479111234567890123"])
def test_add_line_refuses_a_bad_msisdn_and_changes_nothing(uow, session_factory, settings, msisdn):
    with uow() as session:
        factories.plan(session)
    before = fingerprint(session_factory)
    with pytest.raises(ValidationFailed) as refused, uow() as session:
        accounts.add_line(session, msisdn=msisdn, plan_code="TEST-GBP", settings=settings)
    assert refused.value.params["field"] == "msisdn"
    assert fingerprint(session_factory) == before


def test_add_line_normalises_to_e164_and_refuses_a_taken_number(uow, session_factory, settings):
    with uow() as session:
        factories.plan(session)
        line = accounts.add_line(session, msisdn="07911 123456", plan_code="TEST-GBP", settings=settings)
        assert line.msisdn == "+447911123456"
    before = fingerprint(session_factory)
    with pytest.raises(Conflict), uow() as session:
        accounts.add_line(session, msisdn="+44 7911 123456", plan_code="TEST-GBP", settings=settings)
    with pytest.raises(ValidationFailed), uow() as session:
        accounts.add_line(
            session, msisdn="+447911123450", plan_code="TEST-GBP", settings=settings, iccid="123"
        )
    with pytest.raises(NotFound), uow() as session:
        accounts.add_line(session, msisdn="+447911123450", plan_code="NOPE", settings=settings)
    assert fingerprint(session_factory) == before


def test_customer_sees_only_own_lines_with_balances(uow, settings):
    with uow() as session:
        owner = factories.customer(session, settings)
        other = factories.customer(session, settings)
        line = factories.line(session, settings, customer_id=owner.id, balance_minor=1250)
    with uow() as session:
        views = accounts.customer_lines(session, customer_id=owner.id)
        assert [(view.msisdn, view.balance_minor, view.currency) for view in views] == [
            ("+447911123456", 1250, "GBP")
        ]
        assert accounts.customer_lines(session, customer_id=other.id) == []
        with pytest.raises(NotFound):
            accounts.customer_line(session, customer_id=other.id, line_id=line.id)
        history = accounts.line_history(session, line=views[0])
        assert [(item.amount_minor, item.balance) for item in history] == [(1250, "main")]


def test_wrong_password_is_counted_and_locks_out_after_the_limit(uow, session_factory, settings):
    with uow() as session:
        factories.customer(session, settings, email="locked@example.com")
    before = fingerprint(session_factory)
    for _ in range(settings.login_failures_max):
        with pytest.raises(AuthenticationFailed), uow() as session:
            accounts.authenticate(
                session,
                email="locked@example.com",
                password="wrong",
                ip_address="10.0.0.1",
                settings=settings,
            )
    # Nothing but the failure counters changed.
    assert fingerprint(session_factory) == before
    with pytest.raises(RateLimited) as limited, uow() as session:
        accounts.authenticate(
            session,
            email="locked@example.com",
            password=factories.PASSWORD,
            ip_address="10.0.0.2",
            settings=settings,
        )
    assert "Try again after" in limited.value.detail
    # After the window the right password works again.
    with time_machine.travel(utcnow() + timedelta(minutes=settings.login_window_minutes + 1), tick=False):
        with uow() as session:
            assert (
                accounts.authenticate(
                    session,
                    email="locked@example.com",
                    password=factories.PASSWORD,
                    ip_address="10.0.0.2",
                    settings=settings,
                ).email
                == "locked@example.com"
            )


def test_unknown_email_fails_like_a_wrong_password(uow, settings):
    with pytest.raises(AuthenticationFailed) as refused, uow() as session:
        accounts.authenticate(
            session, email="nobody@example.com", password="x", ip_address="1.2.3.4", settings=settings
        )
    assert refused.value.detail == "Wrong email or password."


def test_password_reset_link_works_once(uow, session_factory, settings):
    with uow() as session:
        customer = factories.customer(session, settings, email="reset@example.com")
        session_token = accounts.open_session(
            session, kind="web", lifetime=timedelta(hours=1), customer_id=customer.id
        )
    with uow() as session:
        accounts.request_password_reset(session, email="RESET@example.com", settings=settings)
    token = _reset_link(uow).rsplit("/", 1)[1]
    with uow() as session:
        accounts.reset_password(session, token=token, new_password="a brand new password", settings=settings)
    with uow() as session:
        assert accounts.authenticate(
            session,
            email="reset@example.com",
            password="a brand new password",
            ip_address="1.1.1.1",
            settings=settings,
        )
        # Every session was logged out by the reset.
        assert accounts.resolve_session(session, token=session_token, kind="web") is None
    before = fingerprint(session_factory)
    with pytest.raises(Exception, match="already been used"), uow() as session:
        accounts.reset_password(session, token=token, new_password="yet another password", settings=settings)
    assert fingerprint(session_factory) == before


def test_expired_or_unknown_reset_link_is_refused_and_changes_nothing(uow, session_factory, settings):
    with uow() as session:
        factories.customer(session, settings, email="late@example.com")
        accounts.request_password_reset(session, email="late@example.com", settings=settings)
    token = _reset_link(uow).rsplit("/", 1)[1]
    before = fingerprint(session_factory)
    with time_machine.travel(utcnow() + timedelta(minutes=settings.password_reset_minutes + 1), tick=False):
        with pytest.raises(Exception, match="expired"), uow() as session:
            accounts.reset_password(
                session, token=token, new_password="a brand new password", settings=settings
            )
    with pytest.raises(Exception, match="not valid"), uow() as session:
        accounts.reset_password(
            session, token="forged", new_password="a brand new password", settings=settings
        )
    with pytest.raises(ValidationFailed), uow() as session:
        accounts.reset_password(session, token=token, new_password="short", settings=settings)
    assert fingerprint(session_factory) == before


def test_reset_for_unknown_email_sends_nothing(uow, session_factory, settings):
    before = fingerprint(session_factory)
    with uow() as session:
        accounts.request_password_reset(session, email="ghost@example.com", settings=settings)
    assert fingerprint(session_factory) == before


def test_change_password_checks_the_current_one_and_keeps_this_session(uow, session_factory, settings):
    with uow() as session:
        customer = factories.customer(session, settings)
        keep = accounts.open_session(
            session, kind="web", lifetime=timedelta(hours=1), customer_id=customer.id
        )
        other = accounts.open_session(
            session, kind="api", lifetime=timedelta(hours=1), customer_id=customer.id
        )
    before = fingerprint(session_factory)
    with pytest.raises(AuthenticationFailed), uow() as session:
        accounts.change_password(
            session,
            customer_id=customer.id,
            current_password="wrong",
            new_password="another password",
            keep_session_hash=None,
        )
    assert fingerprint(session_factory) == before
    from airtime.security import token_hash

    with uow() as session:
        accounts.change_password(
            session,
            customer_id=customer.id,
            current_password=factories.PASSWORD,
            new_password="another password",
            keep_session_hash=token_hash(keep),
        )
    with uow() as session:
        assert accounts.resolve_session(session, token=keep, kind="web") is not None
        assert accounts.resolve_session(session, token=other, kind="api") is None
        assert session.scalar(select(PasswordResetToken.token_hash)) is None
        assert (
            session.scalar(select(AuthSession.token_hash).where(AuthSession.revoked_at.is_(None))) is not None
        )
        assert session.scalar(select(Line.id)) is None
