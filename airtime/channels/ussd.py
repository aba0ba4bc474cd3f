"""USSD: the gateway callback (Africa's Talking convention) and the menu behind it.

The gateway posts ``sessionId``, ``serviceCode``, ``phoneNumber`` and ``text`` (everything the
caller typed in this session, joined by ``*``) and shows our plain-text answer: ``CON ...``
waits for more input, ``END ...`` closes the session. The menu is worked out from ``text``
each time; the session row only says whether the session is still live, what was shown
(the bundle list) and where ``text`` starts after a restart.

    ""            menu: 1 balance, 2 voucher, 3 bundle, 4 language
    "1"           balance and validity of the caller's line
    "2*PIN*1"     redeem onto the caller's line; "2*PIN*2*NUMBER" onto another number
    "3*N*1"       buy the N-th bundle shown, from the balance ("3*N*2" cancels);
                  "3*0" shows the next screen of bundles, "3*0*N*1" buys from it
    "4*1" "4*2"   English / 中文, remembered for the number
    PIN           the shortcut *123*PIN# redeems at once onto the caller's line
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from airtime.accounts.models import Line, LineState
from airtime.accounts.phone import mask_msisdn
from airtime.accounts.service import LineView
from airtime.channels import service as channels
from airtime.channels.models import PhoneSession
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.errors import AppError
from airtime.i18n import LANGUAGES, N_, gettext
from airtime.money import format_money
from airtime.topups import service as topups
from airtime.topups.models import Bundle, Channel
from airtime.vouchers import service as vouchers
from airtime.vouchers.pins import normalize_pin

router = APIRouter(include_in_schema=False)
# What one USSD screen holds depends on how the network encodes its text. A screen is 160
# octets of user data: 182 septets when every character is in the GSM 03.38 default alphabet
# (GSM 7-bit; a character of its extension table, such as € or [, takes two septets), else the
# text goes as UCS-2, two octets a character, and 80 characters fit (a character outside the
# Basic Multilingual Plane takes two). Any Chinese character makes the whole screen UCS-2.
GSM7_SCREEN_SEPTETS_MAX = 182
UCS2_SCREEN_CHARACTERS_MAX = 80
CALLBACK_BODY_BYTES_MAX = 8 * 1024
TEXT_LENGTH_MAX = 400
BUNDLES_SHOWN_MAX = 5
MORE = "0"  # the choice that shows the next screen of bundles
BUNDLE_NAME_CHARACTERS_MAX = 20
# A bundle name on a UCS-2 screen (Chinese): shorter, so the list keeps several bundles.
BUNDLE_NAME_UCS2_CHARACTERS_MAX = 10
SECRET_HEADER = "x-ussd-secret"  # noqa: S105 - the name of the header, not a secret
SECRET_QUERY = "secret"  # noqa: S105 - the name of the query parameter

LINE_STATES = {
    LineState.PENDING_ACTIVATION: N_("not active yet"),
    LineState.ACTIVE: N_("active"),
    LineState.GRACE: N_("in grace: incoming only"),
    LineState.SUSPENDED: N_("suspended"),
    LineState.TERMINATED: N_("out of service"),
}


def _text(language: str, message: str, /, **params: object) -> str:
    translated = gettext(language, message)
    return translated % params if params else translated


# The GSM 03.38 default alphabet (one septet each) and its extension table (two septets each).
GSM7_BASIC_CHARACTERS = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION_CHARACTERS = frozenset("\f^{}\\[~]|€")
# Where a cut screen ends: "…" is not GSM-7, so a GSM-7 screen ends with three dots instead
# (an ellipsis would turn the whole screen into UCS-2 and make it too long).
CUT_MARK_GSM7 = "..."
CUT_MARK_UCS2 = "…"


def gsm7_septets(text: str) -> int | None:
    """How many septets ``text`` takes in GSM 7-bit, or None if it cannot be sent so."""
    septets = 0
    for character in text:
        if character in GSM7_BASIC_CHARACTERS:
            septets += 1
        elif character in GSM7_EXTENSION_CHARACTERS:
            septets += 2
        else:
            return None
    return septets


def ucs2_characters(text: str) -> int:
    """How many UCS-2 (UTF-16) code units ``text`` takes."""
    return len(text.encode("utf-16-le")) // 2


def fits_screen(body: str) -> bool:
    """Whether ``body`` fits one USSD screen in the encoding the network will use for it."""
    septets = gsm7_septets(body)
    if septets is not None:
        return septets <= GSM7_SCREEN_SEPTETS_MAX
    return ucs2_characters(body) <= UCS2_SCREEN_CHARACTERS_MAX


def _cut(body: str) -> str:
    """The longest start of ``body`` that fits, with a mark that says it was cut."""
    mark = CUT_MARK_GSM7 if gsm7_septets(body) is not None else CUT_MARK_UCS2
    low, high = 0, len(body)  # the longest prefix that fits with the mark; fitting is monotone
    while low < high:
        middle = (low + high + 1) // 2
        if fits_screen(body[:middle] + mark):
            low = middle
        else:
            high = middle - 1
    return body[:low] + mark


def screen(kind: str, body: str) -> str:
    """A reply that fits one USSD screen: ``CON``/``END``, a space, then at most
    ``GSM7_SCREEN_SEPTETS_MAX`` septets of GSM-7 text or ``UCS2_SCREEN_CHARACTERS_MAX``
    characters of anything else (the tests keep every real screen under it, in both
    languages; the cut is a last resort so a long bundle name can never make the gateway
    drop the reply)."""
    assert kind in ("CON", "END")
    if not fits_screen(body):
        body = _cut(body)
    return f"{kind} {body}"


@dataclass(frozen=True, slots=True)
class UssdCallback:
    session_id: str
    service_code: str
    phone_number: str
    text: str


@dataclass(slots=True)
class _Call:
    """One callback being answered: what every step needs."""

    session: Session
    settings: Settings
    callback: UssdCallback
    row: PhoneSession
    line: Line | None
    language: str
    inputs: list[str] = field(default_factory=list)

    def _(self, message: str, /, **params: object) -> str:
        return _text(self.language, message, **params)


# --- authentication ----------------------------------------------------------------------


def authorised(request: Request, settings: Settings) -> bool:
    """The gateway proves itself by the shared secret and/or its address; with neither
    configured nothing is accepted (a USSD endpoint open to anyone could be driven by a script
    posing as any caller)."""
    secret, networks = settings.ussd_shared_secret, settings.ussd_allowed_ips
    if not secret and not networks:
        return False
    if secret:
        given = request.headers.get(SECRET_HEADER) or request.query_params.get(SECRET_QUERY) or ""
        if not hmac.compare_digest(given.encode(), secret.encode()):
            return False
    if networks:
        host = request.client.host if request.client else ""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if not any(address in ipaddress.ip_network(network, strict=False) for network in networks):
            return False
    return True


@router.post("/ussd")
async def ussd_callback(request: Request) -> Response:
    """The USSD gateway's callback; answers ``CON ...`` or ``END ...`` as text/plain."""
    settings: Settings = request.app.state.settings
    if not authorised(request, settings):
        return PlainTextResponse("END Not allowed.", status_code=403)
    body = await request.body()
    if len(body) > CALLBACK_BODY_BYTES_MAX:
        return PlainTextResponse("END Request too large.", status_code=413)
    form = await request.form()
    callback = UssdCallback(
        session_id=str(form.get("sessionId", "")).strip(),
        service_code=str(form.get("serviceCode", "")).strip(),
        phone_number=str(form.get("phoneNumber", "")).strip(),
        text=str(form.get("text", "")).strip(),
    )
    if not callback.session_id or not callback.phone_number or len(callback.text) > TEXT_LENGTH_MAX:
        return PlainTextResponse("END Invalid request.", status_code=400)
    reply = await run_in_threadpool(answer, request.app.state.session_factory, settings, callback)
    return PlainTextResponse(reply)


