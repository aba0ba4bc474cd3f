"""Browser fixtures: one live server with demo data, one headless Chromium, a phone-sized page per test.

The server runs the real app under uvicorn in a background thread, on a fresh SQLite file
migrated and seeded with the demo data, with ``base_url`` set to its real address so the
links in emails (password reset) lead back to it. Chromium is Debian's, never a
Playwright download: ``AIRTIME_CHROMIUM``, else ``chromium`` on the PATH, else
``/usr/bin/chromium``. Without it the tests are skipped with the reason, except with
``CI=true``, where they fail so CI cannot pass without running them.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, Page, sync_playwright

from airtime.app import create_app
from airtime.config import Settings
from airtime.db.migrate import upgrade
from airtime.db.session import make_engine, make_session_factory, unit_of_work
from airtime.demo import seed

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE_VIEWPORT = {"width": 375, "height": 740}
SERVER_START_SECONDS_MAX = 15.0
SERVER_STOP_SECONDS_MAX = 10.0
# Short enough that a broken page fails in seconds, long enough for argon2 on a slow runner.
ACTION_TIMEOUT_MILLISECONDS = 10_000


@dataclass(frozen=True)
class LiveServer:
    """The running app: where it listens and the settings it was built with."""

    base_url: str
    settings: Settings


def _listening_socket() -> socket.socket:
    """A socket already bound to a free port, handed to uvicorn so no other process can take it."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    return listener


def _wait_until_healthy(base_url: str, thread: threading.Thread) -> None:
    deadline = time.monotonic() + SERVER_START_SECONDS_MAX
    last_problem = "no answer yet"
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("the live server thread stopped while starting; see the log above")
        try:
            response = httpx.get(f"{base_url}/healthz", timeout=1.0)
            if response.status_code == 200:
                return
            last_problem = f"/healthz answered {response.status_code}: {response.text[:200]}"
        except httpx.HTTPError as error:
            last_problem = f"{type(error).__name__}: {error}"
        time.sleep(0.05)
    raise RuntimeError(f"live server not healthy after {SERVER_START_SECONDS_MAX} s ({last_problem})")


@contextmanager
def serving_demo_app(data_dir: Path) -> Iterator[LiveServer]:
    """The app on a free local port, on a fresh migrated SQLite file in ``data_dir`` with the demo data."""
    listener = _listening_socket()
    host, port = listener.getsockname()
    base_url = f"http://{host}:{port}"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]  # a developer's .env must not change the test app
        database_url=f"sqlite:///{data_dir / 'airtime.db'}",
        base_url=base_url,
        outbox_dir=data_dir / "outbox",
        secret_key="browser-tests-secret-key-not-for-production",
        environment="test",
        email_provider="outbox",
        default_language="en",
    )
    engine = make_engine(settings.database_url)
    upgrade(engine)
    with unit_of_work(make_session_factory(engine)) as session:
        seed(session, settings)
    engine.dispose()

    app = create_app(settings, run_background_jobs=True)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="live-server")
    thread.start()
    try:
        _wait_until_healthy(base_url, thread)
        yield LiveServer(base_url=base_url, settings=settings)
    finally:
        server.should_exit = True
        thread.join(timeout=SERVER_STOP_SECONDS_MAX)
        listener.close()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The app with the demo data, shared by the tests of the run (a module may override it
    with its own, module-scoped, when its tests change what others check)."""
    with serving_demo_app(tmp_path_factory.mktemp("live_server")) as server:
        yield server


def chromium_path() -> str | None:
    """Debian's Chromium (or the one named by ``AIRTIME_CHROMIUM``) if it is there."""
    candidate = os.environ.get("AIRTIME_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    path = Path(candidate)
    return str(path) if path.is_file() and os.access(path, os.X_OK) else None


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for the whole run; each test gets its own context."""
    executable = chromium_path()
    if executable is None:
        reason = (
            "Chromium not found (set AIRTIME_CHROMIUM, or install Debian's chromium at /usr/bin/chromium)"
        )
        if IN_CI:
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, live_server: LiveServer) -> Iterator[Page]:
    """A fresh phone-sized page (no cookies) in English, opening relative URLs on the live server."""
    context = browser.new_context(viewport=PHONE_VIEWPORT, locale="en-US", base_url=live_server.base_url)
    context.set_default_timeout(ACTION_TIMEOUT_MILLISECONDS)
    opened = context.new_page()
    yield opened
    context.close()
