"""the model-call cache (model_cache), cache counts on attempts and messages, tool-result
metadata and replay flags on rollout tool calls

Revision ID: 0012_model_cache
Revises: 0011_synthesis_qa_attempts
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0012_model_cache"
down_revision: Union[str, None] = "0011_synthesis_qa_attempts"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "model_cache",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("base_url", sa.Text(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("run_id", sa.String(length=200), nullable=True),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_model_cache")),
    )
    with op.batch_alter_table("model_cache", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_model_cache_model"), ["model"], unique=False)
        batch_op.create_index(batch_op.f("ix_model_cache_run_id"), ["run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_model_cache_created_at"), ["created_at"], unique=False)
    # attempts made before the cache made no cached calls: 0 hits; their model calls are
    # their turns (each turn is one chat completion)
    with op.batch_alter_table("rollout_attempts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model_calls", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("cache_hits", sa.Integer(), server_default="0", nullable=False))
    op.execute("UPDATE rollout_attempts SET model_calls = turns")
    with op.batch_alter_table("rollout_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cache_hit", sa.Boolean(), nullable=True))
    with op.batch_alter_table("rollout_tool_calls", schema=None) as batch_op:
        batch_op.add_column(sa.Column("result_meta", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("replayed", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("rollout_tool_calls", schema=None) as batch_op:
        batch_op.drop_column("replayed")
        batch_op.drop_column("result_meta")
    with op.batch_alter_table("rollout_messages", schema=None) as batch_op:
        batch_op.drop_column("cache_hit")
    with op.batch_alter_table("rollout_attempts", schema=None) as batch_op:
        batch_op.drop_column("cache_hits")
        batch_op.drop_column("model_calls")
    with op.batch_alter_table("model_cache", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_cache_created_at"))
        batch_op.drop_index(batch_op.f("ix_model_cache_run_id"))
        batch_op.drop_index(batch_op.f("ix_model_cache_model"))
    op.drop_table("model_cache")
