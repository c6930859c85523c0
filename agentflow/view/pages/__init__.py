"""The viewer's blueprints, one per group of pages, and the query-parameter parsing they
share (a malformed parameter is a :class:`~agentflow.view.errors.BadParameter`, shown
as a 400 page that says what was expected)."""
from __future__ import annotations

from flask import request

from ..errors import BadParameter


def int_arg(name: str, default: int, *, minimum: int = 1, maximum: int | None = None) -> int:
    """An integer query parameter.

    Raises:
        BadParameter: not a whole number, or out of range.
    """
    raw = request.args.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParameter(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
        raise BadParameter(f"{name} must be {bounds}, got {value}")
    return value


def str_arg(name: str, default: str = "", *, max_chars: int = 500) -> str:
    """A text query parameter, stripped.

    Raises:
        BadParameter: longer than ``max_chars``.
    """
    value = request.args.get(name, default).strip()
    if len(value) > max_chars:
        raise BadParameter(f"{name} is {len(value)} characters long; at most {max_chars}")
    return value


def dir_arg() -> bool:
    """``dir=asc`` (False) or ``dir=desc`` (True).

    Raises:
        BadParameter: anything else.
    """
    raw = request.args.get("dir", "asc")
    if raw not in ("asc", "desc"):
        raise BadParameter(f"dir must be asc or desc, got {raw!r}")
    return raw == "desc"


def blueprints():
    from . import rollout, runs, sql, synthesis, tools

    return [runs.bp, rollout.bp, synthesis.bp, tools.bp, sql.bp]
