"""Allocated identities: a uid (and gid) per live session that no other live session has.

Allocation is a file created with ``O_EXCL`` in a folder only the server can enter, so
every server process on the node (gunicorn workers, other servers sharing the folder)
agrees without a database round trip; the file names the session holding the uid. A
server that is not root has one uid to give: its own, and there namespaces make the
uid irrelevant (a session sees no other session's files or processes).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import IsolationError

__all__ = ["UID_BASE", "UID_SPAN", "allocate_uid", "release_uid"]

UID_BASE, UID_SPAN = 200_000, 100_000


def _slot(directory: Path, uid: int) -> Path:
    return directory / str(uid)


def allocate_uid(directory: Path, session_id: str) -> int:
    """A uid for ``session_id``, held until :func:`release_uid`.

    Raises:
        IsolationError: every uid of the range is held.
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    start = int.from_bytes(hashlib.sha256(session_id.encode()).digest()[:4], "big") % UID_SPAN
    for step in range(UID_SPAN):
        uid = UID_BASE + (start + step) % UID_SPAN
        try:
            fd = os.open(_slot(directory, uid), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(session_id)
        return uid
    raise IsolationError(f"no free session uid: all {UID_SPAN} are held by live sessions")


def release_uid(directory: Path, uid: int, session_id: str) -> None:
    """Give the uid back, if ``session_id`` still holds it."""
    slot = _slot(directory, int(uid))
    try:
        fd = os.open(slot, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return
    with os.fdopen(fd) as fh:
        holder = fh.read(512)
    if holder == session_id:
        slot.unlink(missing_ok=True)
