"""A subscriber's "missing top-up" claim, opened from the order status or receipt page
(which show where it stands: ``disputes.claim_view``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from airtime.care import disputes
from airtime.config import Settings
from airtime.db.session import unit_of_work
from airtime.payments.base import PaymentProvider
from airtime.web.context import check_csrf, redirect, visitor

router = APIRouter(include_in_schema=False)
CsrfChecked = Depends(check_csrf)


@router.post("/topup/orders/{public_id}/claim", dependencies=[CsrfChecked])
def open_claim(
    request: Request, public_id: str, email: Annotated[str, Form(max_length=254)] = ""
) -> Response:
    """Open a claim: the system asks the provider first; what it cannot settle goes to care."""
    settings: Settings = request.app.state.settings
    providers: dict[str, PaymentProvider] = request.app.state.payment_providers
    factory = request.app.state.session_factory
    disputes.open_claim(
        factory, public_id=public_id, contact_email=email, providers=providers, settings=settings
    )
    with unit_of_work(factory) as session:
        who = visitor(request, session)
    return redirect(f"/topup/orders/{public_id}#claim", who, settings)
