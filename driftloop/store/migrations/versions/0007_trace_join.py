"""Ratings join the events of traced LLM calls by trace id: the spans' links and the ratings still waiting.

`trace_link` maps a trace's span (an OTLP span, or an MLflow trace with span
'') to the event it became; `trace_rating` holds ratings posted with a
`trace_id` whose span has not arrived yet. A rating is applied to its event
and deleted as soon as both are there, whichever came first; one left
waiting past `api.traces.join_window_seconds` is moved to the quarantine.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trace_link",
        sa.Column("trace_id", sa.String(64), primary_key=True),
        sa.Column("span_id", sa.String(16), primary_key=True),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "trace_rating",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("trace_id", sa.String(64), nullable=False),
        sa.Column("span_id", sa.String(16), nullable=False),
        sa.Column("rating", sa.Float, nullable=True),
        sa.Column("rating_raw", sa.String(64), nullable=True),
        sa.Column("thumbs_up", sa.Boolean, nullable=True),
        sa.Column("correction", sa.Text, nullable=True),
        sa.Column("source", sa.String(1024), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_trace_rating_trace_id", "trace_rating", ["trace_id"])
    op.create_index("ix_trace_rating_received_at", "trace_rating", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_trace_rating_received_at", table_name="trace_rating")
    op.drop_index("ix_trace_rating_trace_id", table_name="trace_rating")
    op.drop_table("trace_rating")
    op.drop_table("trace_link")
