"""Alembic environment: runs against the connection or URL that airtime.db.migrate hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from airtime.db.models import metadata

config = context.config


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # type: ignore[attr-defined]
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as fresh_connection:
        _run(fresh_connection)
    engine.dispose()
