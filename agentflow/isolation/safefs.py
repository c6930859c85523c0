"""Opening a client-named file without trusting its path.

:func:`open_within` opens first and checks after: the descriptor's real path (from
``/proc/self/fd``) must lie inside one of the allowed roots and be a regular file. A
check made on the path before the open can be raced (a file swapped for a symlink in
between); a check of what was actually opened cannot. ``O_NONBLOCK`` keeps a FIFO in
place of the file from blocking the server; ``O_NOFOLLOW`` refuses a final symlink.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

__all__ = ["UnsafePath", "open_within"]


class UnsafePath(Exception):
    """The path is not a regular file inside the allowed roots (after the open)."""


def _inside(real: str, roots: list[Path]) -> bool:
    for root in roots:
        base = os.path.realpath(root)
        if real == base or real.startswith(base.rstrip("/") + "/"):
            return True
    return False


def open_within(path: str | os.PathLike, roots: list[Path]) -> BinaryIO:
    """A binary file object for ``path``, which must be a regular file inside ``roots``.

    Raises:
        UnsafePath: a final symlink, a FIFO, device or folder, or a file that turned
            out (once opened) to live outside every root.
        FileNotFoundError: there is no such file.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as err:
        if err.errno == 40:  # ELOOP: the last component is a symlink
            raise UnsafePath(f"'{path}' is a symbolic link") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafePath(f"'{path}' is not a regular file")
        real = os.readlink(f"/proc/self/fd/{fd}")
        if not _inside(real, roots):
            raise UnsafePath(f"'{path}' is outside the allowed directories")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
