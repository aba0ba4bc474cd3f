"""Secrets handed to people (session tokens, reset links): random, stored only as hashes."""

from __future__ import annotations

import hashlib
import secrets

TOKEN_BYTES = 32


def new_token() -> str:
    """A URL-safe random secret with 256 bits of entropy."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    """What we store instead of the token: a leaked table reveals no usable secret."""
    return hashlib.sha256(token.encode()).hexdigest()
