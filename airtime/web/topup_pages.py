"""Top-up pages: quick top-up of any number, logged-in top-up, the sandbox's test-mode
payment page, the public status page of an order and its receipt."""

from __future__ import annotations

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from airtime.accounts.models import Line
from airtime.accounts.phone import mask_msisdn
from airtime.care.disputes import claim_view
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.errors import AppError, NotFound
from airtime.i18n import gettext
from airtime.notifications.service import render as render_message
from airtime.payments.base import PaymentProvider, ProviderEvent
from airtime.payments.registry import provider_named
from airtime.payments.sandbox import SandboxProvider
from airtime.payments.webhooks import receive_event
from airtime.topups import service as topups
from airtime.topups.checkout import refresh_from_provider
from airtime.topups.models import Channel, OrderStatus
from airtime.web.context import Visitor, check_csrf, redirect, render, visitor

router = APIRouter(include_in_schema=False)
CsrfChecked = Depends(check_csrf)
Text = Annotated[str, Form(max_length=100)]


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _providers(request: Request) -> dict[str, PaymentProvider]:
    providers: dict[str, PaymentProvider] = request.app.state.payment_providers
    return providers


def _options(session: Any, line: Line, request: Request) -> dict[str, Any]:
    """Amounts, bundles and payment methods on offer for this line."""
    quote_currency = topups.quote_currency(session, line)
    return {
        "rule": topups.amount_rule(session, quote_currency),
        "bundles": topups.active_bundles(session, quote_currency),
        "currency": quote_currency,
        "providers": list(_providers(request)),
        "promotions": topups.current_promotions(session, quote_currency),
    }


@router.get("/topup", response_class=HTMLResponse)
def topup_start(
    request: Request, line: int | None = None, msisdn: Annotated[str, Query(max_length=40)] = ""
) -> Response:
    """Step 1: the number to top up (a logged-in customer picks one of their lines; a
    reminder's link fills the number in)."""
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        own_lines = []
        if who.customer is not None:
            from airtime.accounts.service import customer_lines

            own_lines = customer_lines(session, customer_id=who.customer.id)
        return render(
            request,
            who,
            "topup_number.html",
            {"own_lines": own_lines, "msisdn": msisdn, "error": None, "selected": line},
        )


@router.post("/topup/options", response_class=HTMLResponse, dependencies=[CsrfChecked])
def topup_options(request: Request, msisdn: Annotated[str, Form(max_length=40)] = "") -> Response:
    """Step 2: confirm the (masked) number and choose an amount or a bundle, and how to pay."""
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        try:
            line = topups.find_topupable_line(session, msisdn=msisdn, settings=_settings(request))
            options = _options(session, line, request)
        except AppError as error:
            return render(
                request,
                who,
                "topup_number.html",
                {"own_lines": [], "msisdn": msisdn, "error": error, "selected": None},
                status_code=error.status_code,
            )
        return render(request, who, "topup_options.html", _step_two_context(who, line, options, error=None))


def _step_two_context(
    who: Visitor, line: Line, options: dict[str, Any], *, error: AppError | None
) -> dict[str, Any]:
    return {
        "msisdn": line.msisdn,
        "masked": mask_msisdn(line.msisdn),
        "error": error,
        "email": who.customer.email if who.customer else "",
        **options,
    }


@router.post("/topup/review", response_class=HTMLResponse, dependencies=[CsrfChecked])
def topup_review(
    request: Request,
    msisdn: Annotated[str, Form(max_length=40)] = "",
    amount_minor: Annotated[int | None, Form(ge=0)] = None,
    custom_amount: Text = "",
    bundle: Text = "",
    provider: Annotated[str, Form(max_length=20)] = "sandbox",
    email: Annotated[str, Form(max_length=254)] = "",
) -> Response:
    """Step 3: what will be paid and credited (bonus and new validity), then pay."""
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        line = topups.find_topupable_line(session, msisdn=msisdn, settings=_settings(request))
        try:
            provider_named(_providers(request), provider)
            if email:
                from airtime.accounts.service import normalize_email

                email = normalize_email(email)
            quote = topups.quote(
                session,
                line=line,
                channel=Channel.WEB if who.customer else Channel.QUICK,
                amount_text=custom_amount or None,
                amount_minor=None if custom_amount or bundle else amount_minor,
                bundle_code=bundle or None,
            )
        except AppError as error:
            options = _options(session, line, request)
            return render(
                request,
                who,
                "topup_options.html",
                _step_two_context(who, line, options, error=error),
                status_code=error.status_code,
            )
        return render(
            request,
            who,
            "topup_review.html",
            {
                "quote": quote,
                "masked": mask_msisdn(line.msisdn),
                "msisdn": line.msisdn,
                "provider": provider,
                "email": email,
                # One key per rendered form: pressing "Pay" twice makes one order.
                "idempotency_key": secrets.token_urlsafe(16),
            },
        )


