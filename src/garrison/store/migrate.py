"""Alembic, run from code: `upgrade(engine)` brings a database to head, safely when several processes open it at
once (a PostgreSQL advisory lock, or SQLite's write lock via BEGIN IMMEDIATE, held for the whole upgrade; both
backends run DDL inside that transaction, so a killed migrator leaves the schema where it was)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from garrison.store.errors import StoreError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# The head of migrations/versions, so that opening an up-to-date database (every open but the first after an
# upgrade) is one SELECT and does not import Alembic, which stays in memory in every process that opens the store
# (~10 MB, with Mako: the API server, each worker). tests/store/test_migrate.py checks it against Alembic's own view;
# a new migration must update it.
HEAD_REVISIONS = frozenset({"0002"})

# Any fixed 64-bit number; every garrison process that migrates a PostgreSQL database takes this lock first.
_PG_MIGRATION_LOCK = 0x6761727269736F6E  # "garrison"


def alembic_config(url: str | None = None) -> Config:
    """An Alembic Config for garrison's migrations, built in code (there is no alembic.ini)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        # ConfigParser interpolation would choke on a '%' in an escaped password.
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revisions() -> set[str]:
    """The revisions a fully migrated database carries."""
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def known_revisions() -> set[str]:
    """Every revision this garrison has a migration for."""
    from alembic.script import ScriptDirectory

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
    from alembic.runtime.migration import MigrationContext

    return set(MigrationContext.configure(connection).get_current_heads())


def _stored_revisions(engine: sa.Engine) -> set[str] | None:
    """The alembic_version rows, read with plain SQL; None when there is no such table (a new database)."""
    try:
        with engine.connect() as connection:
            return set(connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars())
    except sa.exc.ProgrammingError:  # PostgreSQL: undefined table
        return None
    except sa.exc.OperationalError as error:  # SQLite says "no such table"; anything else (unreachable) is raised
        if "no such table" in str(error.orig):
            return None
        raise


def upgrade(engine: sa.Engine) -> None:
    """Migrate `engine`'s database to head; a no-op (one cheap read) when it is there already."""
    if _stored_revisions(engine) == HEAD_REVISIONS:
        return
    from alembic import command

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
