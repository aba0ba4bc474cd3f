"""API v1 on both databases: token auth, problem details, refusals that change nothing."""

from __future__ import annotations

from sqlalchemy import select

from airtime.accounts.models import Customer
from airtime.db.session import unit_of_work
from airtime.notifications.models import Notification
from tests import factories
from tests.snapshot import fingerprint

PROBLEM = "application/problem+json"


def token_for(client, email: str, password: str = factories.PASSWORD) -> dict[str, str]:
    response = client.post("/api/v1/tokens", json={"email": email, "password": password})
    assert response.status_code == 201, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def assert_problem(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["type"].endswith("/" + code)
    assert body["title"] and body["detail"]
    return body


def test_openapi_is_published(client):
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    assert "/api/v1/lines/{line_id}/history" in spec["paths"]


def test_register_token_me_and_lines(client, session_factory, settings):
    created = client.post(
        "/api/v1/customers",
        json={"email": "api@example.com", "password": factories.PASSWORD, "language": "zh-CN"},
    )
    assert created.status_code == 201 and created.json()["language"] == "zh_Hans"
    with unit_of_work(session_factory) as session:
        customer_id = session.scalar(select(Customer.id).where(Customer.email == "api@example.com"))
        line = factories.line(session, settings, customer_id=customer_id, balance_minor=500)
    headers = token_for(client, "api@example.com")
    assert client.get("/api/v1/me", headers=headers).json()["email"] == "api@example.com"
    [listed] = client.get("/api/v1/lines", headers=headers).json()
    assert listed["msisdn"] == "+447911123456"
    assert listed["balance"] == {"amount_minor": 500, "currency": "GBP", "formatted": "£5.00"}
    history = client.get(f"/api/v1/lines/{line.id}/history?limit=1", headers=headers).json()
    assert [item["amount"]["amount_minor"] for item in history["items"]] == [500]
    assert history["next_before"] is not None
    assert client.delete("/api/v1/tokens/current", headers=headers).status_code == 204
    assert_problem(client.get("/api/v1/me", headers=headers), 401, "authentication_failed")


def test_requests_without_a_valid_token_are_refused(client):
    assert_problem(client.get("/api/v1/lines"), 401, "authentication_failed")
    assert_problem(
        client.get("/api/v1/lines", headers={"Authorization": "Bearer nope"}), 401, "authentication_failed"
    )


def test_bad_input_gets_a_problem_and_changes_nothing(client, session_factory, settings):
    with unit_of_work(session_factory) as session:
        factories.customer(session, settings, email="ana@example.com")
    headers = token_for(client, "ana@example.com")
    before = fingerprint(session_factory)
    assert_problem(
        client.post("/api/v1/customers", json={"email": "nope", "password": factories.PASSWORD}),
        422,
        "validation_failed",
    )
    assert_problem(
        client.post("/api/v1/customers", json={"email": "x@example.com"}), 422, "validation_failed"
    )
    assert_problem(
        client.post("/api/v1/customers", json={"email": "ana@example.com", "password": factories.PASSWORD}),
        409,
        "conflict",
    )
    assert_problem(
        client.patch("/api/v1/me", json={"language": "klingon"}, headers=headers), 422, "validation_failed"
    )
    assert_problem(
        client.post("/api/v1/tokens", json={"email": "ana@example.com", "password": "wrong"}),
        401,
        "authentication_failed",
    )
    assert_problem(
        client.post("/api/v1/password-resets/forged", json={"password": "long enough pw"}),
        400,
        "reset_link_invalid",
    )
    assert_problem(client.get("/api/v1/lines/999999", headers=headers), 404, "not_found")
    assert_problem(client.get("/api/v1/lines/abc", headers=headers), 422, "validation_failed")
    assert_problem(
        client.post(
            "/api/v1/me/password",
            headers=headers,
            json={"current_password": "wrong", "new_password": "whatever long"},
        ),
        401,
        "authentication_failed",
    )
    assert fingerprint(session_factory) == before


def test_problem_detail_follows_accept_language(client):
    body = assert_problem(
        client.post(
            "/api/v1/customers",
            json={"email": "nope", "password": factories.PASSWORD},
            headers={"Accept-Language": "zh-CN"},
        ),
        422,
        "validation_failed",
    )
    assert body["field"] == "email"


def test_login_rate_limit_answers_429(client, session_factory, settings):
    with unit_of_work(session_factory) as session:
        factories.customer(session, settings, email="ana@example.com")
    for _ in range(settings.login_failures_max):
        client.post("/api/v1/tokens", json={"email": "ana@example.com", "password": "wrong"})
    body = assert_problem(
        client.post("/api/v1/tokens", json={"email": "ana@example.com", "password": factories.PASSWORD}),
        429,
        "rate_limited",
    )
    assert "Try again after" in body["detail"]


def test_password_reset_over_the_api(client, session_factory, settings):
    with unit_of_work(session_factory) as session:
        factories.customer(session, settings, email="ana@example.com")
    assert client.post("/api/v1/password-resets", json={"email": "ana@example.com"}).status_code == 202
    assert client.post("/api/v1/password-resets", json={"email": "ghost@example.com"}).status_code == 202
    with unit_of_work(session_factory) as session:
        body = session.scalars(
            select(Notification.body_text).where(Notification.template == "password_reset")
        ).one()
    token = body.split("/reset-password/")[1].split()[0]
    assert (
        client.post(f"/api/v1/password-resets/{token}", json={"password": "the new password"}).status_code
        == 204
    )
    token_for(client, "ana@example.com", "the new password")
