"""Shared fixtures: every database test runs on SQLite and on PostgreSQL.

PostgreSQL: a throwaway database per test run (per xdist worker) on
``AIRTIME_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``),
migrated once and emptied after each test. Outside CI a missing server skips those tests
with the reason; with ``CI=true`` it fails them, so CI can never pass without PostgreSQL.
SQLite: one migrated template file, copied for each test.
"""

from __future__ import annotations

import os

# Cheap argon2 for the suite (the production default costs ~0.2 s per hash on purpose).
os.environ.setdefault("AIRTIME_PASSWORD_HASH_TIME_COST", "1")
os.environ.setdefault("AIRTIME_PASSWORD_HASH_MEMORY_KIB", "1024")
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from airtime.app import create_app
from airtime.config import Settings
from airtime.db.migrate import upgrade
from airtime.db.models import metadata
from airtime.db.session import make_engine, make_session_factory, unit_of_work
from airtime.ledger.service import forget_cached_accounts

POSTGRES_ADMIN_URL = os.environ.get(
    "AIRTIME_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
).replace("postgresql://", "postgresql+psycopg://")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _postgres_unavailable_reason() -> str | None:
    try:
        engine = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {type(exc).__name__}"


@pytest.fixture(scope="session")
def postgres_url(worker_id: str) -> Iterator[str]:
    """URL of a migrated throwaway PostgreSQL database for this test run."""
    reason = _postgres_unavailable_reason()
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    name = f"airtime_test_{worker_id}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url, pool_size=30)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "airtime.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


def _truncate_all(engine: Engine) -> None:
    tables = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    # Ids start again from 1: what the process kept about the old rows no longer holds.
    forget_cached_accounts()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A migrated, empty database URL; the test runs once per database."""
    if request.param == "sqlite":
        path = tmp_path / "airtime.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    engine: Engine = request.getfixturevalue("postgres_engine")
    yield request.getfixturevalue("postgres_url")
    _truncate_all(engine)


@pytest.fixture
def engine(request: pytest.FixtureRequest, database_url: str) -> Iterator[Engine]:
    if database_url.startswith("sqlite"):
        created = make_engine(database_url)
        yield created
        created.dispose()
    else:
        yield request.getfixturevalue("postgres_engine")


@pytest.fixture
def session_factory(engine: Engine) -> sessionmaker[Session]:
    return make_session_factory(engine)


@pytest.fixture
def uow(session_factory: sessionmaker[Session]) -> Callable[[], AbstractContextManager[Session]]:
    """``with uow() as session:`` opens one committed unit of work."""
    return lambda: unit_of_work(session_factory)


@pytest.fixture
def pg_session_factory(postgres_engine: Engine) -> Iterator[sessionmaker[Session]]:
    """PostgreSQL only, for concurrency tests with real parallel connections."""
    yield make_session_factory(postgres_engine)
    _truncate_all(postgres_engine)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        secret_key="test-secret-key-not-for-production",
        base_url="http://testserver",
        outbox_dir=tmp_path / "outbox",
        environment="test",
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """The whole app over HTTP, on the test's database; the outbox is sent by the test."""
    app = create_app(settings, run_background_jobs=False)
    with TestClient(app) as test_client:
        yield test_client
