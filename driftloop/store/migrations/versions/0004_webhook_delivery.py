"""Webhook deliveries received: the delivery id is a unique key, claimed in one statement.

Two deliveries of one id that race each other (MLflow retries, a proxy that
duplicates) both try to insert it; exactly one succeeds and starts an
evaluation.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhook_delivery",
        sa.Column("delivery_id", sa.String(128), primary_key=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("webhook_delivery")
