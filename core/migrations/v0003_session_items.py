"""agentexec conversation sessions: the session items table (`ax.AgentSession`).

Revision ID: agentexec_0003
Revises: agentexec_0002
Table names carry AGENTEXEC_TABLE_PREFIX as set when the migration runs. The table starts
empty: sessions recorded before this revision appear once the read model is rebuilt from the
archive (`agentexec projector --rebuild`).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agentexec.runtime import current

revision = "agentexec_0003"
down_revision = "agentexec_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    p = current().settings.table_prefix
    op.create_table(
        f"{p}session_items",
        sa.Column("session_id", sa.String(length=255), nullable=False),
        sa.Column("position", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("item", sa.JSON(), nullable=False),
        sa.Column("event_id", sa.String(length=41), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("session_id", "position", name=f"pk_{p}session_items"),
    )


def downgrade() -> None:
    op.drop_table(f"{current().settings.table_prefix}session_items")
