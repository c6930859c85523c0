"""Alembic environment: AgentFlow's models, batch mode for sqlite, one transaction."""
from __future__ import annotations

import os
from pathlib import Path

from alembic import context
from agentflow.db import Base, default_database_url
from agentflow.db.engine import make_engine

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    return os.environ.get("AGENTFLOW_DATABASE_URL") or default_database_url(
        Path(os.environ.get("AGENTFLOW_HOME", ".agentflow"))
    )


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(_url())
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
