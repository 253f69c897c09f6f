"""Alembic, run from code: `upgrade(engine)` brings a database to head, safely when several processes open it at
once (a PostgreSQL advisory lock, or SQLite's write lock via BEGIN IMMEDIATE, held for the whole upgrade; both
backends run DDL inside that transaction, so a killed migrator leaves the schema where it was)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from garrison.store.errors import StoreError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# Any fixed 64-bit number; every garrison process that migrates a PostgreSQL database takes this lock first.
_PG_MIGRATION_LOCK = 0x6761727269736F6E  # "garrison"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic Config for garrison's migrations, built in code (there is no alembic.ini)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # ConfigParser interpolation would choke on a '%' in an escaped password.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revisions() -> set[str]:
    """The revisions a fully migrated database carries."""
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def known_revisions() -> set[str]:
    """Every revision this garrison has a migration for."""
    return {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def _check_not_newer(current: set[str]) -> None:
    unknown = current - known_revisions()
    if unknown:
        raise StoreError(
            f"the database's schema is at revision {', '.join(sorted(unknown))}, which this garrison does not know: "
            "it was written by a newer garrison; upgrade garrison to open it"
        )


def current_revisions(connection: sa.Connection) -> set[str]:
    """The revisions the database carries now (empty for a database garrison never opened)."""
    return set(MigrationContext.configure(connection).get_current_heads())


def upgrade(engine: sa.Engine) -> None:
    """Migrate `engine`'s database to head; a no-op (one cheap read) when it is there already."""
    heads = head_revisions()
    with engine.connect() as connection:
        current = current_revisions(connection)
    if current == heads:
        return
    _check_not_newer(current)
    # `garrison_write` makes the store's SQLite begin-hook open BEGIN IMMEDIATE: the writer lock, before any read.
    with engine.connect().execution_options(garrison_write=True) as connection, connection.begin():
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        current = current_revisions(connection)
        if current == heads:  # another process finished while we waited for the lock
            return
        _check_not_newer(current)
        config = alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
