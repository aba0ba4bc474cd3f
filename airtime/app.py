"""The application factory: pages, API, health, metrics and the outbox sender."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from airtime import __version__
from airtime.agents.endpoints import router as agent_api_router
from airtime.agents.service import prune_signatures
from airtime.api import problems
from airtime.api.v1.routes import router as api_v1_router
from airtime.api.v1.topups import router as api_v1_topups_router
from airtime.autotopup.tasks import run_due as run_auto_topups
from airtime.channels.ivr import router as ivr_router
from airtime.channels.ussd import router as ussd_router
from airtime.config import Settings, get_settings
from airtime.db.session import engine_from_settings, make_session_factory
from airtime.errors import AppError
from airtime.fastpath import FastPath, FastPathMiddleware
from airtime.jobs import Job, Scheduler
from airtime.lifecycle.reminders import send_reminders
from airtime.lifecycle.service import sweep
from airtime.logging import configure_logging
from airtime.metrics import MetricsMiddleware, metrics_response
from airtime.notifications.providers import providers_from_settings
from airtime.notifications.sender import SenderThread
from airtime.payments.base import PaymentProvider
from airtime.payments.endpoints import router as webhooks_router
from airtime.payments.registry import providers_from_settings as payment_providers_from_settings
from airtime.topups.tasks import reconcile
from airtime.vouchers.service import expire_due
from airtime.web.admin_pages import router as admin_pages_router
from airtime.web.agent_pages import router as agent_pages_router
from airtime.web.announcement_pages import load_announcements
from airtime.web.announcement_pages import router as announcement_pages_router
from airtime.web.autotopup_pages import router as autotopup_pages_router
from airtime.web.care_pages import router as care_pages_router
from airtime.web.claim_pages import router as claim_pages_router
from airtime.web.context import render_page
from airtime.web.pages import router as pages_router
from airtime.web.report_pages import router as report_pages_router
from airtime.web.topup_pages import router as topup_pages_router
from airtime.web.two_factor_pages import router as two_factor_pages_router
from airtime.web.voucher_pages import router as voucher_pages_router

STATIC_DIR = Path(__file__).resolve().parent / "web" / "static"


class AirtimeApp(FastAPI):
    """The FastAPI app, with ``front`` answering first: the request metrics, then the fast
    path (when there is one), in front of FastAPI's and Starlette's middleware stack. The
    fast path's requests skip that stack (about 25 µs of CPU each); what it hands over, and
    every other request, goes through the whole stack."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await (self.front or self.whole_stack)(scope, receive, send)

    async def whole_stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def background_jobs(
    settings: Settings, session_factory: sessionmaker[Session], payment_providers: dict[str, PaymentProvider]
) -> list[Job]:
    """What the server runs on a schedule (each job once at a time across all processes)."""
    return [
        Job(
            name="reconcile-topups",
            interval_seconds=settings.reconcile_interval_seconds,
            run=lambda: reconcile(session_factory, providers=payment_providers, settings=settings),
        ),
        Job(
            name="auto-topup",
            interval_seconds=settings.autotopup_interval_seconds,
            run=lambda: run_auto_topups(session_factory, providers=payment_providers, settings=settings),
        ),
        Job(
            name="prune-agent-signatures",
            interval_seconds=300,
            run=lambda: prune_signatures(session_factory),
        ),
        Job(
            name="expire-vouchers",
            interval_seconds=settings.voucher_expiry_interval_seconds,
            run=lambda: expire_due(session_factory),
        ),
        Job(
            name="lifecycle",
            interval_seconds=settings.lifecycle_sweep_interval_seconds,
            run=lambda: (sweep(session_factory), send_reminders(session_factory, settings)),
        ),
    ]


def serve_app() -> FastAPI:
    """The app as a server process builds it (uvicorn's factory, in each worker)."""
    return frozen_for_serving(create_app())


def frozen_for_serving(app: FastAPI) -> FastAPI:
    """``app``, with what exists once it is built (modules, routes, the ORM's metadata,
    templates) moved out of the garbage collector's way: it lives as long as the process,
    and otherwise every full collection walks it again, a few percent of the CPU of a busy
    worker."""
    gc.collect()
    gc.freeze()
    return app


def create_app(settings: Settings | None = None, *, run_background_jobs: bool = True) -> FastAPI:
    """Build the app; ``run_background_jobs=False`` leaves sending to the caller (tests)."""
    settings = settings or get_settings()
    configure_logging(json_output=settings.environment == "production")
    engine = engine_from_settings(settings)
    session_factory = make_session_factory(engine)

    payment_providers = payment_providers_from_settings(settings)
    fast_path = (
        None if settings.is_sqlite or not settings.fast_path else FastPath(settings, payment_providers)
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sender = scheduler = None
        if run_background_jobs:
            sender = SenderThread(
                session_factory,
                providers_from_settings(settings),
                attempts_max=settings.notification_send_attempts_max,
            )
            sender.start()
            scheduler = Scheduler(
                engine, background_jobs(settings, session_factory, app.state.payment_providers)
            )
            scheduler.start()
        yield
        if scheduler is not None:
            scheduler.stop()
        if sender is not None:
            sender.stop()
        if fast_path is not None:
            await fast_path.close()
        engine.dispose()

    app = AirtimeApp(
        title=f"{settings.operator_name} API",
        version=__version__,
        description="Top-ups and number keeping. Errors are RFC 9457 problem details.",
        lifespan=lifespan,
        docs_url="/api/docs",
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory
    app.state.fast_path = fast_path
    app.state.payment_providers = payment_providers

    async def html_error(request: Request, error: AppError) -> Response:
        return render_page(request, "error.html", {"error": error}, status_code=error.status_code)

    problems.install(app, html_error=html_error)
    problems.document_problems(app)
    app.front = MetricsMiddleware(
        app.whole_stack if fast_path is None else FastPathMiddleware(app.whole_stack, fast_path)
    )
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(api_v1_router)
    app.include_router(api_v1_topups_router)
    app.include_router(agent_api_router)
    app.include_router(webhooks_router)
    app.include_router(ussd_router)
    app.include_router(ivr_router)
    app.include_router(pages_router, dependencies=[Depends(load_announcements)])
    app.include_router(topup_pages_router)
    app.include_router(autotopup_pages_router)
    app.include_router(voucher_pages_router)
    app.include_router(agent_pages_router)
    app.include_router(admin_pages_router)
    app.include_router(two_factor_pages_router)
    app.include_router(care_pages_router)
    app.include_router(claim_pages_router)
    app.include_router(report_pages_router)
    app.include_router(announcement_pages_router)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> Response:
        """Ready when the database answers."""
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - any failure means "not ready"
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok", "version": __version__})

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    def metrics() -> Response:
        return metrics_response()

    return app
