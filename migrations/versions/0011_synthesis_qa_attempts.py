"""synthesis_qa_attempts: which rollout attempts answered a synthesized QA pair (its pass@k)

Revision ID: 0011_synthesis_qa_attempts
Revises: 0010_cached_prompt_tokens
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0011_synthesis_qa_attempts"
down_revision: Union[str, None] = "0010_cached_prompt_tokens"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create the link table. Rollouts made before it have no links (their task lines had
    no ``synthesis`` field anyway)."""
    op.create_table(
        "synthesis_qa_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("qa_id", sa.Integer(), nullable=False),
        sa.Column("rollout_run_id", sa.String(length=200), nullable=False),
        sa.Column("attempt_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["qa_id"], ["synthesis_qa.id"],
                                name=op.f("fk_synthesis_qa_attempts_qa_id_synthesis_qa"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["rollout_run_id"], ["rollout_runs.id"],
                                name=op.f("fk_synthesis_qa_attempts_rollout_run_id_rollout_runs"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["attempt_id"], ["rollout_attempts.id"],
                                name=op.f("fk_synthesis_qa_attempts_attempt_id_rollout_attempts"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_synthesis_qa_attempts")),
        sa.UniqueConstraint("attempt_id", name="uq_synthesis_qa_attempts_attempt"),
    )
    with op.batch_alter_table("synthesis_qa_attempts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_synthesis_qa_attempts_qa_id"), ["qa_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_synthesis_qa_attempts_rollout_run_id"), ["rollout_run_id"], unique=False)


def downgrade() -> None:
    """Drop the links (the QA pairs and the attempts stay)."""
    with op.batch_alter_table("synthesis_qa_attempts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_synthesis_qa_attempts_rollout_run_id"))
        batch_op.drop_index(batch_op.f("ix_synthesis_qa_attempts_qa_id"))
    op.drop_table("synthesis_qa_attempts")
