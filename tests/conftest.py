"""Shared fixtures. Tests run on the CPU with the checkpoint shipped inside the package, each test with its own
GARRISON_HOME (keys, registry, audit log, cached CPU peak) and none of the machine's GARRISON_* settings."""

from __future__ import annotations

import json
import os

import pytest
import torch

from garrison.hardware.cpu import cpu_capability, cpu_model_name

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture
def skip_without_shared():
    """Skip a test that reads shared/ when a checkout has none beside it; in CI shared/ is always there, so fail."""

    def skip(path: object, what: str) -> None:
        if os.environ.get("CI"):
            pytest.fail(f"{what} is missing in CI: {path}")
        pytest.skip(f"{what} not beside this checkout: {path}")

    return skip


@pytest.fixture(scope="session")
def pipeline():
    from garrison.video.pipelines.builtin import BuiltinPipeline

    return BuiltinPipeline.load()


@pytest.fixture(scope="session")
def text_encoder():
    from garrison.video.models.text_encoder import shared_text_encoder

    return shared_text_encoder()


ENV_VARS = (
    "GARRISON_CPU_ACTIVE_W_PER_CORE",
    "GARRISON_CPU_IDLE_W_PER_CORE",
    "GARRISON_METER",
    "GARRISON_TARIFF",
    "GARRISON_USD_PER_KWH",
    "GARRISON_REGION",
    "GARRISON_CO2_G_PER_KWH",
)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "garrison_home"
    monkeypatch.setenv("GARRISON_HOME", str(home))
    return home


@pytest.fixture
def cpu_peak_cache(isolated_home):
    """Write a cpu_peak.json for this machine, as cpu_peak() writes it, so tests need not spend seconds measuring."""

    def write(fp32_flops: float, bf16_flops: float) -> None:
        path = isolated_home / "hardware" / "cpu_peak.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {
            "cpu_model": cpu_model_name(),
            "threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
            "peak_flops_by_dtype": {"fp32": fp32_flops, "bf16": bf16_flops},
            "matrix_n": 1024,
            "measured_at_unix_s": 0.0,
            "loadavg_1m": 0.0,
            "cpu_capability": cpu_capability(),
        }
        path.write_text(json.dumps(entry))

    return write


# ==== store fixtures (owned by garrison.store): `store_url` and `store`, once per backend; reuse them anywhere ====

POSTGRES_URL_ENV = "GARRISON_TEST_POSTGRES_URL"


@pytest.fixture(autouse=True)
def _no_machine_store_url(monkeypatch):
    """No test opens the machine's own database through $GARRISON_DB_URL."""
    monkeypatch.delenv("GARRISON_DB_URL", raising=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    """The URL of an empty database, once per backend: a temp SQLite file, or a fresh schema (dropped afterwards) on
    the PostgreSQL server at $GARRISON_TEST_POSTGRES_URL. Without that variable the PostgreSQL variant skips, and
    fails under CI. Start a server with `export GARRISON_TEST_POSTGRES_URL=$(scripts/postgres start)`."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'garrison.db'}"
        return
    base = os.environ.get(POSTGRES_URL_ENV)
    if not base:
        message = f"{POSTGRES_URL_ENV} is not set; run: export {POSTGRES_URL_ENV}=$(scripts/postgres start)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    import uuid

    import sqlalchemy as sa

    parsed = sa.make_url(base)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = sa.create_engine(parsed, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    # Every connection of this URL (in this process or another) sees only the new schema.
    url = parsed.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        try:
            with admin.begin() as conn:
                conn.exec_driver_sql("SET LOCAL lock_timeout = '30s'")
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        finally:
            admin.dispose()


@pytest.fixture
def store(store_url):
    """An open, migrated garrison.store.Store on an empty database (see `store_url`), closed afterwards."""
    from garrison.store import open_store

    opened = open_store(store_url)
    yield opened
    opened.close()


# ==== end of store fixtures ========================================================================================
