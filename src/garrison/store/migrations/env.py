"""Alembic environment for garrison's store.

garrison runs migrations itself (`garrison.store.migrate.upgrade`, called by `open_store`), passing a connection
that already holds the migration lock, in `config.attributes["connection"]`. A developer writing a new migration
builds the same Config in code and autogenerates against a scratch database:

    from alembic import command
    from garrison.store.migrate import alembic_config
    command.revision(alembic_config("sqlite:////tmp/scratch.db"), autogenerate=True, message="...")

(upgrade the scratch database to head first).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from garrison.store.models import metadata

config = context.config


def _run(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place; batch mode copies the table, so later migrations work on both.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("garrison's migrations run online only (they need the connection to take the migration lock)")

_connection = config.attributes.get("connection")
if _connection is not None:
    _run(_connection)
else:
    _engine = sa.create_engine(config.get_main_option("sqlalchemy.url"), poolclass=sa.pool.NullPool)
    with _engine.begin() as _conn:
        _run(_conn)
    _engine.dispose()
