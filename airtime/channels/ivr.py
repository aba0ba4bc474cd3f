"""IVR: a voucher top-up by phone call, spoken as TwiML for Twilio Programmable Voice.

    /ivr/voice          the call comes in: greeting, then "enter the PIN, then hash"
    /ivr/voice/pin      the digits: read back, "press 1 if right, 2 to enter it again"
    /ivr/voice/confirm  1: redeem, then say the new balance and validity date; 2: re-enter

Every request must carry a valid ``X-Twilio-Signature`` (computed by Twilio with the account's
auth token over the public URL and the posted parameters); anything else is refused with 403
before any work. The caller (``From``) is the line topped up. Silence is asked again up to
``ivr_no_input_retries_max`` times; wrong PINs count towards the voucher lockout shared with
every channel, and a call ends after ``ivr_wrong_pins_per_call_max`` of them.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from babel.dates import format_date
from cryptography.fernet import Fernet, InvalidToken
from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from twilio.request_validator import RequestValidator
from twilio.twiml.voice_response import Gather, VoiceResponse

from airtime.accounts.models import Line
from airtime.channels import service as channels
from airtime.channels.models import PhoneSession
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.errors import AppError
from airtime.i18n import gettext
from airtime.money import format_money
from airtime.security import sealing_key
from airtime.topups.models import Channel
from airtime.vouchers import service as vouchers

router = APIRouter(include_in_schema=False)
CALLBACK_BODY_BYTES_MAX = 16 * 1024
DIGITS_LENGTH_MAX = 32
GATHER_TIMEOUT_SECONDS = 10
SPEECH_LANGUAGES = {"en": "en-GB", "zh_Hans": "cmn-CN"}
DATE_LOCALES = {"en": "en_GB", "zh_Hans": "zh_Hans_CN"}
PIN_KEPT = "pin_sealed"  # the session row's key for a PIN waiting for confirmation
STEP_PATHS = {"voice": "/ivr/voice", "pin": "/ivr/voice/pin", "confirm": "/ivr/voice/confirm"}
TWIML_MEDIA_TYPE = "application/xml"


class _Call:
    """One request of a call being answered: the caller, the language, the reply so far."""

    def __init__(
        self, session: Session, settings: Settings, row: PhoneSession, line: Line | None, language: str
    ):
        self.session = session
        self.settings = settings
        self.row = row
        self.line = line
        self.language = language
        self.response = VoiceResponse()

    def _(self, message: str, /, **params: object) -> str:
        translated = gettext(self.language, message)
        return translated % params if params else translated

    def say(self, text: str, into: Any = None) -> None:
        (into or self.response).say(text, language=SPEECH_LANGUAGES[self.language])

    def url(self, step: str) -> str:
        return self.settings.base_url.rstrip("/") + STEP_PATHS[step]

    def gather(self, *, step: str, prompt: str, digits: int | None = None) -> None:
        """Ask for keypad input; silence also comes back to ``step`` (with no digits)."""
        options: dict[str, Any] = {
            "input": "dtmf",
            "action": self.url(step),
            "method": "POST",
            "timeout": GATHER_TIMEOUT_SECONDS,
            "action_on_empty_result": True,
        }
        if digits is None:
            options["finish_on_key"] = "#"
        else:
            options["num_digits"] = digits
        gather = Gather(**options)
        self.say(prompt, into=gather)
        self.response.append(gather)

    def goodbye(self, text: str) -> None:
        self.say(text)
        self.response.hangup()

    def counter(self, name: str, increment: int = 0) -> int:
        value = int(self.row.data.get(name, 0)) + increment
        self.row.data = {**self.row.data, name: value}
        return value


# --- the signature -----------------------------------------------------------------------


def public_url(request: Request, settings: Settings) -> str:
    """The URL Twilio called, as it signed it: the configured public address, not the one
    a proxy in front of us rewrote."""
    query = request.url.query
    return settings.base_url.rstrip("/") + request.url.path + (f"?{query}" if query else "")


def signature_valid(settings: Settings, url: str, params: dict[str, str], signature: str) -> bool:
    if not settings.twilio_auth_token or not signature:
        return False
    return bool(RequestValidator(settings.twilio_auth_token).validate(url, params, signature))


async def _twilio_params(request: Request) -> dict[str, str] | None:
    """The posted parameters if the request is Twilio's, else None."""
    settings: Settings = request.app.state.settings
    body = await request.body()
    if len(body) > CALLBACK_BODY_BYTES_MAX:
        return None
    form = await request.form()
    params = {key: str(value) for key, value in form.items()}
    signature = request.headers.get("x-twilio-signature", "")
    if not signature_valid(settings, public_url(request, settings), params, signature):
        return None
    return params