# --- the menu ----------------------------------------------------------------------------


def answer(factory: sessionmaker[Session], settings: Settings, callback: UssdCallback) -> str:
    """The reply to one callback, in one transaction. A refusal that must be remembered (a
    wrong PIN, counted towards the lockout) is committed by the unit of work; any other
    refusal leaves nothing changed."""
    language: str = settings.default_language
    try:
        with unit_of_work(factory) as session:
            opened = channels.open_session(
                session,
                channel=Channel.USSD,
                gateway_id=callback.session_id,
                msisdn=callback.phone_number,
                timeout_seconds=settings.ussd_session_timeout_seconds,
            )
            line = channels.caller_line(session, msisdn=callback.phone_number, settings=settings)
            language = channels.language_for(
                session, msisdn=callback.phone_number, line=line, settings=settings
            )
            call = _Call(session, settings, callback, opened.row, line, language)
            return _route(call, opened.status)
    except AppError as error:
        return screen("END", error.localized(language))


def _route(call: _Call, status: str) -> str:
    text, row = call.callback.text, call.row
    shortcut = _shortcut_pin(call.callback)
    if status != channels.SessionStatus.LIVE and shortcut is not None:
        return _redeem(call, pin=shortcut, line=call.line)
    if status != channels.SessionStatus.LIVE and text:
        # We do not know where this caller is (the session expired, or we never saw it):
        # start again from the menu, reading ``text`` from here on. Nothing typed before is
        # acted on, so a late "yes" can never buy or redeem anything.
        row.text_offset = text
        if status == channels.SessionStatus.EXPIRED:
            return screen("CON", _menu_body(call, call._("Your session timed out. Start again:")))
        return screen("CON", _menu_body(call, call._("Let's start again:")))
    if status == channels.SessionStatus.EXPIRED:
        row.text_offset = ""
    if row.text_offset and not (text == row.text_offset or text.startswith(row.text_offset + "*")):
        row.text_offset = text
        return screen("CON", _menu_body(call, call._("Let's start again:")))
    relative = text[len(row.text_offset) :].lstrip("*")
    call.inputs = relative.split("*") if relative else []
    return _step(call)


