"""Expected failures: each carries an HTTP status and a message a person understands."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    """Base of every expected failure; a 500 is always a bug, never an AppError."""

    status_code = 400
    code = "bad_request"
    title = "Bad request"
    # Set on failures whose record must outlive the failed request (counted attempts).
    persist_changes = False

    def __init__(self, message: str, **params: Any) -> None:
        """``message`` is English source text, translatable, with ``%(name)s`` placeholders
        filled from ``params``; ``field`` names the input at fault, when there is one."""
        self.message = message
        self.params = params
        self.detail = message % params if params else message
        super().__init__(self.detail)

    def localized(self, language: str) -> str:
        """The message in the person's language."""
        from airtime.i18n import gettext

        text = gettext(language, self.message)
        return text % self.params if self.params else text


class ValidationFailed(AppError):
    status_code = 422
    code = "validation_failed"
    title = "Invalid input"


class NotFound(AppError):
    status_code = 404
    code = "not_found"
    title = "Not found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"
    title = "Conflict"


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"
    title = "Idempotency key reused with different content"


class InsufficientFunds(AppError):
    status_code = 409
    code = "insufficient_funds"
    title = "Insufficient funds"


class AuthenticationFailed(AppError):
    status_code = 401
    code = "authentication_failed"
    title = "Authentication failed"


class PermissionDenied(AppError):
    status_code = 403
    code = "permission_denied"
    title = "Permission denied"


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"
    title = "Too many attempts"


class CsrfFailed(AppError):
    status_code = 403
    code = "csrf_failed"
    title = "Form expired"
