"""rollout_runs/synthesis_runs heartbeat_at, pid, host: a run whose process is gone shows as interrupted

Revision ID: 0006_run_heartbeat
Revises: 0005_request_body_hash
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0006_run_heartbeat"
down_revision: Union[str, None] = "0005_request_body_hash"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_TABLES = ("rollout_runs", "synthesis_runs")


def upgrade() -> None:
    """Add the heartbeat time and the running process's pid and host (null for rows written before)."""
    for table in _TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(), nullable=True))
            batch_op.add_column(sa.Column("pid", sa.Integer(), nullable=True))
            batch_op.add_column(sa.Column("host", sa.String(length=255), nullable=True))


def downgrade() -> None:
    """Drop the heartbeat columns."""
    for table in _TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("host")
            batch_op.drop_column("pid")
            batch_op.drop_column("heartbeat_at")