def _shortcut_pin(callback: UssdCallback) -> str | None:
    """A PIN dialled with the service code (``*123*PIN#``): gateways send it either as the
    first ``text`` or inside ``serviceCode``."""
    if callback.text and "*" not in callback.text and normalize_pin(callback.text):
        return callback.text
    parts = callback.service_code.strip("#").split("*")
    if not callback.text and len(parts) > 2 and normalize_pin(parts[-1]):
        return parts[-1]
    return None


# The language item names both languages, so a reader of either finds it; but "语言" makes
# a screen UCS-2 (80 characters), and the English menu does not fit in 80, so where the
# bilingual item does not fit, the menu says "Language" alone and stays GSM-7 (182).
LANGUAGE_ITEM = "4 Language / 语言"
LANGUAGE_ITEM_GSM7 = "4 Language"


def _menu_body(call: _Call, heading: str | None = None) -> str:
    """The main menu (after ``heading``, if any), with the bilingual language item if the
    screen has room for it."""
    lines = [heading] if heading else []
    lines += [
        call.settings.operator_name,
        "1 " + call._("Balance and validity"),
        "2 " + call._("Redeem a voucher"),
        "3 " + call._("Buy a bundle"),
    ]
    body = "\n".join([*lines, LANGUAGE_ITEM])
    return body if fits_screen(body) else "\n".join([*lines, LANGUAGE_ITEM_GSM7])


def _step(call: _Call) -> str:
    inputs = call.inputs
    if not inputs:
        return screen("CON", _menu_body(call))
    choice, rest = inputs[0], inputs[1:]
    if choice == "1" and not rest:
        return _balance(call)
    if choice == "2":
        return _voucher_step(call, rest)
    if choice == "3":
        return _bundle_step(call, rest)
    if choice == "4":
        return _language_step(call, rest)
    return _invalid(call)


def _invalid(call: _Call) -> str:
    return screen(
        "END",
        call._("That is not one of the choices. Dial %(code)s again.", code=call.settings.ussd_service_code),
    )


def _not_our_line(call: _Call) -> str:
    return screen(
        "END",
        call._(
            "This number (%(msisdn)s) is not on %(operator)s, so there is nothing to show or buy.",
            msisdn=call.callback.phone_number[:20],
            operator=call.settings.operator_name,
        ),
    )


def _validity(call: _Call, view: LineView) -> str:
    if view.validity_date is None:
        return call._("No expiry date")
    return call._("Valid until %(date)s", date=view.validity_date.isoformat())


