"""initial schema: tenants, videos, jobs, decisions, samples, settings, events

Revision ID: 0001
Revises:
Create Date: 2026-11-25 15:12:46
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("tick", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("reading", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decisions")),
    )
    op.create_index(op.f("ix_decisions_ts"), "decisions", ["ts"], unique=False)

    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("subject_id", sa.Text(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index(op.f("ix_events_subject_id"), "events", ["subject_id"], unique=False)
    op.create_index(op.f("ix_events_ts"), "events", ["ts"], unique=False)

    op.create_table(
        "samples",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("power_w", sa.Double(), nullable=False),
        sa.Column("power_cap_w", sa.Double(), nullable=False),
        sa.Column("allocation", sa.JSON(), nullable=False),
        sa.Column("queue_depth", sa.Integer(), nullable=False),
        sa.Column("gate", sa.Text(), nullable=False),
        sa.Column("extra", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_samples")),
    )
    op.create_index(op.f("ix_samples_ts"), "samples", ["ts"], unique=False)

    op.create_table(
        "settings",
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_settings")),
    )
    op.create_table(
        "tenants",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("admin", sa.Boolean(), nullable=False),
        sa.Column("key_sha256", sa.String(length=64), nullable=False),
        sa.Column("key_prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("revoked_at", sa.Double(), nullable=True),
        sa.Column("videos_per_day", sa.Integer(), nullable=True),
        sa.Column("joules_per_day", sa.Double(), nullable=True),
        sa.Column("requests_per_minute", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tenants")),
        sa.UniqueConstraint("key_sha256", name=op.f("uq_tenants_key_sha256")),
        sa.UniqueConstraint("name", name=op.f("uq_tenants_name")),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("command", sa.JSON(), nullable=False),
        sa.Column("devices_requested", sa.Integer(), nullable=False),
        sa.Column("devices_held", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("finished_at", sa.Double(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("steps_done", sa.BigInteger(), nullable=False),
        sa.Column("throughput", sa.Double(), nullable=True),
        sa.Column("joules", sa.Double(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("tenant_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_jobs_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
    )
    op.create_index(op.f("ix_jobs_status_created_at"), "jobs", ["status", "created_at"], unique=False)

    op.create_table(
        "videos",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("seconds", sa.Integer(), nullable=False),
        sa.Column("size", sa.Text(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("guidance", sa.Double(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("started_at", sa.Double(), nullable=True),
        sa.Column("completed_at", sa.Double(), nullable=True),
        sa.Column("error_code", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.Text(), nullable=True),
        sa.Column("device_id", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", sa.Double(), nullable=True),
        sa.Column("quality_level", sa.Integer(), nullable=True),
        sa.Column("steps_used", sa.Integer(), nullable=True),
        sa.Column("native_size", sa.Text(), nullable=True),
        sa.Column("scaled", sa.Boolean(), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("thumbnail_path", sa.Text(), nullable=True),
        sa.Column("seconds_wall", sa.Double(), nullable=True),
        sa.Column("joules", sa.Double(), nullable=True),
        sa.Column("energy_source", sa.String(length=16), nullable=True),
        sa.Column("cost_usd", sa.Double(), nullable=True),
        sa.Column("co2_g", sa.Double(), nullable=True),
        sa.Column("flops", sa.Double(), nullable=True),
        sa.Column("estimated_device_s", sa.Double(), nullable=True),
        sa.Column("estimated_joules", sa.Double(), nullable=True),
        sa.Column("estimated_flops", sa.Double(), nullable=True),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.Column("deleted_at", sa.Double(), nullable=True),
        sa.CheckConstraint("status IN ('queued', 'in_progress', 'completed', 'failed')", name=op.f("ck_videos_status")),
        sa.CheckConstraint("progress >= 0 AND progress <= 100", name=op.f("ck_videos_progress")),
        sa.ForeignKeyConstraint(["tenant_id"], ["tenants.id"], name=op.f("fk_videos_tenant_id_tenants")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_videos")),
        sa.UniqueConstraint("tenant_id", "idempotency_key", name=op.f("uq_videos_tenant_id_idempotency_key")),
    )
    op.create_index(op.f("ix_videos_status_created_at_id"), "videos", ["status", "created_at", "id"], unique=False)
    op.create_index(
        op.f("ix_videos_tenant_id_created_at_id"), "videos", ["tenant_id", "created_at", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_videos_tenant_id_created_at_id"), table_name="videos")
    op.drop_index(op.f("ix_videos_status_created_at_id"), table_name="videos")

    op.drop_table("videos")
    op.drop_index(op.f("ix_jobs_status_created_at"), table_name="jobs")

    op.drop_table("jobs")
    op.drop_table("tenants")
    op.drop_table("settings")
    op.drop_index(op.f("ix_samples_ts"), table_name="samples")

    op.drop_table("samples")
    op.drop_index(op.f("ix_events_ts"), table_name="events")
    op.drop_index(op.f("ix_events_subject_id"), table_name="events")

    op.drop_table("events")
    op.drop_index(op.f("ix_decisions_ts"), table_name="decisions")

    op.drop_table("decisions")
