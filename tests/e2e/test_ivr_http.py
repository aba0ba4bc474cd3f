"""IVR over HTTP on both databases: calls signed as Twilio signs them, answered in TwiML."""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta

import pytest
from babel.dates import format_date
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from airtime.channels.models import PhoneSession
from airtime.db.session import unit_of_work
from airtime.ledger.service import balance_of
from airtime.topups.models import TopupOrder
from tests import topup_helpers, voucher_helpers
from tests.e2e.test_ussd_http import Gateway
from tests.snapshot import fingerprint

AUTH_TOKEN = "twilio-test-auth-token"
CALLER = "+447911123456"
ATTEMPT_TABLES = {"voucher_attempts", "voucher_locks", "rate_limit_counters", "phone_sessions"}


@pytest.fixture
def settings(settings):
    return settings.model_copy(
        update={"twilio_auth_token": AUTH_TOKEN, "ussd_shared_secret": "ussd-test-secret"}
    )


class Call:
    """Plays Twilio: one CallSid, each request signed over the public URL and the form."""

    def __init__(self, client, settings, *, caller=CALLER, token=AUTH_TOKEN):
        self.client = client
        self.base_url = settings.base_url
        self.caller = caller
        self.token = token
        self.sid = "CA" + uuid.uuid4().hex

    def post(self, path, *, digits=None, signature=None, expect=200):
        params = {
            "CallSid": self.sid,
            "AccountSid": "AC" + "0" * 32,
            "From": self.caller,
            "To": "+447700900000",
        }
        if digits is not None:
            params["Digits"] = digits
        if signature is None:
            signature = RequestValidator(self.token).compute_signature(self.base_url + path, params)
        response = self.client.post(path, data=params, headers={"X-Twilio-Signature": signature})
        assert response.status_code == expect, response.text
        if expect == 200:
            assert response.headers["content-type"].startswith("application/xml")
            assert response.text.startswith('<?xml version="1.0" encoding="UTF-8"?><Response>')
        return response.text

    def start(self):
        return self.post("/ivr/voice")

    def enter(self, pin):
        return self.post("/ivr/voice/pin", digits=pin)

    def confirm(self, digit="1"):
        return self.post("/ivr/voice/confirm", digits=digit)


def _line(session_factory, settings):
    with unit_of_work(session_factory) as session:
        return topup_helpers.line_with_catalogue(session, settings)


def _balance(session_factory, line):
    with unit_of_work(session_factory) as session:
        return balance_of(session, line.main_account_id)


def test_full_pin_flow_with_a_re_entry(client, session_factory, settings, tmp_path):
    line = _line(session_factory, settings)
    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path)
    pin = rows[0]["pin"].replace(" ", "")
    call = Call(client, settings)
    greeting = call.start()
    assert '<Say language="en-GB">Welcome to Airtime Mobile voucher top-up.</Say>' in greeting
    assert (
        '<Gather action="http://testserver/ivr/voice/pin" actionOnEmptyResult="true" finishOnKey="#"'
        ' input="dtmf" method="POST" timeout="10">'
    ) in greeting
    mistyped = call.enter("1234")
    assert "You entered 1 2 3 4. Press 1 if that is right, or 2 to enter it again." in mistyped
    assert 'action="http://testserver/ivr/voice/confirm"' in mistyped and 'numDigits="1"' in mistyped
    assert "Enter the voucher PIN" in call.confirm("2")
    read_back = call.enter(pin)
    spoken = ", ".join(" ".join(pin[index : index + 4]) for index in range(0, 16, 4))
    assert f"You entered {spoken}." in read_back
    # While it waits for the caller's "1", the PIN is in the session row only sealed.
    with unit_of_work(session_factory) as session:
        kept = [json.dumps(row.data) for row in session.scalars(select(PhoneSession))]
    assert kept and all(pin not in data for data in kept) and any("pin_sealed" in data for data in kept)
    done = call.confirm("1")
    with unit_of_work(session_factory) as session:
        assert all("pin_sealed" not in row.data for row in session.scalars(select(PhoneSession)))
    validity = line.validity_date + timedelta(days=60)  # £10 adds 60 days by the test plan's tiers
    assert (
        f"Thank you. £10.00 has been added. Your balance is £10.00, valid until "
        f"{format_date(validity, format='long', locale='en_GB')}. Goodbye."
    ) in done
    assert done.endswith("<Hangup /></Response>")
    assert _balance(session_factory, line) == 1000
    with unit_of_work(session_factory) as session:
        orders = session.scalars(select(TopupOrder)).all()
    assert [(order.channel, order.status, order.amount_minor) for order in orders] == [
        ("ivr", "credited", 1000)
    ]
    # Twilio repeats the request: the same call cannot redeem twice (the PIN was taken).
    assert "Enter the voucher PIN" in call.confirm("1")
    assert _balance(session_factory, line) == 1000


