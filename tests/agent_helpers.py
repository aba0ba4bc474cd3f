"""Shared steps for agent tests: an agent with a funded float and credentials, signed requests."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from airtime.agents import service as agents
from airtime.agents import signing
from airtime.config import Settings


@dataclass(frozen=True)
class AgentKeys:
    code: str
    agent_id: int
    float_account_id: int
    key_id: str
    secret: str


def agent(
    session: Session,
    settings: Settings,
    *,
    code: str = "AG-1",
    float_minor: int = 10_000,
    parent_code: str | None = None,
    **options: Any,
) -> AgentKeys:
    created = agents.create_agent(
        session, code=code, name=f"Agent {code}", currency="GBP", parent_code=parent_code, **options
    )
    if float_minor:
        agents.fund_agent(session, agent=created, amount_minor=float_minor, reference=f"open-{code}")
    key_id, secret = agents.issue_credentials(session, agent=created, settings=settings)
    return AgentKeys(code, created.id, created.float_account_id, key_id, secret)


def signed_headers(
    keys: AgentKeys,
    method: str,
    path_with_query: str,
    body: bytes = b"",
    *,
    timestamp: int | None = None,
    idempotency_key: str | None = None,
) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    nonce = secrets.token_hex(8)
    headers = {
        "X-Agent-Key": keys.key_id,
        "X-Agent-Timestamp": stamp,
        "X-Agent-Nonce": nonce,
        "X-Agent-Signature": signing.sign(
            keys.secret,
            method=method,
            path_with_query=path_with_query,
            timestamp=stamp,
            nonce=nonce,
            body=body,
        ),
    }
    if body:
        headers["Content-Type"] = "application/json"
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    return headers


def call(client, keys: AgentKeys, method: str, path: str, payload: dict | None = None, **header_options):
    """A correctly signed request through the app."""
    body = json.dumps(payload).encode() if payload is not None else b""
    headers = signed_headers(keys, method, path, body, **header_options)
    return client.request(method, path, content=body or None, headers=headers)
