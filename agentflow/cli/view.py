"""``agentflow view``: the read-only web viewer of runs, in its own process (gunicorn).

It opens the database read-only and never migrates it: a database at an older schema
revision is refused with the command that upgrades it.
"""
from __future__ import annotations

import argparse
import ipaddress
import shlex

from . import CommandError, check_port_free

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 18900
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("view", help="browse runs, trajectories and synthesis trees in a web browser (read-only)",
                       description="Serve a read-only web app over the AgentFlow database: runs, trajectories "
                                   "with their audit rows, run comparisons, synthesis trees, tool statistics and "
                                   "a read-only SQL page. It never writes to the database.")
    p.add_argument("--database-url", help="database (default: AGENTFLOW_DATABASE_URL or sqlite in AGENTFLOW_HOME)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"bind address (default {DEFAULT_HOST}; anyone who can reach another address can read "
                        "every run: there is no login)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    p.add_argument("--threads", type=int, default=8, help="request threads (default 8)")
    p.add_argument("--sql-time-limit", type=float, default=5.0, metavar="SECONDS",
                   help="the SQL page stops a query after this long (default 5)")
    p.add_argument("--sql-max-rows", type=int, default=1000, metavar="N",
                   help="the SQL page shows at most this many rows (default 1000)")
    p.set_defaults(func=_view)


def viewer_command(database_url: str, port: int = DEFAULT_PORT) -> str:
    """The shell command that views ``database_url`` (printed by ``agentflow demo``)."""
    port_flag = "" if port == DEFAULT_PORT else f" --port {port}"
    return f"agentflow view --database-url {shlex.quote(database_url)}{port_flag}"


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _view(args: argparse.Namespace) -> int:
    from ..db.engine import DatabaseError
    from ..rollout.runner import database_url
    from ..view.db import make_readonly_engine, schema_status

    if args.sql_time_limit <= 0 or args.sql_max_rows < 1:
        raise CommandError("--sql-time-limit must be above 0 and --sql-max-rows at least 1")
    url = args.database_url or database_url(None)[0]
    check_port_free(args.host, args.port)
    try:
        engine = make_readonly_engine(url)
    except DatabaseError as err:
        raise CommandError(str(err)) from None
    try:
        current, head = schema_status(engine)
    except DatabaseError as err:
        raise CommandError(f"{err} ({_safe(url)})") from None
    finally:
        engine.dispose()
    if current != head:
        raise CommandError(f"the database is at schema revision {current}, this AgentFlow reads {head}: the viewer "
                           f"never migrates; run `agentflow db upgrade --database-url {shlex.quote(url)}` first")
    allowed = None
    if _is_loopback(args.host):
        allowed = [*_LOOPBACK_NAMES, args.host.strip("[]")]
    config = {"DATABASE_URL": url, "ALLOWED_HOSTS": allowed, "SQL_TIME_LIMIT_S": args.sql_time_limit,
              "SQL_MAX_ROWS": args.sql_max_rows}
    print(f"AgentFlow viewer on http://{_url_host(args.host)}:{args.port} (database {_safe(url)}, read-only)",
          flush=True)
    if allowed is None:
        print(f"WARNING: bound to {args.host}: anyone who can reach it can read every run and tool result",
              flush=True)
    from ..view.serve import ViewerApplication

    ViewerApplication(config, {"bind": f"{_url_host(args.host)}:{args.port}", "workers": 1,
                                "threads": max(1, args.threads), "worker_class": "gthread", "timeout": 60,
                                "graceful_timeout": 5, "keepalive": 5, "control_socket_disable": True,
                                "accesslog": None, "errorlog": "-", "loglevel": "warning"}).run()
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _safe(url: str) -> str:
    from ..db.engine import _safe_url

    return _safe_url(url)
