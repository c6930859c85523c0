"""requests.body_sha256: a reused X-Request-ID with another body is refused, not replayed

Revision ID: 0005_request_body_hash
Revises: 0004_synthesis
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = "0005_request_body_hash"
down_revision: Union[str, None] = "0004_synthesis"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Add the sha256 of the request body (null for rows written before)."""
    with op.batch_alter_table("requests") as batch_op:
        batch_op.add_column(sa.Column("body_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Drop the body hash."""
    with op.batch_alter_table("requests") as batch_op:
        batch_op.drop_column("body_sha256")
