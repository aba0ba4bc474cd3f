"""Secrets handed to people (session tokens, reset links): random, stored only as hashes;
and sealing keys for values the database must keep but not reveal."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet

TOKEN_BYTES = 32


def new_token() -> str:
    """A URL-safe random secret with 256 bits of entropy."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """What we store instead of the token: a leaked table reveals no usable secret."""
    return hashlib.sha256(token.encode()).hexdigest()


def sealing_key(secret_key: str, purpose: bytes) -> Fernet:
    """A Fernet key of its own for one purpose, derived from the server secret (HMAC-SHA256),
    for values kept in the database that a copy of the database alone must not reveal."""
    derived = hmac.new(secret_key.encode(), purpose, hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(derived))
