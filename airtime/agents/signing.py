"""Signed agent API requests: HMAC-SHA256 over method, path with query, timestamp, a nonce
and the SHA-256 of the body.

    string to sign = METHOD "\\n" PATH?QUERY "\\n" TIMESTAMP "\\n" NONCE "\\n" hex(SHA-256(body))
    X-Agent-Signature = hex(HMAC-SHA256(secret, string to sign))

The nonce (any 8 to 64 letters, digits, - or _, new for each request) lets a client retry
the same request within the same second: an exact replay (same signature) is refused, a
re-signed retry with the same Idempotency-Key gets the first answer.

Secrets are not stored, neither hashed nor encrypted: a secret is derived as
HMAC(server key for agent credentials, key id ":" random salt), where the server key is
derived from ``AIRTIME_SECRET_KEY`` for this one purpose. Checking a signature needs the
secret, and deriving it again gives it without keeping anything reversible in the
database: a leaked database alone reveals no secret (the salt is useless without the server
key). Issuing new credentials makes a new salt; revoking marks the key id. Changing
``AIRTIME_SECRET_KEY`` invalidates every agent secret (as it does voucher PINs).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets

from airtime.config import Settings

# Requests signed further than this from the server's clock are refused, and signatures are
# remembered for at least this long, so an exact replay is refused too.
REPLAY_WINDOW_SECONDS = 300
KEY_ID_PREFIX = "ak_"
NONCE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def credentials_key(settings: Settings) -> bytes:
    """The key agent secrets are derived with, derived from the server secret for this one purpose."""
    return hmac.digest(
        settings.effective_secret_key().encode(), b"airtime agent api credentials v1", "sha256"
    )


def new_key_id() -> str:
    return KEY_ID_PREFIX + secrets.token_hex(12)


def new_salt() -> str:
    return secrets.token_hex(16)


def derive_secret(key: bytes, *, key_id: str, salt: str) -> str:
    """The agent's secret for a key id: 256 bits, URL-safe, recomputed on every request."""
    digest = hmac.digest(key, f"{key_id}:{salt}".encode(), "sha256")
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def string_to_sign(*, method: str, path_with_query: str, timestamp: str, nonce: str, body: bytes) -> str:
    return "\n".join((method.upper(), path_with_query, timestamp, nonce, hashlib.sha256(body).hexdigest()))


def sign(secret: str, *, method: str, path_with_query: str, timestamp: str, nonce: str, body: bytes) -> str:
    """What a client sends as ``X-Agent-Signature`` (lower-case hex)."""
    message = string_to_sign(
        method=method, path_with_query=path_with_query, timestamp=timestamp, nonce=nonce, body=body
    )
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