def _balance(call: _Call) -> str:
    if call.line is None:
        return _not_our_line(call)
    view = channels.read_line(call.session, call.line)
    lines = [
        call._("Balance: %(amount)s", amount=format_money(view.balance_minor, view.currency, call.language)),
    ]
    if view.bonus_minor:
        lines.append(
            call._("Bonus: %(amount)s", amount=format_money(view.bonus_minor, view.currency, call.language))
        )
    lines.append(_validity(call, view))
    state = LINE_STATES.get(view.state, view.state)
    lines.append(call._("Line %(state)s", state=call._(state)))
    return screen("END", "\n".join(lines))


# --- vouchers ----------------------------------------------------------------------------


def _voucher_step(call: _Call, rest: list[str]) -> str:
    if not rest:
        return screen("CON", call._("Enter the voucher PIN:"))
    pin, rest = rest[0], rest[1:]
    if not rest:
        return screen(
            "CON",
            "\n".join(
                [
                    call._("Top up which number?"),
                    "1 " + call._("This number"),
                    "2 " + call._("Another number"),
                ]
            ),
        )
    if rest == ["1"]:
        return _redeem(call, pin=pin, line=call.line)
    if rest == ["2"]:
        return screen("CON", call._("Enter the number to top up:"))
    if len(rest) == 2 and rest[0] == "2":
        target = topups.find_topupable_line(call.session, msisdn=rest[1], settings=call.settings)
        return _redeem(call, pin=pin, line=target)
    return _invalid(call)


def _redeem(call: _Call, *, pin: str, line: Line | None) -> str:
    """Redeem through the voucher service (the one crediting step); wrong PINs count
    towards the lockout shared with the web, the API and the IVR."""
    if line is None:
        return _not_our_line(call)
    try:
        result = channels.redeem_pin(
            call.session,
            settings=call.settings,
            pin=pin,
            line=line,
            caller_msisdn=call.callback.phone_number,
            channel=Channel.USSD,
            # The same step of the same session retried by the gateway gets the first answer.
            idempotency_key=(
                f"{channels.digest(call.callback.session_id)}:{channels.digest(call.callback.text, 16)}"
            ),
            language=call.language,
        )
    except (vouchers.VoucherRefused, vouchers.RedemptionLocked) as refusal:
        # Both keep the counted attempt: the unit of work commits it (persist_changes).
        return screen("END", refusal.localized(call.language))
    order = result.order
    added = format_money(order.amount_minor, order.currency, call.language)
    if line.id != (call.line.id if call.line else None):
        return screen(
            "END",
            call._(
                "Done: %(amount)s added to %(msisdn)s. Receipt %(receipt)s.",
                amount=added,
                msisdn=mask_msisdn(line.msisdn),
                receipt=order.receipt_number or "",
            ),
        )
    view = channels.read_line(call.session, line)
    return screen(
        "END",
        "\n".join(
            [
                call._("Done: %(amount)s added.", amount=added),
                call._(
                    "Balance: %(amount)s",
                    amount=format_money(view.balance_minor, view.currency, call.language),
                ),
                _validity(call, view),
                call._("Receipt %(receipt)s", receipt=order.receipt_number or ""),
            ]
        ),
    )


# --- bundles -----------------------------------------------------------------------------


def _bundle_name(call: _Call, bundle: Bundle) -> str:
    """The bundle's name in the caller's language, cut to what a screen has room for: shorter
    when it (or the language) puts the screen in UCS-2."""
    name = bundle.name_zh if call.language == "zh_Hans" and bundle.name_zh else bundle.name
    name = name.strip()[:BUNDLE_NAME_CHARACTERS_MAX]
    # English screens are GSM-7 unless a name is not; other languages' screens are UCS-2.
    if call.language != "en" or gsm7_septets(name) is None:
        return name[:BUNDLE_NAME_UCS2_CHARACTERS_MAX]
    return name


def _bundle_pages(call: _Call, heading: str, bundles: list[Bundle]) -> list[tuple[str, list[Bundle]]]:
    """The "buy" screens and the bundles on each: as many as fit (at most
    ``BUNDLES_SHOWN_MAX``, never a cut one), in catalogue order, each screen but the last
    ending with "0 More" (a Chinese list fits fewer bundles on a screen, so it has more)."""
    more = f"{MORE} " + call._("More")
    pages: list[tuple[str, list[Bundle]]] = []
    remaining = list(bundles)
    while remaining:
        lines: list[str] = [heading]
        shown: list[Bundle] = []
        for bundle in remaining[:BUNDLES_SHOWN_MAX]:
            line = f"{len(shown) + 1} {_bundle_name(call, bundle)} {_price(call, bundle)}"
            last = len(shown) + 1 == len(remaining)
            if shown and not fits_screen("\n".join([*lines, line] if last else [*lines, line, more])):
                break
            lines.append(line)
            shown.append(bundle)
        if len(shown) < len(remaining):
            lines.append(more)
        pages.append(("\n".join(lines), shown))
        remaining = remaining[len(shown) :]
    return pages


