"""synthesis tables: runs, seeds, nodes, paths, QA candidates

Revision ID: 0004_synthesis
Revises: 0003_rollout
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0004_synthesis"
down_revision: Union[str, None] = "0003_rollout"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """synthesis tables: runs, seeds, nodes, paths, QA candidates"""


def downgrade() -> None:
    """Undo: synthesis tables: runs, seeds, nodes, paths, QA candidates"""
