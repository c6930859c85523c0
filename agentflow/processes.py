"""Which process is which: an owner id that stays true across pid reuse and machines.

An owner is ``node:pid:start``: the node says where pids are comparable (host name,
boot and pid namespace), the start time (clock ticks after boot) tells a reused pid from
the process that wrote the id. Request claims, session starters and the jail ledger all
record owners this way.
"""
from __future__ import annotations

import os
import re
import socket

__all__ = ["NODE", "owner_alive", "owner_id"]


def _read_text(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return "".join(re.findall(r"\d", os.readlink("/proc/self/ns/pid")))
    except OSError:
        return ""


NODE = f"{socket.gethostname()}~{_read_text('/proc/sys/kernel/random/boot_id')[:8]}~{_pid_namespace()}"
"""Where pids are comparable: host name, boot and pid namespace (containers sharing a
host name or a database do not judge each other's pids)."""


def _process_stat(pid: int) -> list[bytes] | None:
    """Fields of /proc/<pid>/stat after the command name (state first)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _process_start(pid: int) -> str:
    fields = _process_stat(pid)
    return fields[19].decode() if fields and len(fields) > 19 else "0"


def owner_id(pid: int | None = None) -> str:
    """``node:pid:start`` of this process (or of ``pid``) — the start time (clock
    ticks after boot) tells a reused pid from the owner."""
    pid = os.getpid() if pid is None else pid
    return f"{NODE}:{pid}:{_process_start(pid)}"


def owner_alive(owner: str) -> bool | None:
    """True/False for an owner on this node; None when it runs elsewhere (unknowable)."""
    try:
        node, pid, start = owner.rsplit(":", 2)
        pid_i = int(pid)
    except ValueError:
        return None  # not written by this version: only the lease can judge it
    if node != NODE:
        return None
    fields = _process_stat(pid_i)
    if fields is None:
        return False
    # a killed worker stays a zombie until gunicorn reaps it: dead all the same
    return fields[0] not in (b"Z", b"X") and len(fields) > 19 and fields[19].decode() == start
