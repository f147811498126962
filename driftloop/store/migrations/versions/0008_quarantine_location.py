"""Quarantine rows say where the row was: its line in the file (a Parquet file's row number), or its SQL key.

`line` is the 1-based line of a JSONL or CSV file where the row starts
(blank lines and a CSV header counted), or the 1-based row number of a
Parquet file; `row_key` is a SQL source's row key as JSON (its primary key
columns, or the watermark where the table has none). Both are NULL where the
source has neither (the HTTP API) and on rows stored before.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("quarantine", sa.Column("line", sa.BigInteger(), nullable=True))
    op.add_column("quarantine", sa.Column("row_key", sa.String(256), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("quarantine") as batch:  # SQLite rebuilds the table
        batch.drop_column("row_key")
        batch.drop_column("line")
