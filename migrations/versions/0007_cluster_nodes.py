"""nodes table; sessions/tool_calls/requests.node_id: a cluster of sandbox nodes on one database

Revision ID: 0007_cluster_nodes
Revises: 0006_run_heartbeat
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0007_cluster_nodes"
down_revision: Union[str, None] = "0006_run_heartbeat"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create ``nodes`` and record the node of each session, audited call and request claim
    (null for rows written before: they belong to the single node of that time)."""
    op.create_table(
        "nodes",
        sa.Column("node_id", sa.String(length=200), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("incarnation", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=False),
        sa.Column("lost_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("node_id"),
    )
    with op.batch_alter_table("sessions") as batch_op:
        batch_op.add_column(sa.Column("node_id", sa.String(length=200), nullable=True))
        batch_op.create_index("ix_sessions_node_id", ["node_id"], unique=False)
    for table in ("tool_calls", "requests"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column("node_id", sa.String(length=200), nullable=True))


def downgrade() -> None:
    """Drop the node columns and table."""
    for table in ("requests", "tool_calls"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("node_id")
    with op.batch_alter_table("sessions") as batch_op:
        batch_op.drop_index("ix_sessions_node_id")
        batch_op.drop_column("node_id")
    op.drop_table("nodes")
