"""agentexec activity timing: queued and due times, worker, retries, queue wait and run
durations (totals), and the per-attempt history.

Revision ID: agentexec_0002
Revises: agentexec_0001
Table names carry AGENTEXEC_TABLE_PREFIX as set when the migration runs. Rows projected
before this revision keep NULL timing until the read model is rebuilt from the archive
(`agentexec projector --rebuild`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agentexec.runtime import current

revision = "agentexec_0002"
down_revision = "agentexec_0001"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("retries", sa.Integer(), False),
    ("worker", sa.String(length=255), True),
    ("queue_wait_seconds", sa.Float(), True),
    ("run_seconds", sa.Float(), True),
    ("attempt_history", sa.JSON(), True),
    ("queued_at", sa.DateTime(), True),
    ("due_at", sa.DateTime(), True),
)


def upgrade() -> None:
    table = f"{current().settings.table_prefix}activity"
    with op.batch_alter_table(table) as batch:
        for name, type_, nullable in _COLUMNS:
            default = None if nullable else sa.text("0")
            batch.add_column(sa.Column(name, type_, nullable=nullable, server_default=default))


def downgrade() -> None:
    table = f"{current().settings.table_prefix}activity"
    with op.batch_alter_table(table) as batch:
        for name, _, _ in reversed(_COLUMNS):
            batch.drop_column(name)
