"""Schemathesis against our own OpenAPI document: no generated request may cause a 500."""

from __future__ import annotations

import tempfile
from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from airtime.app import create_app
from airtime.config import Settings
from airtime.db.migrate import upgrade
from airtime.db.session import make_engine

_directory = Path(tempfile.mkdtemp(prefix="airtime-fuzz-"))
_url = f"sqlite:///{_directory / 'airtime.db'}"
_engine = make_engine(_url)
upgrade(_engine)
_engine.dispose()
app = create_app(
    Settings(database_url=_url, secret_key="fuzz", outbox_dir=_directory / "outbox", environment="test"),
    run_background_jobs=False,
)
schema = schemathesis.openapi.from_asgi("/openapi.json", app)


def _bearer_token() -> str:
    """A real customer with a line, so authenticated operations are exercised too."""
    from fastapi.testclient import TestClient

    from airtime.db.session import make_session_factory, unit_of_work
    from tests import factories

    engine = make_engine(_url)
    with unit_of_work(make_session_factory(engine)) as session:
        customer = factories.customer(session, app.state.settings, email="fuzz@example.com")
        factories.line(session, app.state.settings, customer_id=customer.id, balance_minor=100)
    engine.dispose()
    with TestClient(app) as client:
        response = client.post(
            "/api/v1/tokens", json={"email": "fuzz@example.com", "password": factories.PASSWORD}
        )
    return response.json()["access_token"]


TOKEN = _bearer_token()


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_causes_a_server_error(case):
    # Cases without an Authorization header of their own get a valid token (until a
    # generated DELETE /tokens/current revokes it; later cases then test the 401 path).
    headers = {} if "Authorization" in (case.headers or {}) else {"Authorization": f"Bearer {TOKEN}"}
    case.call_and_validate(
        headers=headers, checks=[not_a_server_error, content_type_conformance, response_schema_conformance]
    )
