"""Migrations: to head on an empty database, idempotent on re-open, safe with several processes opening at once,
and the migrated schema is exactly `garrison.store.models` (no drift between the ORM-free metadata and Alembic)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from garrison.store import StoreError, open_store
from garrison.store.migrate import HEAD_REVISIONS, alembic_config, current_revisions, head_revisions
from garrison.store.models import metadata

TABLES = {"tenants", "videos", "jobs", "decisions", "samples", "settings", "events", "alembic_version"}


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def test_open_migrates_an_empty_database_to_head(store_url):
    engine = _engine(store_url)
    with engine.connect() as conn:
        assert current_revisions(conn) == set()
    open_store(store_url).close()
    with engine.connect() as conn:
        assert current_revisions(conn) == head_revisions()
        assert set(sa.inspect(conn).get_table_names()) == TABLES
    engine.dispose()


def test_migrated_schema_matches_the_models(store):
    engine = _engine(store.url)
    with engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    engine.dispose()
    assert diffs == []


def test_reopen_is_idempotent_and_keeps_data(store_url):
    with open_store(store_url) as first:
        tenant, key = first.create_tenant("acme")
        first.set_setting("serving.quality_level", 2)
    for _ in range(2):
        with open_store(store_url) as again:
            assert again.authenticate(key) == tenant
            assert again.get_setting("serving.quality_level") == 2
    engine = _engine(store_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    engine.dispose()


def test_the_recorded_head_is_alembics_head():
    # A new migration must update HEAD_REVISIONS, or every open would run Alembic's full check.
    assert head_revisions() == HEAD_REVISIONS


def test_opening_an_up_to_date_database_does_not_import_alembic(store_url):
    import subprocess
    import sys

    open_store(store_url).close()  # migrated to head
    code = (
        "import sys; from garrison.store import open_store; "
        f"open_store({store_url!r}).close(); print(any(m.split('.')[0] == 'alembic' for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_downgrade_to_base_and_upgrade_again(store_url):
    open_store(store_url).close()
    engine = _engine(store_url)
    for target in ("base", "head"):
        with engine.begin() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            (command.downgrade if target == "base" else command.upgrade)(config, target)
    with engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) == TABLES
    engine.dispose()
    with open_store(store_url) as store:
        assert store.list_tenants() == []


def test_several_processes_open_an_empty_database_at_once(store_url, spawn):
    processes = [spawn("open", store_url) for _ in range(4)]
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert out.strip() == "opened"
    engine = _engine(store_url)
    with engine.connect() as conn:
        assert current_revisions(conn) == head_revisions()
        assert conn.execute(sa.text("SELECT count(*) FROM alembic_version")).scalar() == 1
    engine.dispose()


def test_a_database_from_a_newer_garrison_is_refused(store_url):
    open_store(store_url).close()
    engine = _engine(store_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff_future'"))
    engine.dispose()
    with pytest.raises(StoreError, match="newer garrison"):
        open_store(store_url)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "not a database URL"),
        ("mysql://u@h/db", "unsupported database"),
        ("postgresql+asyncpg://u@h/db", "psycopg 3"),
    ],
)
def test_bad_urls_say_what_to_use(url, message):
    with pytest.raises(StoreError, match=message):
        open_store(url)


def test_unreachable_postgres_is_a_store_error_without_the_password():
    with pytest.raises(StoreError, match="cannot open the store") as caught:
        open_store("postgresql+psycopg://garrison:hunter2@127.0.0.1:1/garrison?connect_timeout=2")
    assert "hunter2" not in str(caught.value)


def test_default_url_is_a_sqlite_file_in_garrison_home(isolated_home, monkeypatch):
    with open_store() as store:
        assert store.dialect == "sqlite"
        store.set_setting("k", "v")
    assert (isolated_home / "garrison.db").is_file()
    monkeypatch.setenv("GARRISON_DB_URL", f"sqlite:///{isolated_home / 'other.db'}")
    with open_store() as store:
        assert store.get_setting("k") is None
    assert (isolated_home / "other.db").is_file()


def test_in_memory_sqlite_works_from_threads():
    from concurrent.futures import ThreadPoolExecutor

    with open_store("sqlite://") as store:
        tenant, _ = store.create_tenant("acme")
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: store.set_setting(f"k{i}", i), range(40)))
        assert [store.get_setting(f"k{i}") for i in range(40)] == list(range(40))
        assert store.get_tenant(tenant.id) == tenant


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path):
    path = tmp_path / "garrison.db"
    path.write_bytes(b"this is not a SQLite database" * 100)
    with pytest.raises(StoreError, match="cannot open the store"):
        open_store(f"sqlite:///{path}")


def test_an_uncreatable_directory_is_a_store_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create the directory"):
        open_store(f"sqlite:///{tmp_path / 'file' / 'sub' / 'garrison.db'}")


def test_upgrade_from_the_first_revision_keeps_the_rows(store_url):
    engine = _engine(store_url)
    with engine.begin() as conn:
        config = alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        conn.execute(
            sa.text(
                "INSERT INTO tenants (id, name, admin, key_sha256, key_prefix, created_at) "
                "VALUES ('ten_old', 'old', false, :digest, 'gk-old00', 1.0)"
            ),
            {"digest": "0" * 64},
        )
    engine.dispose()
    with open_store(store_url) as store:
        assert store.tenant_by_name("old").id == "ten_old"
        engine = _engine(store_url)
        with engine.connect() as conn:
            assert current_revisions(conn) == head_revisions()
            assert "ix_videos_completed_at" in {index["name"] for index in sa.inspect(conn).get_indexes("videos")}
        engine.dispose()
