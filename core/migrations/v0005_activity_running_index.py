"""agentexec running-tasks index: `started_at` of the RUNNING activities only, so that the
running-too-long view (`running_longer_than`) counts its tasks from a small index, without
reading their rows.

Revision ID: agentexec_0005
Revises: agentexec_0004
Table names carry AGENTEXEC_TABLE_PREFIX as set when the migration runs. The index holds one
entry per running task; building it reads the table once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agentexec.runtime import current

revision = "agentexec_0005"
down_revision = "agentexec_0004"
branch_labels = None
depends_on = None

_RUNNING = sa.text("status = 'RUNNING'")


def upgrade() -> None:
    p = current().settings.table_prefix
    op.create_index(
        f"ix_{p}activity_running_started",
        f"{p}activity",
        ["started_at"],
        postgresql_where=_RUNNING,
        sqlite_where=_RUNNING,
    )


def downgrade() -> None:
    p = current().settings.table_prefix
    op.drop_index(f"ix_{p}activity_running_started", table_name=f"{p}activity")
