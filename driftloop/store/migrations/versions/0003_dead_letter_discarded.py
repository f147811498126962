"""Alert dead letters can be discarded (`driftloop alerts discard`): kept for the record, never re-sent.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("alert_dead_letter", sa.Column("discarded_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("alert_dead_letter") as batch:  # SQLite rebuilds the table
        batch.drop_column("discarded_at")