def test_bad_or_missing_signature_is_refused_and_nothing_moves(client, session_factory, settings, tmp_path):
    line = _line(session_factory, settings)
    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path)
    pin = rows[0]["pin"].replace(" ", "")
    call = Call(client, settings)
    call.start()
    call.enter(pin)
    before = fingerprint(session_factory, ignore=set())
    forged = Call(client, settings, token="not-the-auth-token")
    forged.sid = call.sid
    forged.post("/ivr/voice/confirm", digits="1", expect=403)
    call.post("/ivr/voice/confirm", digits="1", signature="", expect=403)
    call.post("/ivr/voice/confirm", digits="1", signature="bm90IGEgc2lnbmF0dXJl", expect=403)
    # Signed for another URL (a replay against another step) is refused too.
    params = {"CallSid": call.sid, "From": CALLER, "Digits": "1"}
    other = RequestValidator(AUTH_TOKEN).compute_signature("http://testserver/ivr/voice/pin", params)
    assert (
        client.post("/ivr/voice/confirm", data=params, headers={"X-Twilio-Signature": other}).status_code
        == 403
    )
    assert fingerprint(session_factory, ignore=set()) == before
    assert _balance(session_factory, line) == 0
    assert "has been added" in call.confirm("1")  # the real Twilio request still works


def test_no_signature_token_configured_refuses_everything(client, session_factory, settings):
    _line(session_factory, settings)
    client.app.state.settings = settings.model_copy(update={"twilio_auth_token": ""})
    Call(client, settings).post("/ivr/voice", expect=403)


def test_silence_is_asked_again_then_the_call_ends(client, session_factory, settings):
    _line(session_factory, settings)
    call = Call(client, settings)
    call.start()
    for _ in range(settings.ivr_no_input_retries_max):
        again = call.enter("")
        assert "Sorry, we did not hear any keys." in again and "Enter the voucher PIN" in again
    ended = call.enter("")
    assert "We did not hear any keys. Nothing was charged. Goodbye." in ended and "<Hangup />" in ended


def test_wrong_pins_end_the_call_and_share_the_voucher_lockout(client, session_factory, settings, tmp_path):
    line = _line(session_factory, settings)
    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path)
    before = fingerprint(session_factory, ignore=ATTEMPT_TABLES)
    first = Call(client, settings)
    first.start()
    for attempt in range(settings.ivr_wrong_pins_per_call_max):
        first.enter(f"111122223333{attempt:04d}")
        answer = first.confirm("1")
        assert "This PIN is not valid. Check the digits and try again." in answer
    assert "Nothing was charged. Goodbye.</Say><Hangup />" in answer
    # The caller rings again: two more wrong PINs reach the lockout shared with every channel.
    second = Call(client, settings)
    second.start()
    second.enter("1111222233339998")
    assert "Enter the voucher PIN" in second.confirm("1")
    second.enter("1111222233339999")
    locked = second.confirm("1")
    assert re.search(
        r"Too many wrong PINs\. Voucher top-up is locked until \d{4}-\d\d-\d\d \d\d:\d\d UTC\.", locked
    )
    assert locked.endswith("<Hangup /></Response>")
    assert fingerprint(session_factory, ignore=ATTEMPT_TABLES) == before
    # The right PIN is refused now, by phone and by USSD alike.
    third = Call(client, settings)
    third.start()
    third.enter(rows[0]["pin"].replace(" ", ""))
    assert "locked until" in third.confirm("1")
    assert "locked until" in Gateway(client).send(rows[0]["pin"].replace(" ", ""))
    assert _balance(session_factory, line) == 0


def test_unknown_caller_hears_why_and_the_call_ends(client, session_factory, settings):
    _line(session_factory, settings)
    answer = Call(client, settings, caller="+447700900999").start()
    assert "This number is not on Airtime Mobile, so it cannot be topped up by phone. Goodbye." in answer
    assert "<Hangup />" in answer


def test_the_call_speaks_chinese_when_the_number_chose_it(client, session_factory, settings, tmp_path):
    _line(session_factory, settings)
    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path)
    Gateway(client).walk("4*2")
    call = Call(client, settings)
    assert '<Say language="cmn-CN">欢迎使用Airtime Mobile充值卡充值。</Say>' in call.start()
    call.enter(rows[0]["pin"].replace(" ", ""))
    done = call.confirm("1")
    assert "谢谢。已充值 £10.00。您的余额为 £10.00，有效期至 " in done and "日。再见。" in done
