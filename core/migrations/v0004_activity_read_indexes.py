"""agentexec activity read indexes and counts: one index per list segment and filter, in
`(created_at, id)` order, so that lists, failure views, children and statistics read a range
of an index instead of scanning and sorting the table; and the `activity_counts` table (how
many activities each task name has in each status), filled from the rows present, so that a
list's total needs no count over the table.

Revision ID: agentexec_0004
Revises: agentexec_0003
Table names carry AGENTEXEC_TABLE_PREFIX as set when the migration runs. The single-column
indexes these composite ones begin with are dropped. Building the indexes blocks writes to
the table for a few seconds per million rows.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agentexec.runtime import current

revision = "agentexec_0004"
down_revision = "agentexec_0003"
branch_labels = None
depends_on = None

_ACTIVE = sa.text("status IN ('QUEUED', 'RUNNING')")

_REPLACED = (
    # (new index, its columns, the single-column index it replaces)
    ("activity_created", ("created_at", "id"), "created_at"),
    ("activity_status_created", ("status", "created_at", "id"), "status"),
    ("activity_type_created", ("agent_type", "created_at", "id"), "agent_type"),
    ("activity_parent_created", ("parent_id", "created_at", "id"), "parent_id"),
)


def upgrade() -> None:
    p = current().settings.table_prefix
    table = f"{p}activity"
    op.create_index(
        f"ix_{p}activity_active",
        table,
        ["created_at", "id"],
        postgresql_where=_ACTIVE,
        sqlite_where=_ACTIVE,
    )
    for name, columns, old in _REPLACED:
        op.create_index(f"ix_{p}{name}", table, list(columns))
        op.drop_index(f"ix_{p}activity_{old}", table_name=table)
    op.create_index(f"ix_{p}activity_log_activity", f"{p}activity_log", ["activity_id", "id"])
    op.drop_index(f"ix_{p}activity_log_activity_id", table_name=f"{p}activity_log")
    op.create_table(
        f"{p}activity_counts",
        sa.Column("agent_type", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("agent_type", "status", name=f"pk_{p}activity_counts"),
    )
    rows = sa.table(f"{p}activity", sa.column("agent_type"), sa.column("status"))
    counts = sa.table(
        f"{p}activity_counts", sa.column("agent_type"), sa.column("status"), sa.column("count")
    )
    by_kind = sa.select(rows.c.agent_type, rows.c.status, sa.func.count()).group_by(
        rows.c.agent_type, rows.c.status
    )
    op.execute(counts.insert().from_select(["agent_type", "status", "count"], by_kind))


def downgrade() -> None:
    p = current().settings.table_prefix
    table = f"{p}activity"
    op.drop_table(f"{p}activity_counts")
    op.create_index(f"ix_{p}activity_log_activity_id", f"{p}activity_log", ["activity_id"])
    op.drop_index(f"ix_{p}activity_log_activity", table_name=f"{p}activity_log")
    for name, _, old in reversed(_REPLACED):
        op.create_index(f"ix_{p}activity_{old}", table, [old])
        op.drop_index(f"ix_{p}{name}", table_name=table)
    op.drop_index(f"ix_{p}activity_active", table_name=table)
