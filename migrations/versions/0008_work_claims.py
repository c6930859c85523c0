"""work_claims: the items of a rollout or synthesis run, claimed with leases by the processes that join it

Revision ID: 0008_work_claims
Revises: 0007_cluster_nodes
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0008_work_claims"
down_revision: Union[str, None] = "0007_cluster_nodes"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create ``work_claims``. Runs made before it get their rows when they are next
    opened (seeded from their attempts or seed statuses)."""
    op.create_table(
        "work_claims",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("item", sa.String(length=200), nullable=False),
        sa.Column("sample", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(), nullable=True),
        sa.Column("claims", sa.Integer(), nullable=False),
        sa.Column("results", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_work_claims")),
        sa.UniqueConstraint("kind", "run_id", "item", "sample", name="uq_work_claims_item"),
    )
    op.create_index("ix_work_claims_run_status", "work_claims", ["kind", "run_id", "status", "position"],
                    unique=False)


def downgrade() -> None:
    """Drop ``work_claims``."""
    op.drop_index("ix_work_claims_run_status", table_name="work_claims")
    op.drop_table("work_claims")
