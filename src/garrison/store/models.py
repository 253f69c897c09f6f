"""The store's tables (SQLAlchemy Core metadata). Alembic migrations in `migrations/versions/` create exactly these;
`tests/store/test_migrations.py` checks that the migrated schema and this metadata never drift apart.

Times are unix seconds in double precision; free text is `Text` (no length the two backends would enforce
differently); dicts are `JSON` (json on PostgreSQL, text on SQLite).
"""

from __future__ import annotations

import sqlalchemy as sa

# Constraint names are fixed so migrations can refer to them on both backends.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

tenants = sa.Table(
    "tenants",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("admin", sa.Boolean, nullable=False, default=False),
    # sha256 of the API key, hex. Keys are 256-bit random, so an unsalted fast hash is enough: nothing to brute-force.
    sa.Column("key_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("key_prefix", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("revoked_at", sa.Double, nullable=True),
    sa.Column("videos_per_day", sa.Integer, nullable=True),
    sa.Column("joules_per_day", sa.Double, nullable=True),
    sa.Column("requests_per_minute", sa.Integer, nullable=True),
)

videos = sa.Table(
    "videos",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), nullable=False),
    sa.Column("prompt", sa.Text, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("seconds", sa.Integer, nullable=False),
    sa.Column("size", sa.Text, nullable=False),
    sa.Column("steps", sa.Integer, nullable=False),
    sa.Column("guidance", sa.Double, nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("progress", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("started_at", sa.Double, nullable=True),
    sa.Column("completed_at", sa.Double, nullable=True),
    sa.Column("error_code", sa.Text, nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("idempotency_key", sa.String(255), nullable=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("worker_id", sa.Text, nullable=True),
    sa.Column("device_id", sa.Text, nullable=True),
    sa.Column("lease_expires_at", sa.Double, nullable=True),
    sa.Column("quality_level", sa.Integer, nullable=True),
    sa.Column("steps_used", sa.Integer, nullable=True),
    sa.Column("native_size", sa.Text, nullable=True),
    sa.Column("scaled", sa.Boolean, nullable=True),
    sa.Column("path", sa.Text, nullable=True),
    sa.Column("thumbnail_path", sa.Text, nullable=True),
    sa.Column("seconds_wall", sa.Double, nullable=True),
    sa.Column("joules", sa.Double, nullable=True),
    sa.Column("energy_source", sa.String(16), nullable=True),
    sa.Column("cost_usd", sa.Double, nullable=True),
    sa.Column("co2_g", sa.Double, nullable=True),
    sa.Column("flops", sa.Double, nullable=True),
    sa.Column("estimated_device_s", sa.Double, nullable=True),
    sa.Column("estimated_joules", sa.Double, nullable=True),
    sa.Column("estimated_flops", sa.Double, nullable=True),
    sa.Column("policy", sa.JSON, nullable=False),
    sa.Column("provenance", sa.JSON, nullable=False),
    sa.Column("deleted_at", sa.Double, nullable=True),
    # One row per (tenant, key): this constraint, not a read-then-write, is what makes retries race-safe.
    sa.UniqueConstraint("tenant_id", "idempotency_key"),
    sa.CheckConstraint("status IN ('queued', 'in_progress', 'completed', 'failed')", name="status"),
    sa.CheckConstraint("progress >= 0 AND progress <= 100", name="progress"),
    # Workers take the oldest queued video: (status, created_at, id) serves that scan.
    sa.Index(None, "status", "created_at", "id"),
    # Listing and usage are per tenant in creation order.
    sa.Index(None, "tenant_id", "created_at", "id"),
    # What finished lately (queue statistics, the governor's service times) without scanning every video.
    sa.Index(None, "completed_at"),
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("command", sa.JSON, nullable=False),
    sa.Column("devices_requested", sa.Integer, nullable=False),
    sa.Column("devices_held", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("started_at", sa.Double, nullable=True),
    sa.Column("finished_at", sa.Double, nullable=True),
    sa.Column("pid", sa.Integer, nullable=True),
    sa.Column("steps_done", sa.BigInteger, nullable=False, default=0),
    sa.Column("throughput", sa.Double, nullable=True),
    sa.Column("joules", sa.Double, nullable=False, default=0.0),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), nullable=True),
    sa.Index(None, "status", "created_at"),
)

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Double, nullable=False),
    sa.Column("tick", sa.BigInteger, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("target", sa.Text, nullable=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("reading", sa.JSON, nullable=False),
    sa.Index(None, "ts"),
)

samples = sa.Table(
    "samples",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Double, nullable=False),
    sa.Column("power_w", sa.Double, nullable=False),
    sa.Column("power_cap_w", sa.Double, nullable=False),
    sa.Column("allocation", sa.JSON, nullable=False),
    sa.Column("queue_depth", sa.Integer, nullable=False),
    sa.Column("gate", sa.Text, nullable=False),
    sa.Column("extra", sa.JSON, nullable=False),
    sa.Index(None, "ts"),
)

settings = sa.Table(
    "settings",
    metadata,
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("value", sa.JSON, nullable=True),
    sa.Column("updated_at", sa.Double, nullable=False),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Double, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("subject_id", sa.Text, nullable=True),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Index(None, "ts"),
    sa.Index(None, "subject_id"),
)
