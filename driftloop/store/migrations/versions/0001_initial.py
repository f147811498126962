"""Initial schema: feedback, quarantine, checkpoints, loop state, eval items, sample results.

The types are spelled out here rather than imported from `models.py`, so this
revision keeps creating the same schema after the models move on.

Revision ID: 0001
Revises:
Create Date: 2026-11-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
SOURCE_LEN = 1024


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("ts", TS, nullable=False),
        sa.Column("model_version", sa.String(128), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("rating", sa.Float(), nullable=True),
        sa.Column("rating_raw", sa.String(64), nullable=True),
        sa.Column("thumbs_up", sa.Boolean(), nullable=True),
        sa.Column("correction", sa.Text(), nullable=True),
        sa.Column("segment", sa.JSON(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("tokens_in", sa.Integer(), nullable=True),
        sa.Column("tokens_out", sa.Integer(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(SOURCE_LEN), nullable=False),
        sa.Column("ingested_at", TS, nullable=False),
    )
    op.create_index("ix_feedback_ts", "feedback", ["ts"])

    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("source", sa.String(SOURCE_LEN), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("field", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )

    op.create_table(
        "ingest_checkpoint",
        sa.Column("source_key", sa.String(SOURCE_LEN), primary_key=True),
        sa.Column("position", sa.String(256), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )

    op.create_table(
        "loop_state",
        sa.Column("project", sa.String(128), primary_key=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("since", TS, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("lease_owner", sa.String(256), nullable=True),
        sa.Column("lease_expires", TS, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
    )

    op.create_table(
        "loop_transition",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("project", sa.String(128), nullable=False),
        sa.Column("from_state", sa.String(32), nullable=False),
        sa.Column("to_state", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("owner", sa.String(256), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
    )
    op.create_index("ix_loop_transition_project_id", "loop_transition", ["project", "id"])

    op.create_table(
        "eval_item",
        sa.Column("item_id", sa.String(64), primary_key=True),
        sa.Column("prompt_key", sa.String(64), nullable=False),
        sa.Column("split", sa.String(16), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("answer", sa.Text(), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("segment", sa.JSON(), nullable=False),
        sa.Column("source_event_id", sa.String(64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_eval_item_prompt_key", "eval_item", ["prompt_key"])

    op.create_table(
        "sample_result",
        sa.Column("cache_key", sa.String(128), primary_key=True),
        sa.Column("item_id", sa.String(255), primary_key=True),
        sa.Column("task", sa.String(255), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("outcome", sa.Float(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "sample_result",
        "eval_item",
        "loop_transition",
        "loop_state",
        "ingest_checkpoint",
        "quarantine",
        "feedback",
    ):
        op.drop_table(table)
