"""The ``agentflow`` command. Each subcommand lives in its own module with
``register(subparsers)``; add new modules to ``_SUBCOMMANDS``."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..version import __version__

_SUBCOMMANDS = [
    "agentflow.cli.serve",
    "agentflow.cli.db",
    "agentflow.cli.bench",
    "agentflow.cli.rag",
    "agentflow.cli.web",
    "agentflow.cli.rollout",
    "agentflow.cli.runs",
    "agentflow.cli.synthesize",
    "agentflow.cli.model",
    "agentflow.cli.demo",
]


class CommandError(Exception):
    """A subcommand failed in a way the user can fix; printed without a traceback."""


def parse_set_options(items: list[str]) -> dict:
    """``--set KEY=VALUE`` options as config overrides (VALUE is JSON when it parses)."""
    import json

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise CommandError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def quiet_http_logs(verbose: bool) -> None:
    """The HTTP clients log every model request at INFO; keep them quiet unless -v."""
    if not verbose:
        for name in ("httpx", "openai", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentflow", description="AgentFlow: agent data synthesis and evaluation")
    parser.add_argument("--version", action="version", version=f"agentflow {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name in _SUBCOMMANDS:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # boundary: known user-facing errors print without a traceback
        from ..config import ConfigError
        from ..db.engine import DatabaseError

        if isinstance(err, (CommandError, ConfigError, DatabaseError)):
            print(f"agentflow: error: {err}", file=sys.stderr)
            return 2
        raise