def _price(call: _Call, bundle: Bundle) -> str:
    return format_money(bundle.price_minor, bundle.currency, call.language)


def _bundle_step(call: _Call, rest: list[str]) -> str:
    if call.line is None:
        return _not_our_line(call)
    view = channels.read_line(call.session, call.line)
    balance = format_money(view.balance_minor, view.currency, call.language)
    if not rest:
        bundles = topups.active_bundles(call.session, view.currency)
        if not bundles:
            return screen("END", call._("No bundles are on offer for this number."))
        pages = _bundle_pages(call, call._("Balance %(amount)s. Buy:", amount=balance), bundles)
        # What was shown is what a later "0" or "1".."5" means, even if the catalogue
        # changes meanwhile.
        call.row.data = {
            **call.row.data,
            "bundle_pages": [{"body": body, "codes": [b.code for b in shown]} for body, shown in pages],
        }
        return screen("CON", pages[0][0])
    stored: list[dict[str, Any]] = list(call.row.data.get("bundle_pages", []))
    turned = 0
    while turned < len(rest) and rest[turned] == MORE:
        turned += 1
    if turned >= len(stored):
        return _invalid(call)
    if turned == len(rest):
        return screen("CON", stored[turned]["body"])
    shown = list(stored[turned]["codes"])
    rest = rest[turned:]
    choice = rest[0]
    if not choice.isdigit() or not 1 <= int(choice) <= len(shown):
        return _invalid(call)
    code = shown[int(choice) - 1]
    bundle = next((b for b in topups.active_bundles(call.session, view.currency) if b.code == code), None)
    if bundle is None:
        return screen("END", call._("That bundle is no longer on offer."))
    name = _bundle_name(call, bundle)
    price = _price(call, bundle)
    if len(rest) == 1:
        return screen(
            "CON",
            "\n".join(
                [
                    call._("Buy %(bundle)s for %(price)s from your balance?", bundle=name, price=price),
                    "1 " + call._("Yes"),
                    "2 " + call._("No"),
                ]
            ),
        )
    if rest[1:] == ["2"]:
        return screen("END", call._("Cancelled. Nothing was charged."))
    if rest[1:] != ["1"]:
        return _invalid(call)
    # The key comes from the session and the bundle: a gateway retrying this step (or the
    # caller confirming twice in one session) buys once; the ledger returns the first result.
    key = f"ussd:{channels.digest(call.callback.session_id)}:{bundle.code}"
    if view.balance_minor < bundle.price_minor and not channels.already_bought(
        call.session, line=call.line, idempotency_key=key
    ):
        return screen(
            "END",
            call._(
                "Your balance of %(balance)s is not enough for %(bundle)s (%(price)s). Nothing was charged.",
                balance=balance,
                bundle=name,
                price=price,
            ),
        )
    allowance = topups.buy_bundle_from_balance(
        call.session, line=call.line, bundle_code=bundle.code, idempotency_key=key
    )
    after = channels.read_line(call.session, call.line)
    return screen(
        "END",
        "\n".join(
            [
                call._(
                    "Done: %(bundle)s until %(date)s.",
                    bundle=name,
                    date=allowance.expires_at.date().isoformat(),
                ),
                call._(
                    "Balance: %(amount)s",
                    amount=format_money(after.balance_minor, after.currency, call.language),
                ),
            ]
        ),
    )


# --- language ----------------------------------------------------------------------------


def _language_step(call: _Call, rest: list[str]) -> str:
    if not rest:
        return screen("CON", "Language / 语言\n1 English\n2 中文")
    chosen = {"1": "en", "2": "zh_Hans"}.get(rest[0]) if len(rest) == 1 else None
    if chosen is None:
        return _invalid(call)
    channels.remember_language(call.session, msisdn=call.callback.phone_number, language=chosen)
    call.language = chosen
    return screen("END", call._("Language set to %(language)s.", language=LANGUAGES[chosen]))
