"""Quarantine rows get a content id (a hash of the source's namespace and the row), unique.

A client's retry, a copied file and two concurrent ingests of one file each
quarantined the same bad row again; with the content id as a unique key the
insert skips it, as events are skipped by their id. Rows stored before have
none (NULL, which a unique index allows many times).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("quarantine", sa.Column("content_id", sa.String(32), nullable=True))
    op.create_index("ux_quarantine_content_id", "quarantine", ["content_id"], unique=True)


def downgrade() -> None:
    op.drop_index("ux_quarantine_content_id", table_name="quarantine")
    with op.batch_alter_table("quarantine") as batch:  # SQLite rebuilds the table
        batch.drop_column("content_id")
