"""Alembic environment of the feedback store, driven programmatically.

`Store.migrate()` builds the Alembic config in code (no alembic.ini, so it works
from an installed package and any working directory) and hands its open
connection over in `config.attributes["connection"]`. The version table is
`driftloop_alembic_version`, so the store can share a database with MLflow,
which keeps its own `alembic_version`.

    >>> Store("sqlite:///store.db").migrate()
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from driftloop.store.models import Base

VERSION_TABLE = "driftloop_alembic_version"

config = context.config
target_metadata = Base.metadata


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.begin() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
