"""Event ids are unique within their source's id namespace: the feedback key becomes (id_namespace, event_id).

An explicit `event_id` used to be unique across every source, so an HTTP
client could store a forged `order-42` before a file export's real one, which
then counted as a duplicate. Each event now records its source's id namespace
(`files:<glob>`, `sql:<name>`, `api.id_namespace`, ...), and the same id from two
namespaces is two events. Content ids already hash the namespace, so they
keep their values.

Rows stored before this revision get the namespace '' (which source wrote
them is not recorded). The store treats their ids as taken in every
namespace, as they were, so no upgrade stores an old event a second time.
SQLite rebuilds the table to change its key.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import warnings

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SOURCE_LEN = 1024


def upgrade() -> None:
    column = sa.Column("id_namespace", sa.String(SOURCE_LEN), nullable=False, server_default="")
    if op.get_bind().dialect.name == "postgresql":
        op.add_column("feedback", column)
        op.drop_constraint("feedback_pkey", "feedback", type_="primary")
        op.create_primary_key("pk_feedback", "feedback", ["id_namespace", "event_id"])
        return
    with warnings.catch_warnings(), op.batch_alter_table("feedback", recreate="always") as batch:
        # The reflected event_id still says primary_key; the new key replaces it, as the warning says.
        warnings.filterwarnings("ignore", "Table '_alembic_tmp_feedback' specifies columns", sa.exc.SAWarning)
        batch.add_column(column)
        batch.create_primary_key("pk_feedback", ["id_namespace", "event_id"])


def downgrade() -> None:
    # Refused where one id is stored in two namespaces (the old key cannot hold both).
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint("pk_feedback", "feedback", type_="primary")
        op.create_primary_key("feedback_pkey", "feedback", ["event_id"])
        op.drop_column("feedback", "id_namespace")
        return
    with op.batch_alter_table("feedback", recreate="always") as batch:
        batch.create_primary_key("pk_feedback", ["event_id"])
        batch.drop_column("id_namespace")
