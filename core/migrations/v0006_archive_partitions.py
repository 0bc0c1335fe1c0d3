"""agentexec archive partitions: the archived events carry the partition of the log they were
in (`AGENTEXEC_PARTITIONS`), and the partition leads the table's key, (partition, stream_ms,
stream_seq): an entry id is unique within its partition only. The events archived so far are
in partition 0, where one partition keeps every event.

Revision ID: agentexec_0006
Revises: agentexec_0005
Table names carry AGENTEXEC_TABLE_PREFIX as set when the migration runs. PostgreSQL adds the
column at once and builds the new key in one pass over the table; SQLite copies the table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from agentexec.runtime import current

revision = "agentexec_0006"
down_revision = "agentexec_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    p = current().settings.table_prefix
    with op.batch_alter_table(f"{p}events") as batch:
        batch.add_column(
            sa.Column(
                "partition",
                sa.Integer(),
                server_default=sa.text("0"),
                autoincrement=False,
                nullable=False,
            )
        )
        batch.drop_constraint(f"pk_{p}events", type_="primary")
        batch.create_primary_key(f"pk_{p}events", ["partition", "stream_ms", "stream_seq"])


def downgrade() -> None:
    """Back to one partition's key: fails while events of two partitions share an id."""
    p = current().settings.table_prefix
    with op.batch_alter_table(f"{p}events") as batch:
        batch.drop_constraint(f"pk_{p}events", type_="primary")
        batch.create_primary_key(f"pk_{p}events", ["stream_ms", "stream_seq"])
        batch.drop_column("partition")
