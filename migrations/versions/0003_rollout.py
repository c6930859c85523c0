"""rollout tables: runs, task attempts, messages, tool calls

Revision ID: 0003_rollout
Revises: 0002_web_cache
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0003_rollout"
down_revision: Union[str, None] = "0002_web_cache"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """rollout tables: runs, task attempts, messages, tool calls"""


def downgrade() -> None:
    """Undo: rollout tables: runs, task attempts, messages, tool calls"""
