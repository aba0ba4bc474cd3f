"""Incoming provider webhooks: verified by the provider, stored once, then applied."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from airtime.errors import NotFound
from airtime.payments.base import WebhookRefused
from airtime.payments.webhooks import process_event

router = APIRouter(tags=["payments"])
WEBHOOK_BODY_BYTES_MAX = 256 * 1024


@router.post("/webhooks/{provider_name}")
async def webhook(provider_name: str, request: Request) -> JSONResponse:
    """A payment provider tells us about a payment; answers 200 once stored (duplicates too)."""
    providers = request.app.state.payment_providers
    provider = providers.get(provider_name)
    if provider is None:
        raise NotFound("No payment provider %(name)s.", name=provider_name[:20])
    body = await request.body()
    if len(body) > WEBHOOK_BODY_BYTES_MAX:
        raise WebhookRefused("Webhook body too large.")
    headers = {key.lower(): value for key, value in request.headers.items()}
    # Verification may call the provider (PayPal) and processing uses the database: both block.
    event = await run_in_threadpool(provider.parse_webhook, body, headers)
    if event is None:
        return JSONResponse({"status": "ignored"})
    result = await run_in_threadpool(
        process_event,
        request.app.state.session_factory,
        provider_name=provider_name,
        event=event,
        settings=request.app.state.settings,
    )
    return JSONResponse(
        {
            "status": "duplicate" if result.duplicate else "processed",
            "change": result.change,
            "credited": result.credited,
        }
    )
