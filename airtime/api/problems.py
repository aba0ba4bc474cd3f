"""RFC 9457 problem details for every API error; pages get an HTML error instead."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from airtime.errors import AppError
from airtime.i18n import negotiate

log = structlog.get_logger(__name__)
PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://airtime.dev/problems/"


RESERVED_MEMBERS = frozenset({"type", "title", "status", "detail", "instance"})


def problem(
    request: Request, *, status: int, code: str, title: str, detail: str, extra: dict[str, Any] | None = None
) -> JSONResponse:
    """An RFC 9457 body; ``extra`` adds members such as ``field``, never overriding the standard ones."""
    extra = {key: value for key, value in (extra or {}).items() if key not in RESERVED_MEMBERS}
    body = {
        **extra,
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    headers = {}
    if status == 429 and "retry_after" in extra:
        headers["Retry-After"] = "60"
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "type": "object",
    "description": "RFC 9457 problem details; extra members (such as `field`) may follow.",
    "properties": {
        "type": {"type": "string", "format": "uri"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "field": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["type", "title", "status", "detail"],
}
API_ERROR_STATUSES = {
    "400": "Bad request",
    "401": "Not authenticated",
    "403": "Not allowed",
    "404": "Not found",
    "409": "Conflict",
    "422": "Invalid input",
    "429": "Too many attempts",
}


def document_problems(app: FastAPI) -> None:
    """Make the OpenAPI document say what the API really sends on errors: problem+json."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = generate()
        spec.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
        reference = {"$ref": "#/components/schemas/Problem"}
        for path, operations in spec.get("paths", {}).items():
            if not path.startswith("/api/"):
                continue
            for operation in operations.values():
                responses = operation.setdefault("responses", {})
                for status, description in API_ERROR_STATUSES.items():
                    responses[status] = {
                        "description": description,
                        "content": {PROBLEM_MEDIA_TYPE: {"schema": reference}},
                    }
        for unused in ("HTTPValidationError", "ValidationError"):
            spec["components"]["schemas"].pop(unused, None)
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def _wants_problem(request: Request) -> bool:
    path = request.url.path
    return path.startswith(("/api/", "/webhooks/")) or "json" in request.headers.get("accept", "")


HtmlErrorRenderer = Callable[[Request, AppError], Awaitable[Response]]


def install(app: FastAPI, *, html_error: HtmlErrorRenderer) -> None:
    """Register handlers: problem+json for the API, the HTML error page for everything else."""

    @app.exception_handler(AppError)
    async def _app_error(request: Request, exc: AppError) -> Response:
        if not _wants_problem(request):
            # A page that needs a log-in first sends the visitor there (staff pages).
            location = getattr(exc, "location", "")
            if location:
                return RedirectResponse(location, status_code=303)
            return await html_error(request, exc)
        language = negotiate(request.headers.get("accept-language")) or "en"
        extra = {key: value for key, value in exc.params.items() if isinstance(value, str | int | float)}
        return problem(
            request,
            status=exc.status_code,
            code=exc.code,
            title=exc.title,
            detail=exc.localized(language),
            extra=extra,
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"field": ".".join(str(part) for part in error["loc"][1:]) or "body", "message": error["msg"]}
            for error in exc.errors()
        ]
        if not _wants_problem(request):
            from airtime.errors import ValidationFailed

            detail = "; ".join(f"{error['field']}: {error['message']}" for error in errors)
            return await html_error(request, ValidationFailed("Invalid input: %(detail)s", detail=detail))
        return problem(
            request,
            status=422,
            code="validation_failed",
            title="Invalid input",
            detail="The request is not valid: " + "; ".join(f"{e['field']}: {e['message']}" for e in errors),
            extra={"errors": errors},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if not _wants_problem(request):
            from airtime.errors import NotFound

            error = (
                NotFound("Not found")
                if exc.status_code == 404
                else AppError("This request cannot be handled (HTTP %(status)s).", status=exc.status_code)
            )
            error.status_code = exc.status_code
            return await html_error(request, error)
        return problem(
            request,
            status=exc.status_code,
            code="not_found" if exc.status_code == 404 else "http_error",
            title=str(exc.detail),
            detail=str(exc.detail),
        )

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> Response:
        return internal_error(request)


def internal_error(request: Request) -> JSONResponse:
    """The answer to a request that met a bug, logged with the exception being handled."""
    log.exception("unhandled_error", path=request.url.path)
    return problem(
        request,
        status=500,
        code="internal_error",
        title="Internal error",
        detail="Something went wrong on our side. It has been logged; please try again.",
    )
