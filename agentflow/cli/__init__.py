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
    "agentflow.cli.data",
    "agentflow.cli.db",
    "agentflow.cli.cluster",
    "agentflow.cli.bench",
    "agentflow.cli.rag",
    "agentflow.cli.web",
    "agentflow.cli.rollout",
    "agentflow.cli.runs",
    "agentflow.cli.synthesize",
    "agentflow.cli.model",
    "agentflow.cli.demo",
    "agentflow.cli.view",
    "agentflow.cli.mcp",
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


class CountOrFile(argparse.Action):
    """``--seeds N`` (a count, like the demo's) or ``--seeds FILE`` (the older meaning):
    a number goes to ``count_dest``, anything else to ``dest``."""

    def __init__(self, *args, count_dest: str, **kwargs):
        self.count_dest = count_dest
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if str(values).isdigit():
            if int(values) < 1:
                parser.error(f"{option_string} must be at least 1, got {values}")
            setattr(namespace, self.count_dest, int(values))
        else:
            setattr(namespace, self.dest, values)


def check_port_free(host: str, port: int, what: str = "port") -> None:
    """Bind ``host:port`` for a moment (as gunicorn will, with SO_REUSEADDR) and raise a
    one-line CommandError naming the port and ``--port`` when that fails, so a busy port
    is reported before anything else starts (or touches a database)."""
    import errno
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise CommandError(f"cannot bind {host}:{port}: unknown host {host!r} ({err.strerror}); "
                           "choose another with --host") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise CommandError(f"{what} {port} on {host} is already in use (another server?); "
                                   f"stop it or choose another port with --port") from None
            if err.errno == errno.EACCES:
                raise CommandError(f"{what} {port} on {host} needs privileges to bind; "
                                   f"choose a port above 1023 with --port") from None
            raise CommandError(f"cannot bind {host}:{port}: {err.strerror}; check --host and --port") from None


def quiet_http_logs(verbose: bool) -> None:
    """The HTTP clients log every model request at INFO and alembic every migration step:
    keep them quiet unless -v (:func:`setup_logging` does it for every command)."""
    if not verbose:
        for name in _NOISY:
            logging.getLogger(name).setLevel(logging.WARNING)


_NOISY = ("httpx", "httpcore", "openai", "alembic", "urllib3", "filelock")


class _ProgressSafeHandler(logging.StreamHandler):
    """Writes log lines through tqdm, so a line never lands inside a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm
        except ImportError:  # tqdm is a dependency; without it plain stderr is fine
            return super().emit(record)
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def setup_logging(verbosity: int) -> None:
    """Quiet by default: warnings, plus AgentFlow's own few INFO lines (e.g. "resuming
    run …"); ``-v``: every library's INFO (alembic migrations, HTTP requests) and
    AgentFlow's DEBUG; ``-vv``: DEBUG of everything."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _ProgressSafeHandler):
            root.removeHandler(handler)
    handler = _ProgressSafeHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s" if verbosity
                                           else "%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity == 1 else logging.WARNING)
    logging.getLogger("agentflow").setLevel(logging.DEBUG if verbosity else logging.INFO)
    for name in _NOISY:
        logging.getLogger(name).setLevel(logging.NOTSET if verbosity else logging.WARNING)


class _Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for an unknown subcommand, choice or flag."""

    def error(self, message: str):
        import re

        from ..config import did_you_mean

        m = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if m and "did you mean" not in message:
            choices = re.findall(r"'([^']*)'", m.group(2)) or [c.strip() for c in m.group(2).split(",")]
            message = message.replace(m.group(0), m.group(0) + did_you_mean(m.group(1), choices))
        super().error(message)

    def unknown_flags(self, extras: list[str]):
        from ..config import did_you_mean

        known = [o for o in self._option_string_actions if o.startswith("--")]
        hints = [f"{x}{did_you_mean(x.split('=', 1)[0], known) if x.startswith('-') else ''}" for x in extras]
        self.error(f"unrecognized arguments: {' '.join(hints)}")


def _add_verbose(parser: argparse.ArgumentParser, top: bool) -> None:
    """-v/--verbose on every (sub)command, so ``agentflow runs list -v`` works too."""
    parser.add_argument("-v", "--verbose", action="count", default=0 if top else argparse.SUPPRESS,
                        help="more log lines: -v INFO of every library (alembic, HTTP), -vv DEBUG")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                _add_verbose(child, False)


def _chosen_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The innermost subcommand parser ``args`` came from (for its flags in error messages)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and getattr(args, action.dest, None) in action.choices:
            return _chosen_parser(action.choices[getattr(args, action.dest)], args)
    return parser


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="agentflow", description="AgentFlow: agent data synthesis and evaluation")
    parser.add_argument("--version", action="version", version=f"agentflow {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for module_name in _SUBCOMMANDS:
        importlib.import_module(module_name).register(sub)
    _add_verbose(parser, True)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        _chosen_parser(parser, args).unknown_flags(extras)
    setup_logging(args.verbose)
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
