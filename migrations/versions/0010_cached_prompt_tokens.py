"""cached_prompt_tokens on rollout_attempts and rollout_messages, for the cost of a run

Revision ID: 0010_cached_prompt_tokens
Revises: 0009_rollout_scorings
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0010_cached_prompt_tokens"
down_revision: Union[str, None] = "0009_rollout_scorings"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Add the columns; attempts made before them count no cached tokens (0), messages NULL."""
    with op.batch_alter_table("rollout_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cached_prompt_tokens", sa.Integer(), server_default="0", nullable=False))
    with op.batch_alter_table("rollout_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cached_prompt_tokens", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rollout_messages", schema=None) as batch_op:
        batch_op.drop_column("cached_prompt_tokens")
    with op.batch_alter_table("rollout_attempts", schema=None) as batch_op:
        batch_op.drop_column("cached_prompt_tokens")
