"""USSD over HTTP on both databases: real gateway callback sequences (Africa's Talking style)."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
import time_machine
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from airtime.app import create_app
from airtime.channels.ussd import (
    CUT_MARK_GSM7,
    CUT_MARK_UCS2,
    GSM7_SCREEN_SEPTETS_MAX,
    UCS2_SCREEN_CHARACTERS_MAX,
    fits_screen,
    gsm7_septets,
    screen,
)
from airtime.clock import utcnow
from airtime.db.session import unit_of_work
from airtime.ledger.models import AccountKind
from airtime.ledger.service import Leg, balance_of, operator_account, post_transfer
from airtime.topups.models import Bundle, LineAllowance, TopupOrder
from airtime.vouchers.models import RedemptionAttempt
from tests import factories, topup_helpers, voucher_helpers
from tests.snapshot import fingerprint

SECRET = "ussd-test-secret"
CALLER = "+447911123456"
# Tables a refused redemption may change: counted attempts, locks, the session's last-seen time.
ATTEMPT_TABLES = {"voucher_attempts", "voucher_locks", "rate_limit_counters", "phone_sessions"}


@pytest.fixture
def settings(settings):
    return settings.model_copy(update={"ussd_shared_secret": SECRET, "ussd_session_timeout_seconds": 180})


class Gateway:
    """Plays the USSD gateway: one session id, ``text`` grows with each answer."""

    def __init__(self, client, *, phone=CALLER, service_code="*123#", session_id=None):
        self.client = client
        self.phone = phone
        self.service_code = service_code
        self.session_id = session_id or f"ATUid_{uuid.uuid4().hex}"
        self.screens: list[str] = []

    def send(self, text, *, secret=SECRET, expect=200):
        response = self.client.post(
            "/ussd",
            params={"secret": secret} if secret is not None else {},
            data={
                "sessionId": self.session_id,
                "serviceCode": self.service_code,
                "phoneNumber": self.phone,
                "text": text,
                "networkCode": "63902",
            },
        )
        assert response.status_code == expect, response.text
        assert response.headers["content-type"].startswith("text/plain")
        if expect == 200:
            assert response.text.startswith(("CON ", "END ")), response.text
            body = response.text[4:]
            assert fits_screen(body), f"too long for one screen ({len(body)} characters): {body}"
            assert not body.endswith((CUT_MARK_GSM7, CUT_MARK_UCS2)), f"screen was cut: {body}"
            self.screens.append(response.text)
        return response.text

    def walk(self, path, **options):
        """Dial and answer each screen in turn, as a person does; the last answer."""
        parts = path.split("*") if path else []
        for depth in range(len(parts)):
            self.send("*".join(parts[:depth]), **options)
        return self.send(path, **options)


def _line(session_factory, settings, **line_args):
    with unit_of_work(session_factory) as session:
        return topup_helpers.line_with_catalogue(session, settings, **line_args)


def _balance(session_factory, line):
    with unit_of_work(session_factory) as session:
        return balance_of(session, line.main_account_id)


def test_balance_and_validity_of_the_callers_line(client, session_factory, settings):
    line = _line(session_factory, settings, balance_minor=1250)
    gateway = Gateway(client)
    menu = gateway.send("")
    assert menu.startswith("CON ") and "1 Balance and validity" in menu
    # "4 Language / 语言" would make the English menu UCS-2, where it does not fit (80
    # characters): it says "Language" alone and stays GSM-7.
    assert menu.endswith("\n4 Language") and gsm7_septets(menu) is not None
    shown = gateway.send("1")
    assert shown.startswith("END ")
    assert "Balance: £12.50" in shown
    assert f"Valid until {line.validity_date.isoformat()}" in shown and "Line active" in shown


def test_unknown_number_is_told_clearly(client, session_factory, settings):
    _line(session_factory, settings)
    shown = Gateway(client, phone="+447700900999").walk("1")
    assert shown.startswith("END ") and "This number (+447700900999) is not on Airtime Mobile" in shown


def test_redeem_a_released_pin_onto_the_callers_line(client, session_factory, settings, tmp_path):
    line = _line(session_factory, settings)
    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path)
    pin = rows[0]["pin"].replace(" ", "")
    gateway = Gateway(client)
    assert "Redeem a voucher" in gateway.send("")
    assert "Enter the voucher PIN" in gateway.send("2")
    assert "1 This number" in gateway.send(f"2*{pin}")
    done = gateway.send(f"2*{pin}*1")
    assert done.startswith("END Done: £10.00 added.") and "Balance: £10.00" in done and "Receipt " in done
    assert _balance(session_factory, line) == 1000
    # The gateway retries the same step: the same answer, credited once.
    assert gateway.send(f"2*{pin}*1") == done
    assert _balance(session_factory, line) == 1000
    with unit_of_work(session_factory) as session:
        orders = session.scalars(select(TopupOrder)).all()
    assert [(order.channel, order.status) for order in orders] == [("ussd", "credited")]


def test_redeem_onto_another_number(client, session_factory, settings, tmp_path):
    _line(session_factory, settings)
    with unit_of_work(session_factory) as session:
        friend = factories.line(session, settings, msisdn="+447911000111")
    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path)
    gateway = Gateway(client)
    gateway.send("")
    gateway.send("2")
    gateway.send(f"2*{rows[0]['pin']}")
    assert "Enter the number" in gateway.send(f"2*{rows[0]['pin']}*2")
    done = gateway.send(f"2*{rows[0]['pin']}*2*07911000111")
    assert done.startswith("END Done: £10.00 added to +447") and "Balance" not in done
    assert _balance(session_factory, friend) == 1000


def test_shortcut_redeems_at_once(client, session_factory, settings, tmp_path):
    line = _line(session_factory, settings)
    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path)
    pin = rows[0]["pin"].replace(" ", "")
    # *123*PIN# arrives as serviceCode *123# with the PIN as the first text ...
    assert Gateway(client).send(pin).startswith("END Done: £10.00 added.")
    # ... or, on some gateways, inside the service code with an empty text.
    second = rows[1]["pin"].replace(" ", "")
    assert Gateway(client, service_code=f"*123*{second}#").send("").startswith("END Done: £10.00 added.")
    assert _balance(session_factory, line) == 2000


def test_wrong_pin_is_refused_and_nothing_moves(client, session_factory, settings, tmp_path):
    line = _line(session_factory, settings)
    voucher_helpers.released_pins(session_factory, settings, tmp_path)
    before = fingerprint(session_factory, ignore=ATTEMPT_TABLES)
    gateway = Gateway(client)
    gateway.send("")
    gateway.send("2")
    gateway.send("2*1111222233334444")
    shown = gateway.send("2*1111222233334444*1")
    assert shown == "END This PIN is not valid. Check the digits and try again."
    assert fingerprint(session_factory, ignore=ATTEMPT_TABLES) == before
    assert _balance(session_factory, line) == 0
    with unit_of_work(session_factory) as session:
        counted = session.scalars(select(RedemptionAttempt).where(RedemptionAttempt.channel == "ussd")).all()
    assert {attempt.key for attempt in counted} == {f"line:{line.id}", f"ip:tel:{CALLER}"}


def test_five_wrong_pins_lock_and_say_until_when(client, session_factory, settings, tmp_path):
    line = _line(session_factory, settings)
    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path)
    answers = [
        Gateway(client).walk(f"2*1111 2222 3333 {attempt:04d}*1")
        for attempt in range(settings.voucher_failures_max)
    ]
    assert all("This PIN is not valid" in shown for shown in answers[:-1])
    until = (utcnow() + timedelta(hours=settings.voucher_lock_hours)).strftime("%Y-%m-%d")
    assert re.fullmatch(
        rf"END Too many wrong PINs\. Voucher top-up is locked until {until} \d\d:\d\d UTC\.", answers[-1]
    )
    # Even the right PIN is refused now, and by the shortcut too: one lockout for every channel.
    right = rows[0]["pin"].replace(" ", "")
    assert "locked until" in Gateway(client).walk(f"2*{right}*1")
    assert "locked until" in Gateway(client).send(right)
    assert _balance(session_factory, line) == 0


def test_wrong_pins_onto_other_numbers_still_lock_the_caller(client, session_factory, settings, tmp_path):
    _line(session_factory, settings)
    with unit_of_work(session_factory) as session:
        for index in range(settings.voucher_failures_max + 1):
            factories.line(session, settings, msisdn=f"+44791100{index:04d}")
    for index in range(settings.voucher_failures_max):
        shown = Gateway(client).walk(f"2*1111222233334444*2*07911{index:06d}")
    assert "locked until" in shown
    # A fresh target number does not help: the calling number is locked.
    assert "locked until" in Gateway(client).walk(f"2*1111222233334444*2*07911{5:06d}")


def test_a_dropped_session_then_a_new_one(client, session_factory, settings, tmp_path):
    line = _line(session_factory, settings)
    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path)
    pin = rows[0]["pin"].replace(" ", "")
    dropped = Gateway(client)
    dropped.send("")
    dropped.send("2")
    dropped.send(f"2*{pin}")
    # The network dropped the call; the caller dials again: a new session, a fresh menu.
    again = Gateway(client)
    assert again.send("").startswith("CON Airtime Mobile\n1 Balance")
    assert "Enter the voucher PIN" in again.send("2")
    assert _balance(session_factory, line) == 0
    with time_machine.travel(utcnow() + timedelta(minutes=10), tick=False):
        # The old session's last step arrives late: it has expired, so it starts over and
        # nothing is redeemed.
        before = fingerprint(session_factory, ignore={"phone_sessions"})
        late = dropped.send(f"2*{pin}*1")
        assert late.startswith("CON Your session timed out. Start again:\nAirtime Mobile\n1 Balance")
        assert fingerprint(session_factory, ignore={"phone_sessions"}) == before
        # The caller goes on from the new menu: the gateway keeps adding to the same text.
        assert "Enter the voucher PIN" in dropped.send(f"2*{pin}*1*2")
        assert "1 This number" in dropped.send(f"2*{pin}*1*2*{pin}")
        assert dropped.send(f"2*{pin}*1*2*{pin}*1").startswith("END Done: £10.00 added.")
    assert _balance(session_factory, line) == 1000


def test_an_unknown_session_with_deep_text_starts_over(client, session_factory, settings):
    _line(session_factory, settings, balance_minor=5000)
    before = fingerprint(session_factory, ignore={"phone_sessions"})
    shown = Gateway(client).send("3*1*1")
    assert shown.startswith("CON Let's start again:\nAirtime Mobile")
    assert fingerprint(session_factory, ignore={"phone_sessions"}) == before


def test_bundle_purchase_with_a_retried_step_buys_once(client, session_factory, settings):
    line = _line(session_factory, settings, balance_minor=1500)
    gateway = Gateway(client)
    gateway.send("")
    listed = gateway.send("3")
    assert listed == "CON Balance £15.00. Buy:\n1 5 GB £10.00"
    assert gateway.send("3*1") == "CON Buy 5 GB for £10.00 from your balance?\n1 Yes\n2 No"
    done = gateway.send("3*1*1")
    assert done.startswith("END Done: 5 GB until ") and "Balance: £5.00" in done
    assert gateway.send("3*1*1") == done  # the gateway retried the step
    assert _balance(session_factory, line) == 500
    with unit_of_work(session_factory) as session:
        assert session.scalar(select(func.count()).select_from(LineAllowance)) == 1


def test_bundle_refused_when_the_balance_is_short_and_cancel(client, session_factory, settings):
    line = _line(session_factory, settings, balance_minor=300)
    before = fingerprint(session_factory, ignore={"phone_sessions"})
    shown = Gateway(client).walk("3*1*1")
    assert shown == "END Your balance of £3.00 is not enough for 5 GB (£10.00). Nothing was charged."
    assert Gateway(client).walk("3*1*2") == "END Cancelled. Nothing was charged."
    assert fingerprint(session_factory, ignore={"phone_sessions"}) == before
    assert _balance(session_factory, line) == 300


def test_language_switch_to_chinese_is_remembered(client, session_factory, settings):
    line = _line(session_factory, settings, balance_minor=1250)
    with unit_of_work(session_factory) as session:
        session.get(Bundle, 1).name_zh = "5GB 流量"
    gateway = Gateway(client)
    gateway.send("")
    assert gateway.send("4") == "CON Language / 语言\n1 English\n2 中文"
    assert gateway.send("4*2") == "END 语言已设为简体中文。"
    later = Gateway(client)
    menu = later.send("")
    assert "1 余额和有效期" in menu and "2 充值卡充值" in menu and menu.endswith("\n4 Language / 语言")
    shown = later.send("1")
    assert "余额：£12.50" in shown and f"有效期至{line.validity_date.isoformat()}" in shown
    bundles = Gateway(client)
    assert "5GB 流量" in bundles.walk("3")
    # And back to English.
    back = Gateway(client)
    assert back.walk("4*1") == "END Language set to English."


def test_every_screen_fits_in_both_languages(client, session_factory, settings, tmp_path):
    """Long data on purpose: six bundles with long names, a bonus balance, a long receipt, a
    long unknown caller's number, a balance too short for a bundle. Chinese screens go out
    as UCS-2 and hold 80 characters, English ones 182 (Gateway.send checks each screen in
    its own encoding, and that none was cut)."""
    line = _line(session_factory, settings, balance_minor=999_999)
    with unit_of_work(session_factory) as session:
        for index in range(6):
            session.add(
                Bundle(
                    code=f"LONG-{index}",
                    name="Unlimited data and minutes worldwide roaming " * 2,
                    name_zh="全球漫游无限流量和通话分钟套餐" * 2,
                    currency="GBP",
                    price_minor=99_999,
                    data_mb=1,
                    validity_days=30,
                )
            )
        expense = operator_account(session, kind=AccountKind.PROMOTION_EXPENSE, currency="GBP")
        post_transfer(
            session,
            transfer_id="test-bonus",
            kind="test_bonus",
            currency="GBP",
            legs=[Leg(expense, -888_888), Leg(line.bonus_account_id, 888_888)],
            description="Bonus",
        )
        poor = factories.line(session, settings, msisdn="+447911000222", balance_minor=1)
        friend = factories.line(session, settings, msisdn="+447911000111")
        # One caller a language who types wrong PINs until voucher top-up locks.
        lockers = {
            choice: factories.line(session, settings, msisdn=msisdn).msisdn
            for choice, msisdn in (("1", "+447911000333"), ("2", "+447911000444"))
        }
    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path)
    unknown = "+4477009009999999999"  # 20 characters, the most a screen repeats
    for language_choice, first, second in (("1", rows[0], rows[1]), ("2", rows[2], rows[3])):
        pin, other_pin = first["pin"], second["pin"]
        for phone in (CALLER, poor.msisdn, unknown, lockers[language_choice]):
            Gateway(client, phone=phone).walk(f"4*{language_choice}")
        for path in ("", "1", "2", f"2*{pin}", f"2*{pin}*2", "3", "3*1", "3*1*1", "3*2*2", "4", "9"):
            Gateway(client).walk(path)
        Gateway(client).walk(f"2*{pin}*1")  # checked by Gateway.send: fits, not cut
        Gateway(client).walk(f"2*{pin}*1")  # "already used on ..."
        Gateway(client).walk(f"2*{other_pin}*2*07911000111")
        Gateway(client).walk("2*0000111122223333*1")
        Gateway(client, phone=poor.msisdn).walk("3*1*1")  # the balance is too short
        Gateway(client, phone=unknown).walk("1")
        for attempt in range(settings.voucher_failures_max + 1):  # then "locked until ..."
            Gateway(client, phone=lockers[language_choice]).walk(f"2*1111 2222 3333 {attempt:04d}*1")
        timed_out = Gateway(client)
        timed_out.send("")
        with time_machine.travel(utcnow() + timedelta(minutes=10)):
            timed_out.send("2")  # "your session timed out" and the menu, on one screen
    chinese_menu = Gateway(client).send("")
    assert gsm7_septets(chinese_menu) is None, "the Chinese screens are checked as UCS-2"
    assert _balance(session_factory, line) > 0
    assert _balance(session_factory, friend) == 2000  # one voucher in each language


def test_a_chinese_bundle_list_shows_as_many_bundles_as_fit(client, session_factory, settings):
    """In UCS-2 a screen keeps fewer bundles, with shorter names; "0" shows the next screen
    until every bundle was offered, in both languages, and a choice means what was shown."""
    line = _line(session_factory, settings, balance_minor=999_999)
    with unit_of_work(session_factory) as session:
        for index in range(6):
            session.add(
                Bundle(
                    code=f"LONG-{index}",
                    name=f"Roaming pack {index} with data and minutes",
                    name_zh=f"全球漫游无限流量和通话分钟套餐{index}",
                    currency="GBP",
                    price_minor=90_000 + index,
                    data_mb=1,
                    validity_days=30,
                )
            )

    def every_screen(gateway: Gateway) -> list[list[str]]:
        pages, path = [], "3"
        while True:
            listed = gateway.send(path).split("\n")[1:]
            more = listed[-1].startswith("0 ")
            pages.append(listed[:-1] if more else listed)
            if not more:
                return pages
            path += "*0"

    english = Gateway(client)
    english.send("")
    english_pages = every_screen(english)
    assert [len(page) for page in english_pages] == [5, 2]  # five at most, then "0 More"
    assert english.screens[1].endswith("\n0 More")
    Gateway(client).walk("4*2")
    chinese = Gateway(client)
    chinese.send("")
    chinese_pages = every_screen(chinese)
    # The helpers' catalogue bundle ("5 GB", £10.00, no Chinese name) comes first, by price.
    assert chinese_pages[0][0] == "1 5 GB £10.00" and len(chinese_pages[0]) < 5, chinese_pages
    assert chinese.screens[1].endswith("\n0 更多")
    offered = [entry.split(" ", 1)[1] for page in chinese_pages for entry in page]
    assert len(offered) == 7 and all(name.startswith("全球漫游") for name in offered[1:])
    assert all(
        page == [f"{n} {entry.split(' ', 1)[1]}" for n, entry in enumerate(page, 1)] for page in chinese_pages
    )
    # Buying from the second screen: its first bundle, whatever the first screen held.
    second = chinese_pages[1][0].split(" ", 1)[1]
    before = _balance(session_factory, line)
    confirm = Gateway(client).walk("3*0*1")
    assert second.rsplit(" ", 1)[0] in confirm and second.rsplit(" ", 1)[1] in confirm
    assert Gateway(client).walk("3*0*1*1").startswith("END ")
    price = int(float(second.rsplit("£", 1)[1].replace(",", "")) * 100)
    assert before - _balance(session_factory, line) == price
    last = len(chinese_pages[0])
    assert Gateway(client).walk(f"3*{last + 1}").startswith("END ")  # not shown, not a choice
    assert (
        Gateway(client).walk("3" + "*0" * len(chinese_pages)).startswith("END ")
    )  # no screen after the last


@pytest.mark.parametrize(
    ("body", "fits"),
    [
        ("a" * GSM7_SCREEN_SEPTETS_MAX, True),
        ("a" * (GSM7_SCREEN_SEPTETS_MAX + 1), False),
        ("£@é\n" * (GSM7_SCREEN_SEPTETS_MAX // 4), True),  # all in the default alphabet
        ("€" * (GSM7_SCREEN_SEPTETS_MAX // 2), True),  # the extension table: two septets each
        ("€" * (GSM7_SCREEN_SEPTETS_MAX // 2 + 1), False),
        ("余" * UCS2_SCREEN_CHARACTERS_MAX, True),
        ("余" * (UCS2_SCREEN_CHARACTERS_MAX + 1), False),
        ("a" * (UCS2_SCREEN_CHARACTERS_MAX - 1) + "余", True),  # one Chinese character: UCS-2
        ("a" * UCS2_SCREEN_CHARACTERS_MAX + "余", False),
        ("a" * UCS2_SCREEN_CHARACTERS_MAX + "…", False),  # … is not GSM-7 either
    ],
)
def test_the_screen_limit_follows_the_encoding(body, fits):
    assert fits_screen(body) is fits


@pytest.mark.parametrize("body", ["x" * 400, "余额" * 100, "a" * 150 + "余", "€" * 150, "😀" * 60])
def test_a_screen_too_long_is_cut_to_fit_its_encoding(body):
    shown = screen("END", body)[4:]
    assert fits_screen(shown)
    assert shown.endswith(CUT_MARK_GSM7 if gsm7_septets(body) is not None else CUT_MARK_UCS2)
    assert len(shown) > 30  # cut to the limit, not to nothing


def test_unauthenticated_callbacks_are_refused_and_nothing_moves(client, session_factory, settings, tmp_path):
    line = _line(session_factory, settings)
    _, rows = voucher_helpers.released_pins(session_factory, settings, tmp_path)
    before = fingerprint(session_factory, ignore=set())
    pin = rows[0]["pin"].replace(" ", "")
    assert Gateway(client).walk(f"2*{pin}*1", secret=None, expect=403).startswith("END ")
    Gateway(client).walk(f"2*{pin}*1", secret="wrong", expect=403)
    Gateway(client).send(pin, secret="", expect=403)
    assert fingerprint(session_factory, ignore=set()) == before
    assert _balance(session_factory, line) == 0


def test_the_secret_may_come_as_a_header(client, session_factory, settings):
    _line(session_factory, settings, balance_minor=100)
    response = client.post(
        "/ussd",
        headers={"X-USSD-Secret": SECRET},
        data={"sessionId": "s-1", "serviceCode": "*123#", "phoneNumber": CALLER, "text": ""},
    )
    assert response.status_code == 200 and response.text.startswith("CON Airtime Mobile\n1 Balance")


@pytest.mark.parametrize(
    ("allowed", "secret", "status"),
    [
        (["10.1.0.0/16"], "", 200),
        (["10.1.0.0/16"], SECRET, 200),
        (["192.0.2.0/24"], SECRET, 403),  # right secret, wrong address
        ([], "", 403),  # nothing configured: nothing accepted
    ],
)
def test_ip_allow_list(settings, session_factory, allowed, secret, status):
    _line(session_factory, settings, balance_minor=100)
    configured = settings.model_copy(update={"ussd_allowed_ips": allowed, "ussd_shared_secret": secret})
    with TestClient(create_app(configured, run_background_jobs=False), client=("10.1.2.3", 4000)) as gateway:
        response = gateway.post(
            "/ussd",
            params={"secret": SECRET},
            data={"sessionId": "s-1", "serviceCode": "*123#", "phoneNumber": CALLER, "text": "1"},
        )
    assert response.status_code == status, response.text


def test_ussd_is_not_in_the_public_api_schema(client):
    assert not any(path.startswith(("/ussd", "/ivr")) for path in client.get("/openapi.json").json()["paths"])
