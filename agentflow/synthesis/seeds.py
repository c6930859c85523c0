"""Seeds: the starting points of synthesis.

A seed is ``{"content": str, "kwargs": {...}}``: ``content`` is shown to the model as the
topic to explore, ``kwargs`` are merged into every tool call whose schema accepts them
(``seed_path`` for documents and data folders, ``db_id`` for text2sql) and hidden from
the model. Files are JSONL (one seed per line, as in AgentFlow's ``seeds/*/seeds.jsonl``)
or a JSON list; a bare string is a seed with no kwargs.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

from ..config import ConfigError

__all__ = ["Seed", "SeedsError", "load_seeds", "seeds_checksum"]

_SEED_KEYS = {"content", "kwargs", "id", "metadata"}


class SeedsError(ConfigError):
    """A seeds file or list is unusable; the message names the file and line (or index)."""


@dataclasses.dataclass(frozen=True)
class Seed:
    """One seed."""

    content: str
    kwargs: dict = dataclasses.field(default_factory=dict)
    metadata: dict = dataclasses.field(default_factory=dict)
    """Other fields of the seed's line (``id``, ``metadata``), kept as provenance."""

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"content": self.content, "kwargs": dict(self.kwargs)}
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out


def load_seeds(seeds_or_path: str | os.PathLike | Iterable[str | dict] | None) -> list[Seed]:
    """Load seeds from a file, a list of strings or a list of dicts.

    Args:
        seeds_or_path: A JSONL or JSON file, or a list whose items are strings (the
            content) or ``{"content", "kwargs"?}`` dicts.

    Returns:
        The seeds, in order.

    Raises:
        SeedsError: no seeds; a line that is not JSON or not an object; a seed without a
            non-empty ``content`` string; ``kwargs`` that is not an object. The message
            names the file and line (``seeds.jsonl line 3: ...``) or the list index.

    Usage::

        seeds = load_seeds("seeds/rag/seeds.jsonl")
        seeds = load_seeds(["Python's heapq module", {"content": "x", "kwargs": {"db_id": "retail"}}])
    """
    if seeds_or_path is None:
        raise SeedsError("no seeds given: pass a seeds file or a list of seeds (or set 'seeds_file')")
    if isinstance(seeds_or_path, (str, os.PathLike)):
        return _load_file(Path(seeds_or_path))
    if isinstance(seeds_or_path, dict):
        raise SeedsError("seeds must be a list of strings or {content, kwargs} objects, not one object")
    items = list(seeds_or_path)
    if not items:
        raise SeedsError("the seed list is empty")
    return [_to_seed(item, f"seed [{i}]") for i, item in enumerate(items)]


def _load_file(path: Path) -> list[Seed]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SeedsError(f"seeds file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SeedsError(f"cannot read seeds file {path}: {err}") from err
    if not text.strip():
        raise SeedsError(f"seeds file {path} is empty: write one JSON object per line, "
                         f'e.g. {{"content": "a topic", "kwargs": {{}}}}')
    if path.suffix.lower() == ".json" or text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            if not text.lstrip().startswith("["):
                return _load_lines(path, text)
            raise SeedsError(f"{path} line {err.lineno}: invalid JSON ({err.msg}, column {err.colno})") from None
        if isinstance(data, list):
            if not data:
                raise SeedsError(f"seeds file {path} holds an empty list")
            return [_to_seed(item, f"{path} item {i}") for i, item in enumerate(data)]
        return [_to_seed(data, f"{path}")]
    return _load_lines(path, text)


def _load_lines(path: Path, text: str) -> list[Seed]:
    seeds = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as err:
            raise SeedsError(f"{path} line {number}: not valid JSON ({err.msg} at column {err.colno}): "
                             f"{line.strip()[:80]!r}") from None
        seeds.append(_to_seed(item, f"{path} line {number}"))
    return seeds


def _to_seed(item: Any, where: str) -> Seed:
    if isinstance(item, str):
        if not item.strip():
            raise SeedsError(f"{where}: the seed is an empty string")
        return Seed(content=item)
    if not isinstance(item, dict):
        raise SeedsError(f"{where}: a seed must be a JSON object with 'content' (or a string), "
                         f"got {type(item).__name__}")
    if "content" not in item:
        keys = ", ".join(sorted(item)) or "none"
        raise SeedsError(f"{where}: the seed has no 'content' (its keys: {keys})")
    content = item["content"]
    if not isinstance(content, str) or not content.strip():
        raise SeedsError(f"{where}: 'content' must be a non-empty string, got {content!r}")
    kwargs = item.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise SeedsError(f"{where}: 'kwargs' must be an object, got {type(kwargs).__name__}")
    metadata = {k: v for k, v in item.items() if k not in ("content", "kwargs")}
    return Seed(content=content, kwargs=dict(kwargs), metadata=metadata)


def seeds_checksum(seeds: list[Seed]) -> str:
    """sha256 of the seeds (content, kwargs, order): part of the run fingerprint."""
    text = json.dumps([[s.content, s.kwargs] for s in seeds], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
