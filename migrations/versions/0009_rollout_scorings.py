"""rollout_scorings and rollout_attempt_scores: versioned rescorings of a run's stored predictions

Revision ID: 0009_rollout_scorings
Revises: 0008_work_claims
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0009_rollout_scorings"
down_revision: Union[str, None] = "0008_work_claims"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create the two tables. Existing runs keep their attempts' own scores and have no
    rescoring until ``agentflow runs rescore`` makes one."""
    op.create_table(
        "rollout_scorings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=200), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("judge_model", sa.String(length=200), nullable=True),
        sa.Column("judge_base_url", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["rollout_runs.id"], name=op.f("fk_rollout_scorings_run_id_rollout_runs"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout_scorings")),
    )
    with op.batch_alter_table("rollout_scorings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rollout_scorings_run_id"), ["run_id"], unique=False)
    op.create_table(
        "rollout_attempt_scores",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("scoring_id", sa.Integer(), nullable=False),
        sa.Column("attempt_id", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("scored", sa.Boolean(), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["attempt_id"], ["rollout_attempts.id"],
                                name=op.f("fk_rollout_attempt_scores_attempt_id_rollout_attempts"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["scoring_id"], ["rollout_scorings.id"],
                                name=op.f("fk_rollout_attempt_scores_scoring_id_rollout_scorings"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollout_attempt_scores")),
        sa.UniqueConstraint("scoring_id", "attempt_id", name="uq_rollout_attempt_scores_key"),
    )
    with op.batch_alter_table("rollout_attempt_scores", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rollout_attempt_scores_attempt_id"), ["attempt_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_rollout_attempt_scores_scoring_id"), ["scoring_id"], unique=False)


def downgrade() -> None:
    """Drop both tables (the rescorings are lost; the attempts' own scores stay)."""
    with op.batch_alter_table("rollout_attempt_scores", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rollout_attempt_scores_scoring_id"))
        batch_op.drop_index(batch_op.f("ix_rollout_attempt_scores_attempt_id"))
    op.drop_table("rollout_attempt_scores")
    with op.batch_alter_table("rollout_scorings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rollout_scorings_run_id"))
    op.drop_table("rollout_scorings")
