"""agentexec tables: activity, activity log, event archive, projector checkpoints.

Revision ID: agentexec_0001
Branch labels: agentexec
Table names carry AGENTEXEC_TABLE_PREFIX as set when the migration runs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agentexec.runtime import current

revision = "agentexec_0001"
down_revision = None
branch_labels = ("agentexec",)
depends_on = None


def upgrade() -> None:
    p = current().settings.table_prefix
    op.create_table(
        f"{p}activity",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("agent_id", sa.Uuid(), nullable=False),
        sa.Column("agent_type", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("latest_message", sa.Text(), nullable=True),
        sa.Column("latest_percentage", sa.Integer(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("parent_id", sa.Uuid(), nullable=True),
        sa.Column("queue", sa.String(length=255), nullable=True),
        sa.Column("priority", sa.String(length=16), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("last_event_id", sa.String(length=41), nullable=False),
        sa.PrimaryKeyConstraint("id", name=f"pk_{p}activity"),
    )
    for column, unique in (
        ("agent_id", True),
        ("agent_type", False),
        ("created_at", False),
        ("parent_id", False),
        ("status", False),
        ("updated_at", False),
    ):
        op.create_index(f"ix_{p}activity_{column}", f"{p}activity", [column], unique=unique)
    op.create_table(
        f"{p}activity_log",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("activity_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.String(length=41), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("percentage", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=f"pk_{p}activity_log"),
    )
    op.create_index(f"ix_{p}activity_log_activity_id", f"{p}activity_log", ["activity_id"])
    op.create_table(
        f"{p}checkpoints",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("position", sa.String(length=41), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=f"pk_{p}checkpoints"),
    )
    op.create_table(
        f"{p}events",
        sa.Column("stream_ms", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("stream_seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("agent_id", sa.Uuid(), nullable=False),
        sa.Column("task_name", sa.String(length=255), nullable=False),
        sa.Column("ts", sa.DateTime(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("stream_ms", "stream_seq", name=f"pk_{p}events"),
    )
    op.create_index(f"ix_{p}events_agent_id", f"{p}events", ["agent_id"])


def downgrade() -> None:
    p = current().settings.table_prefix
    op.drop_table(f"{p}events")
    op.drop_table(f"{p}checkpoints")
    op.drop_table(f"{p}activity_log")
    op.drop_table(f"{p}activity")
