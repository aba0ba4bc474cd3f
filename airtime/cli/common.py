"""What every command shares: output, one-line errors, a unit of work on the configured database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console
from sqlalchemy.orm import Session, sessionmaker

from airtime.config import get_settings
from airtime.db.session import engine_from_settings, make_session_factory, unit_of_work
from airtime.errors import AppError

console = Console(soft_wrap=True)
errors = Console(stderr=True, soft_wrap=True)


def fail(message: str) -> NoReturn:
    """One readable line on stderr and exit code 2: the command changed nothing."""
    errors.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code=2)


@contextmanager
def session_factory() -> Iterator[sessionmaker[Session]]:
    """A session factory on the configured database; expected failures become one line."""
    engine = engine_from_settings(get_settings())
    try:
        yield make_session_factory(engine)
    except AppError as error:
        fail(error.detail)
    finally:
        engine.dispose()


@contextmanager
def database_session() -> Iterator[Session]:
    """One unit of work for a command: committed if it succeeds, nothing kept if it fails."""
    with session_factory() as factory, unit_of_work(factory) as session:
        yield session
