"""index videos by completed_at (queue statistics and the governor's recent videos read what finished lately)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 15:44:57
"""

from __future__ import annotations

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index(op.f("ix_videos_completed_at"), "videos", ["completed_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_videos_completed_at"), table_name="videos")
