"""``agentflow serve``: the sandbox server under gunicorn."""
from __future__ import annotations

import argparse
import os

from ..config import load_server_config
from ..db import upgrade
from ..runtime.registry import ToolRegistry
from ..tools.base import BackendConfigError, BackendContext
from . import CommandError, check_port_free


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the sandbox server (gunicorn)")
    p.add_argument("--config", default=os.environ.get("AGENTFLOW_CONFIG"),
                   help="server config JSON (default: AGENTFLOW_CONFIG, else built-in defaults)")
    p.add_argument("--host", help="bind address (default 127.0.0.1 or server.host)")
    p.add_argument("--port", type=int, help="port (default 18890 or server.port)")
    p.add_argument("--workers", type=int, help="gunicorn worker processes")
    p.add_argument("--threads", type=int, help="threads per worker")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from ..server.gunicorn_app import AgentFlowApplication, base_settings

    cfg = load_server_config(args.config)
    host, port = args.host or cfg.host, args.port or cfg.port
    check_port_free(host, port)  # before the registry or the migration touch the data dir and database
    # Fail here, with one clear message, rather than in every worker.
    try:
        registry = ToolRegistry(cfg, BackendContext(data_dir=cfg.data_dir, roots=[], project_dir=cfg.project_dir,
                                                    isolation=cfg.isolation, cgroup_parent=cfg.cgroup_parent))
        registry.close()
    except BackendConfigError as err:
        raise CommandError(f"{args.config or 'default config'}: {err}") from None
    try:
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CommandError(f"cannot create the data directory {cfg.data_dir}: {err}") from None
    if not os.access(cfg.data_dir, os.W_OK):
        raise CommandError(f"the data directory {cfg.data_dir} is not writable (set AGENTFLOW_HOME)")
    upgrade(cfg.effective_database_url, lock_dir=cfg.data_dir)
    if args.config:
        os.environ["AGENTFLOW_CONFIG"] = os.path.abspath(args.config)
    config_path = os.path.abspath(args.config) if args.config else None
    settings = base_settings(host, port, args.workers or cfg.workers, args.threads or cfg.threads, config_path)
    print(f"AgentFlow sandbox server on http://{host}:{port} (data: {cfg.data_dir}, "
          f"backends: {', '.join(sorted(cfg.resources or [])) or 'defaults'})", flush=True)
    for name, backend in sorted(registry.backends.items()):
        if backend.unconfinable:
            print(f"WARNING: backend '{name}' is disabled: {backend.unconfinable}", flush=True)
    if cfg.isolation == "none":
        print("WARNING: isolation is \"none\": session code runs unconfined, as this server's user, and can read "
              "the database, other sessions' files and this server's environment", flush=True)
    else:
        print("sessions are confined (bubblewrap namespaces, a uid and cgroup per session, no network by default)",
              flush=True)
    AgentFlowApplication(settings, config_path).run()
    return 0
