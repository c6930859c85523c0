"""``agentflow db upgrade|current``: Alembic migrations of the AgentFlow database."""
from __future__ import annotations

import argparse

from ..config import load_server_config
from ..db.engine import current_revision, upgrade


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("db", help="database migrations")
    dbsub = parser.add_subparsers(dest="db_command", metavar="ACTION")
    dbsub.required = True
    for name, helptext in (("upgrade", "migrate the database to the latest schema"),
                           ("current", "print the schema revision of the database")):
        p = dbsub.add_parser(name, help=helptext)
        p.add_argument("--config", help="server config file (for its database_url / data_dir)")
        p.add_argument("--database-url", help="database URL (default: AGENTFLOW_DATABASE_URL or the data dir's sqlite)")
        p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    url = args.database_url or load_server_config(args.config).effective_database_url
    if args.db_command == "upgrade":
        cfg = load_server_config(args.config)
        upgrade(url, lock_dir=cfg.data_dir)
        print(f"database at revision {current_revision(url)}")
    else:
        print(current_revision(url) or "(empty database)")
    return 0
