"""The schema comes only from Alembic: upgrade on an empty database matches the models,
and every revision downgrades."""
from __future__ import annotations

import subprocess
import sys

from alembic import command
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from agentflow.db.engine import alembic_config, upgrade
from tests.support.server import REPO


def test_upgrade_head_matches_models(tmp_path):
    url = f"sqlite:///{tmp_path / 'a.db'}"
    upgrade(url)
    command.check(alembic_config(url))  # raises when models and migrations differ
    tables = set(inspect(create_engine(url)).get_table_names())
    assert {"sessions", "tool_calls", "requests", "warmup_state"} <= tables


def test_downgrade_to_base_and_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'b.db'}"
    cfg = alembic_config(url)
    upgrade(url)
    command.downgrade(cfg, "base")
    assert set(inspect(create_engine(url)).get_table_names()) <= {"alembic_version"}
    upgrade(url)
    assert {"sessions", "tool_calls", "requests"} <= set(inspect(create_engine(url)).get_table_names())


def test_a_database_at_head_is_only_read_and_one_behind_is_migrated(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    upgrade(url)
    cfg = alembic_config(url)
    head = ScriptDirectory.from_config(cfg).get_current_head()
    command.downgrade(cfg, "-1")
    upgrade(url)  # one revision behind: migrated
    with create_engine(url).connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head

    def no_migration(*args, **kwargs):
        raise AssertionError("a database at head was migrated again")

    monkeypatch.setattr(command, "upgrade", no_migration)
    upgrade(url)  # at head: one read of the version table, no Alembic run


def test_cli_db_upgrade(tmp_path):
    out = subprocess.run([sys.executable, "-m", "agentflow.cli", "db", "upgrade",
                          "--database-url", f"sqlite:///{tmp_path / 'c.db'}"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "database at revision" in out.stdout
