"""Least privilege, table-driven over the whole app: every staff route (found by walking
``app.routes``) refuses each role it is not for, and a customer's session or API token
never reaches any of them."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from airtime.accounts import service as accounts
from airtime.api.problems import PROBLEM_MEDIA_TYPE
from airtime.db.session import unit_of_work
from airtime.web.context import SESSION_COOKIE
from airtime.web.permissions import ALL_STAFF_ROLES, StaffRole, route_access, staff_routes
from tests import factories, staff_helpers, voucher_helpers

# Paths that belong to staff: every route under them must be guarded, except the doors in.
STAFF_PREFIXES = ("/admin", "/care", "/outlet", "/agent", "/staff", "/api/v1/care", "/api/v1/staff")
PUBLIC_STAFF_PATHS = {
    "/admin/login",
    "/care/login",
    "/outlet/login",
    "/outlet/logout",
    "/agent/login",
    "/agent/logout",
    "/staff/logout",
    "/staff/two-factor",
    "/staff/two-factor/enrol",
}
PATH_PARAMETER = re.compile(r"\{[^}]+\}")


def _calls(client) -> list[tuple[str, str, str, frozenset[str]]]:
    found = []
    for route in staff_routes(client.app):
        assert route.roles is not None
        for method in sorted(route.methods - {"HEAD"}):
            found.append((method, PATH_PARAMETER.sub("1", route.path), route.path, route.roles))
    return found


def _request(client, method: str, url: str, token: str):
    if method == "GET":
        return client.get(url, follow_redirects=False)
    return client.request(method, url, data={"csrf_token": token}, follow_redirects=False)


def _refused(response, url: str, expected_status: int) -> None:
    assert response.status_code == expected_status, (url, response.status_code, response.text[:300])
    if url.startswith("/api/"):
        assert response.headers["content-type"].startswith(PROBLEM_MEDIA_TYPE)


def test_every_route_under_a_staff_path_is_guarded(client):
    unguarded = [
        route.path
        for route in route_access(client.app)
        if route.roles is None
        and route.path.startswith(STAFF_PREFIXES)
        and route.path not in PUBLIC_STAFF_PATHS
    ]
    assert unguarded == []
    assert len(staff_routes(client.app)) >= 7


def test_each_role_is_refused_where_it_does_not_belong(client, session_factory, settings):
    with unit_of_work(session_factory) as session:
        shop = voucher_helpers.outlet(session, float_minor=0)
        staff_ids = {
            role: staff_helpers.staff_user(
                session,
                email=f"{role}@example.com",
                role=role,
                outlet_id=shop.id if role == "outlet" else None,
            ).id
            for role in ALL_STAFF_ROLES
        }
    token = staff_helpers.csrf_token(client)
    calls = _calls(client)
    checked = 0
    for role in ALL_STAFF_ROLES:
        client.cookies.clear()
        token = staff_helpers.csrf_token(client)
        staff_helpers.open_staff_session(client, session_factory, settings, staff_ids[role])
        for method, url, _path, roles in calls:
            response = _request(client, method, url, token)
            if role in roles:
                if method == "GET":
                    assert response.status_code not in (401, 403), (role, url, response.text[:300])
                continue
            _refused(response, url, 403)
            checked += 1
    assert checked > 0


def test_a_customer_session_or_token_never_reaches_a_staff_route(client, session_factory, settings):
    with unit_of_work(session_factory) as session:
        customer = factories.customer(session, settings, email="ana@example.com")
        web = accounts.open_session(session, kind="web", lifetime=timedelta(hours=1), customer_id=customer.id)
        api = accounts.open_session(session, kind="api", lifetime=timedelta(hours=1), customer_id=customer.id)
    token = staff_helpers.csrf_token(client)
    client.cookies.set(SESSION_COOKIE, staff_helpers.sign(settings, SESSION_COOKIE, web))
    client.headers["Authorization"] = f"Bearer {api}"
    for method, url, _path, _roles in _calls(client):
        response = _request(client, method, url, token)
        if url.startswith("/api/"):
            _refused(response, url, 401)
        else:
            assert response.status_code == 303, (url, response.status_code)
            assert response.headers["location"].endswith("/login"), url


def test_the_guard_only_takes_known_roles():
    with pytest.raises(ValueError):
        StaffRole("superuser")
    with pytest.raises(ValueError):
        StaffRole()
