"""web cache table: answers of the web backend keyed by provider and request

Revision ID: 0002_web_cache
Revises: 0001_core
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0002_web_cache"
down_revision: Union[str, None] = "0001_core"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Create ``web_cache`` (see ``agentflow/db/web_cache.py``)."""
    op.create_table(
        "web_cache",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_web_cache")),
    )
    with op.batch_alter_table("web_cache", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_web_cache_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_web_cache_provider"), ["provider"], unique=False)


def downgrade() -> None:
    """Drop ``web_cache``."""
    with op.batch_alter_table("web_cache", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_web_cache_provider"))
        batch_op.drop_index(batch_op.f("ix_web_cache_created_at"))
    op.drop_table("web_cache")