@router.post("/topup/pay", dependencies=[CsrfChecked])
def topup_pay(
    request: Request,
    msisdn: Annotated[str, Form(max_length=40)] = "",
    amount_minor: Annotated[int | None, Form(ge=1)] = None,
    bundle: Text = "",
    provider: Annotated[str, Form(max_length=20)] = "sandbox",
    email: Annotated[str, Form(max_length=254)] = "",
    idempotency_key: Text = "",
) -> Response:
    """Make the order and send the customer to the provider's payment page."""
    settings = _settings(request)
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        line = topups.find_topupable_line(session, msisdn=msisdn, settings=settings)
        channel = Channel.WEB if who.customer else Channel.QUICK
        quote = topups.quote(
            session,
            line=line,
            channel=channel,
            amount_minor=None if bundle else amount_minor,
            bundle_code=bundle or None,
        )
        order, _ = topups.create_order(
            session,
            quote=quote,
            channel=channel,
            provider=provider_named(_providers(request), provider),
            idempotency_scope=f"web:{who.customer.id}" if who.customer else "web:anonymous",
            idempotency_key=idempotency_key,
            settings=settings,
            customer_id=who.customer.id if who.customer else None,
            receipt_email=email,
            language=who.language,
        )
        target = order.payment_redirect_url or f"/topup/orders/{order.public_id}"
    return redirect(target, who, settings)


@router.get("/sandbox/pay/{reference}", response_class=HTMLResponse)
def sandbox_page(request: Request, reference: str) -> Response:
    """The sandbox provider's hosted page, clearly in test mode."""
    from airtime.payments.models import SandboxPayment

    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        payment = session.get(SandboxPayment, reference)
        if payment is None or "sandbox" not in _providers(request):
            raise NotFound("No such test payment.")
        return render(request, who, "sandbox_pay.html", {"payment": payment})


@router.post("/sandbox/pay/{reference}", dependencies=[CsrfChecked])
def sandbox_decide(
    request: Request, reference: str, decision: Annotated[str, Form(max_length=10)] = ""
) -> Response:
    settings = _settings(request)
    sandbox = _providers(request).get("sandbox")
    if not isinstance(sandbox, SandboxProvider):
        raise NotFound("No such test payment.")
    factory = request.app.state.session_factory
    from airtime.payments.models import SandboxPayment

    seen: dict[str, Any] = {}

    def decide(session: Any) -> ProviderEvent | None:
        seen["who"] = visitor(request, session)
        payment = session.get(SandboxPayment, reference)
        if payment is None:
            raise NotFound("No such test payment.")
        seen["return_url"] = payment.return_url
        return sandbox.decide(session, reference, decision)

    # Delivered the way a provider's webhook is (stored once, then applied), in the same
    # transaction as the decision.
    receive_event(factory, provider_name="sandbox", settings=settings, receive=decide)
    who: Visitor = seen["who"]
    return_url: str = seen["return_url"]
    return redirect(return_url, who, settings)


@router.get("/topup/orders/{public_id}", response_class=HTMLResponse)
def order_status(request: Request, public_id: str, returned: int = 0, cancelled: int = 0) -> Response:
    """The public status page of one top-up: each stage, and what to do if it is stuck."""
    factory = request.app.state.session_factory
    settings = _settings(request)
    if cancelled:
        with unit_of_work(factory) as session:
            topups.cancel(session, topups.get_order(session, public_id))
    order = refresh_from_provider(
        factory, public_id=public_id, providers=_providers(request), settings=settings
    )
    with unit_of_work(factory) as session:
        who = visitor(request, session)
        context = topups.receipt_context(session, order, settings)
        context["stages"] = topups.stages(order)
        context["waiting"] = (
            order.status
            in (
                OrderStatus.CREATED,
                OrderStatus.AWAITING_PAYMENT,
                OrderStatus.PAID,
            )
            and order.failure_code != topups.LINE_GONE
        )
        failure = topups.FAILURE_MESSAGES.get(order.failure_code)
        context["failure_message"] = gettext(who.language, failure) if failure else ""
        context["claim"] = claim_view(session, order)
        return render(request, who, "topup_status.html", context)


@router.get("/topup/orders/{public_id}/receipt", response_class=HTMLResponse)
def receipt(request: Request, public_id: str) -> Response:
    settings = _settings(request)
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        order = topups.get_order(session, public_id)
        if order.receipt_number is None:
            raise NotFound("This top-up has no receipt yet.")
        context = topups.receipt_context(session, order, settings)
        context["claim"] = claim_view(session, order)
        return render(request, who, "receipt.html", context)


@router.get("/topup/orders/{public_id}/receipt.txt")
def receipt_download(request: Request, public_id: str) -> Response:
    """The receipt as a text file to keep (the same text as the emailed receipt)."""
    settings = _settings(request)
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        order = topups.get_order(session, public_id)
        if order.receipt_number is None:
            raise NotFound("This top-up has no receipt yet.")
        subject, body = render_message(
            "receipt", who.language, topups.receipt_context(session, order, settings)
        )
        text = f"{subject}\n\n{body}"
    return PlainTextResponse(
        text,
        headers={"Content-Disposition": f'attachment; filename="receipt-{order.receipt_number}.txt"'},
    )


@router.post("/lines/{line_id}/bundles", dependencies=[CsrfChecked])
def buy_bundle(request: Request, line_id: int, bundle: Text = "", idempotency_key: Text = "") -> Response:
    """Buy a bundle from the line's balance (logged-in owner only)."""
    settings = _settings(request)
    with unit_of_work(request.app.state.session_factory) as session:
        who = visitor(request, session)
        if who.customer is None:
            return redirect("/login", who, settings)
        line = session.get(Line, line_id)
        if line is None or line.customer_id != who.customer.id:
            raise NotFound("No such line on your account.")
        topups.buy_bundle_from_balance(
            session, line=line, bundle_code=bundle, idempotency_key=idempotency_key
        )
    return redirect(f"/lines/{line_id}?bundle=1", who, settings)
