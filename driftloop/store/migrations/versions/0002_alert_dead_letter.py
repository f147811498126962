"""Alert dead letters: deliveries that failed after every retry, kept until `driftloop alerts retry`.

Types are spelled out here, as in 0001, so this revision keeps creating the
same table after the models move on.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "alert_dead_letter",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("webhook", sa.String(64), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("delivered_at", TS, nullable=True),
    )
    op.create_index("ix_alert_dead_letter_pending", "alert_dead_letter", ["delivered_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_alert_dead_letter_pending", table_name="alert_dead_letter")
    op.drop_table("alert_dead_letter")
