"""web cache table (filled in by the web backend work)

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
    """web cache table (filled in by the web backend work)"""


def downgrade() -> None:
    """Undo: web cache table (filled in by the web backend work)"""