def _refused() -> Response:
    return PlainTextResponse("Forbidden: the request is not signed by Twilio.", status_code=403)


def _twiml(body: str) -> Response:
    return Response(content=body, media_type=TWIML_MEDIA_TYPE)


@router.post("/ivr/voice")
async def ivr_voice(request: Request) -> Response:
    """The call comes in (Twilio's "A call comes in" webhook)."""
    return await _handle(request, "voice")


@router.post("/ivr/voice/pin")
async def ivr_pin(request: Request) -> Response:
    return await _handle(request, "pin")


@router.post("/ivr/voice/confirm")
async def ivr_confirm(request: Request) -> Response:
    return await _handle(request, "confirm")


async def _handle(request: Request, step: str) -> Response:
    params = await _twilio_params(request)
    if params is None:
        return _refused()
    reply = await run_in_threadpool(
        answer, request.app.state.session_factory, request.app.state.settings, step, params
    )
    return _twiml(reply)


# --- the call ----------------------------------------------------------------------------


def answer(factory: sessionmaker[Session], settings: Settings, step: str, params: dict[str, str]) -> str:
    """The TwiML for one step of a call, in one transaction."""
    call_sid = params.get("CallSid", "")[:64]
    caller = params.get("From", "")[:32]
    language: str = settings.default_language
    try:
        with unit_of_work(factory) as session:
            opened = channels.open_session(
                session,
                channel=Channel.IVR,
                gateway_id=call_sid or "-",
                msisdn=caller,
                timeout_seconds=settings.ivr_session_timeout_seconds,
            )
            line = channels.caller_line(session, msisdn=caller, settings=settings)
            language = channels.language_for(session, msisdn=caller, line=line, settings=settings)
            call = _Call(session, settings, opened.row, line, language)
            if not call_sid or line is None:
                call.goodbye(
                    call._(
                        "This number is not on %(operator)s, so it cannot be topped up by phone. Goodbye.",
                        operator=settings.operator_name,
                    )
                )
            elif step == "voice" or opened.status != channels.SessionStatus.LIVE:
                _greet(call)
            elif step == "pin":
                _pin_entered(call, params.get("Digits", "")[:DIGITS_LENGTH_MAX])
            else:
                _confirmed(
                    call, params.get("Digits", "")[:DIGITS_LENGTH_MAX], call_sid=call_sid, caller=caller
                )
            return str(call.response)
    except AppError as error:
        response = VoiceResponse()
        response.say(error.localized(language), language=SPEECH_LANGUAGES[language])
        response.hangup()
        return str(response)


def _greet(call: _Call) -> None:
    call.row.data = {}
    call.say(call._("Welcome to %(operator)s voucher top-up.", operator=call.settings.operator_name))
    _ask_pin(call)


def _ask_pin(call: _Call) -> None:
    call.gather(step="pin", prompt=call._("Enter the voucher PIN on your keypad, then press the hash key."))


def _silence(call: _Call, *, ask_again: Any) -> None:
    """No keys pressed: ask again, a few times, then end the call."""
    if call.counter("silences", 1) > call.settings.ivr_no_input_retries_max:
        call.goodbye(call._("We did not hear any keys. Nothing was charged. Goodbye."))
        return
    call.say(call._("Sorry, we did not hear any keys."))
    ask_again(call)


