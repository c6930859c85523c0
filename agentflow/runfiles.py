"""What rollout and synthesis runs share: run fingerprints, finding data files, and
writing output files so that a crash never leaves half of one."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable

from .config import REPO_DIR

__all__ = ["fingerprint", "find_data_file", "write_lines"]


def fingerprint(identity: dict) -> str:
    """sha256 of a run identity (canonical JSON), from a config or from a stored run."""
    text = json.dumps(identity, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def find_data_file(path: str, config_source: str | Path | None = None) -> Path:
    """Look a relative path up in the current directory, then beside the config file,
    then in the AgentFlow source tree (where the shipped seeds and benchmarks live).
    Returns the first candidate when none exists, for the caller's error message."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    candidates = [Path.cwd() / p]
    if config_source:
        candidates.append(Path(config_source).resolve().parent / p)
    candidates.append(REPO_DIR / p)
    for cand in candidates:
        if cand.exists():
            return cand
    return candidates[0]


def write_lines(path: Path, lines: Iterable[str]) -> None:
    """Write lines to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line)
            fh.write("\n")
    tmp.replace(path)