def _spoken_digits(digits: str) -> str:
    """Digits one by one in groups of four, so the speech engine does not read a number."""
    return ", ".join(" ".join(digits[index : index + 4]) for index in range(0, len(digits), 4))


def _pin_entered(call: _Call, digits: str) -> None:
    digits = "".join(character for character in digits if character.isdigit())
    if not digits:
        _silence(call, ask_again=_ask_pin)
        return
    _keep_pin(call, digits)
    _ask_confirmation(call)


def _pin_key(call: _Call) -> Fernet:
    return sealing_key(call.settings.effective_secret_key(), b"airtime.ivr-pin.v1")


def _keep_pin(call: _Call, digits: str) -> None:
    """The PIN waits in the session row only until it is confirmed or re-entered, and only
    sealed: a copy of the database does not reveal it."""
    call.row.data = {**call.row.data, PIN_KEPT: _pin_key(call).encrypt(digits.encode()).decode()}


def _kept_pin(call: _Call) -> str:
    """The PIN waiting for confirmation; "" if there is none or it is older than a session."""
    sealed = str(call.row.data.get(PIN_KEPT, ""))
    if not sealed:
        return ""
    try:
        return _pin_key(call).decrypt(sealed.encode(), ttl=call.settings.ivr_session_timeout_seconds).decode()
    except InvalidToken:
        return ""


def _forget_pin(call: _Call) -> None:
    call.row.data = {key: value for key, value in call.row.data.items() if key != PIN_KEPT}


def _ask_confirmation(call: _Call) -> None:
    pin = _kept_pin(call)
    call.gather(
        step="confirm",
        digits=1,
        prompt=call._(
            "You entered %(digits)s. Press 1 if that is right, or 2 to enter it again.",
            digits=_spoken_digits(pin),
        ),
    )


def _spoken_date(call: _Call, value: date | None) -> str:
    if value is None:
        return call._("no expiry date")
    return str(format_date(value, format="long", locale=DATE_LOCALES[call.language]))


def _confirmed(call: _Call, digits: str, *, call_sid: str, caller: str) -> None:
    pin = _kept_pin(call)
    if not pin:
        _ask_pin(call)
        return
    if digits == "2":
        _forget_pin(call)
        _ask_pin(call)
        return
    if digits != "1":
        _silence(call, ask_again=_ask_confirmation)
        return
    _forget_pin(call)
    entry = call.counter("entries", 1)
    assert call.line is not None
    try:
        result = channels.redeem_pin(
            call.session,
            settings=call.settings,
            pin=pin,
            line=call.line,
            caller_msisdn=caller,
            channel=Channel.IVR,
            # One key per confirmed entry of this call: a retried request credits once.
            idempotency_key=f"{channels.digest(call_sid)}:{entry}",
            language=call.language,
        )
    except vouchers.RedemptionLocked as locked:
        call.goodbye(locked.localized(call.language) + " " + call._("Goodbye."))
        return
    except vouchers.VoucherRefused as refused:
        # The attempt is counted by the voucher service (and committed with this reply).
        if call.counter("wrong", 1) >= call.settings.ivr_wrong_pins_per_call_max:
            call.goodbye(refused.localized(call.language) + " " + call._("Nothing was charged. Goodbye."))
            return
        call.say(refused.localized(call.language))
        _ask_pin(call)
        return
    order = result.order
    view = channels.read_line(call.session, call.line)
    call.goodbye(
        call._(
            "Thank you. %(amount)s has been added. Your balance is %(balance)s,"
            " valid until %(date)s. Goodbye.",
            amount=format_money(order.amount_minor, order.currency, call.language),
            balance=format_money(view.balance_minor, view.currency, call.language),
            date=_spoken_date(call, view.validity_date),
        )
    )
